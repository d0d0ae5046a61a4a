"""Help that teaches: examples in every command's help, the environment variables podium reads,
exit codes and statuses, short run ids, and `podium doctor`. All through the real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import POOLS, REPO

SCRIPTED = str(POOLS / "scripted.yaml")
COMMANDS = [
    ["ask"],
    ["models"],
    ["pool"],
    ["pool", "check"],
    ["pool", "status"],
    ["traces"],
    ["traces", "ls"],
    ["traces", "show"],
    ["traces", "stats"],
    ["traces", "export"],
    ["traces", "audit"],
    ["traces", "purge"],
    ["ui"],
    ["train"],
    ["train", "replay"],
    ["eval"],
    ["eval", "replay"],
    ["serve"],
    ["doctor"],
    ["demo"],
    ["bench"],
    ["bench", "run"],
    ["train", "live"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
    ["keys", "path"],
]


def podium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def help_of(*command: str) -> str:
    proc = podium(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_command_is_covered_here() -> None:
    listed = re.findall(r"^  (\w+)\s", help_of().split("Commands:")[1].split("Environment variables")[0], re.M)
    assert sorted(listed) == sorted({c[0] for c in COMMANDS})


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_examples(command: list[str]) -> None:
    text = help_of(*command)
    assert "Examples:" in text and "podium " in text.split("Examples:")[1]


def test_root_help_lists_every_environment_variable_the_code_reads() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "src" / "podium").rglob("*.py"))
    names = set(re.findall(r"\"(PODIUM_[A-Z_]+)\"", source))
    assert {"PODIUM_POOL", "PODIUM_HOME", "PODIUM_TRACES", "PODIUM_DB", "PODIUM_KEYS", "PODIUM_BREAKER_FILE"} <= names
    text = help_of()
    assert all(name in text for name in names), names - {n for n in names if n in text}
    assert "OPENROUTER_API_KEY" in text and "PODIUM_POOL" in help_of("ask")


def test_ask_help_states_statuses_and_exit_codes() -> None:
    text = help_of("ask")
    for word in (
        "accepted",
        "answered",
        "max_turns",
        "budget_exhausted",
        "failed",
        "Exit codes",
        "0  a finished run",
        "2  misuse",
    ):
        assert word in text


def test_serve_help_names_tiers_and_extra() -> None:
    text = help_of("serve")
    assert "podium-ultra" in text and "podium[server]" in text and "MISTRAL_API_KEY" in text


def test_train_help_describes_the_dataset_format() -> None:
    text = help_of("train", "replay")
    for word in ("items.parquet", "outcomes.parquet", "models.json", "item_id", "score", "split", "example"):
        assert word in text


def test_short_run_ids_prefix_and_suffix() -> None:
    ids = [json.loads(podium("ask", "--pool", SCRIPTED, "--json", q).stdout)["trace_id"] for q in ("one?", "two?")]
    for run_id in ids:
        shown = podium("traces", "show", run_id[-6:])
        assert shown.returncode == 0 and shown.stdout.startswith(run_id), shown.stderr
    ambiguous = podium("traces", "show", "run_")
    assert ambiguous.returncode == 2 and "several runs" in ambiguous.stderr
    printed = re.search(
        r"trace (run_\S+) \(podium traces show (\w+)\)", podium("ask", "--pool", SCRIPTED, "three?").stdout
    )
    assert (
        printed
        and printed[1].endswith(printed[2])
        and podium("traces", "show", printed[2]).stdout.startswith(printed[1])
    )


def test_doctor_reports_what_to_fix() -> None:
    good = podium("doctor", "--pool", SCRIPTED)
    assert good.returncode == 0 and "all good" in good.stdout and "extra [train]" in good.stdout, good.stdout
    keyed = podium("doctor", "--pool", "openrouter", "--no-probe", env={"OPENROUTER_API_KEY": ""})
    assert keyed.returncode == 1 and "FAIL" in keyed.stdout and "export OPENROUTER_API_KEY=" in keyed.stdout
    assert "Traceback" not in good.stderr + keyed.stderr
