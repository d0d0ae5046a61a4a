"""``podium keys``: create, list and revoke the API keys of the keys file ``podium serve --keys`` reads.

The file stores each key's SHA-256 only (see :mod:`podium.server.auth`); ``create`` prints the key
itself once, on stdout. Writes are atomic (a temporary file, then a rename), keep the file's mode
(0600 for a new file) and are validated before they replace it. A running server picks the change
up on its next request (it re-reads a changed keys file at most once a second) or on SIGHUP.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from ..config import read_text_file
from ..errors import ConfigError, UsageError
from ..paths import podium_home
from ..server.auth import ApiKey, hash_key, new_key, read_keys
from ..suggest import did_you_mean

KEYS_ENV = "PODIUM_KEYS"


def keys_path(given: str | None) -> Path:
    """``--keys``, else ``$PODIUM_KEYS``, else ``PODIUM_HOME/keys.yaml``."""
    return Path(given or os.environ.get(KEYS_ENV) or podium_home() / "keys.yaml").expanduser()


def _raw_entries(path: Path) -> list[dict[str, Any]]:
    """The file's entries as written (validated first); [] when the file does not exist yet."""
    if not path.exists():
        return []
    read_keys(path, str(path))
    data = yaml.safe_load(read_text_file(path, "keys")) or {}
    entries: list[dict[str, Any]] = data.get("keys") or []
    return entries


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace the keys file atomically with ``entries`` (checked as the server will read them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump({"keys": entries}, out, sort_keys=False, default_flow_style=False)
        os.chmod(tmp, mode)
        read_keys(Path(tmp), str(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``2027-01-31`` (that day, 00:00 UTC), an ISO time, or a duration from now: ``30d``, ``12h``, ``90m``."""
    now = now or datetime.now(UTC)
    relative = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative.group(2)]
        return now + timedelta(**{unit: int(relative.group(1))})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--expires '{text}': write a date (2027-01-31), an ISO time, or a duration (30d, 12h)"
        ) from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    if at <= now:
        raise UsageError(f"--expires '{text}' is already past; give a later date")
    return at


def _names(values: tuple[str, ...]) -> list[str] | None:
    """``--models a,b --models c`` as ``[a, b, c]`` (None when not given)."""
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return out or None


def build_entry(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A fresh key and its keys-file entry (only its hash), validated as the server reads it."""
    key = new_key()
    entry: dict[str, Any] = {"name": name, "sha256": hash_key(key)}
    policy = {
        field: names
        for field, flag in (
            ("allowed_models", "models"),
            ("allowed_regions", "regions"),
            ("allowed_providers", "providers"),
        )
        if (names := _names(options[flag])) is not None
    }
    if policy:
        entry["policy"] = policy
    limits = {"requests_per_minute": options["rpm"], "burst": options["burst"], "tokens_per_minute": options["tpm"]}
    if any(v is not None for v in limits.values()):
        entry["rate_limit"] = {k: v for k, v in limits.items() if v is not None}
    if options["budget_usd"] is not None:
        entry["budget"] = {"max_usd": options["budget_usd"], "period": options["period"] or "month"}
    elif options["period"] is not None:
        raise UsageError("--period needs --budget-usd (the spend allowed per period)")
    if options["expires"] is not None:
        at = parse_expiry(options["expires"]).astimezone(UTC)
        entry["expires_at"] = at.isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        ApiKey.model_validate(entry)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise UsageError(f"key '{name}': {'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None
    return key, entry


keys_option = click.option(
    "--keys",
    "keys_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"The keys file (default: ${KEYS_ENV}, else PODIUM_HOME/keys.yaml); serve it with podium serve --keys FILE.",
)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys; a running `podium serve --keys FILE` picks changes up at once.

    \b
    Examples:
      podium keys create alice --budget-usd 20 --period month --rpm 60 --tpm 100000
      podium keys create eu-team --regions eu --expires 2027-01-31
      podium keys list
      podium keys revoke alice
    """


@keys.command()
@click.argument("name")
@keys_option
@click.option(
    "--budget-usd", type=click.FloatRange(min=0, min_open=True), default=None, help="Spend allowed per period."
)
@click.option("--period", type=click.Choice(["hour", "day", "week", "month", "total"]), default=None)
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True), default=None, help="Requests per minute.")
@click.option(
    "--burst", type=click.IntRange(min=1), default=None, help="Requests allowed at once (default: a minute's)."
)
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute (all of the key's runs).")
@click.option("--expires", default=None, metavar="DATE", help="2027-01-31, an ISO time, or 30d / 12h from now.")
@click.option("--models", multiple=True, metavar="A,B", help="Only these models and tiers.")
@click.option("--regions", multiple=True, metavar="A,B", help="Only models in these regions.")
@click.option("--providers", multiple=True, metavar="A,B", help="Only models of these providers.")
def create(name: str, keys_file: str | None, **options: Any) -> None:
    """Add key NAME and print the key (once: only its hash is stored).

    \b
    Examples:
      podium keys create alice                                   # no limits beyond the defaults
      podium keys create team-a --budget-usd 50 --period month --rpm 120 --tpm 200000
      podium keys create eu-app --regions eu --models podium,mistral-eu --expires 90d
    """
    path = keys_path(keys_file)
    entries = _raw_entries(path)
    if any(e.get("name") == name for e in entries):
        raise UsageError(f"{path}: a key named '{name}' exists; revoke it first or choose another name")
    key, entry = build_entry(name, options)
    _write(path, [*entries, entry])
    click.echo(key)
    click.echo(f"created key '{name}' in {path}; it is shown only this once, store it now", err=True)


@keys.command(name="list")
@keys_option
@click.option("--json", "as_json", is_flag=True)
def list_keys(keys_file: str | None, as_json: bool) -> None:
    """The keys with their limits (never a key; hashes are shortened).

    \b
    Examples:
      podium keys list
      podium keys list --json --keys /etc/podium/keys.yaml
    """
    path = keys_path(keys_file)
    if not path.exists():
        raise ConfigError(f"{path}: no keys file yet; create a key with: podium keys create NAME")
    rows = [_row(k) for k in read_keys(path, str(path))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<20} {'HASH':<10} {'EXPIRES':<22} {'BUDGET':<16} {'RPM':>6} {'TPM':>8}  POLICY")
    for r in rows:
        budget = f"${r['budget_usd']}/{r['period']}" if r["budget_usd"] is not None else "-"
        expires = (r["expires_at"] or "-") + (" (expired)" if r["expired"] else "")
        policy = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in r["policy"].items()) or "-"
        tpm = r["tpm"] if r["tpm"] is not None else "-"
        click.echo(f"{r['name']:<20} {r['sha256']:<10} {expires:<22} {budget:<16} {r['rpm']:>6g} {tpm:>8}  {policy}")


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "sha256": key.sha256[:8],
        "expires_at": key.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z") if key.expires_at else None,
        "expired": key.expired(),
        "budget_usd": key.budget.max_usd if key.budget else None,
        "period": key.budget.period if key.budget else None,
        "rpm": key.rate_limit.requests_per_minute,
        "tpm": key.rate_limit.tokens_per_minute,
        "policy": key.policy.describe(),
    }


@keys.command()
@click.argument("name")
@keys_option
def revoke(name: str, keys_file: str | None) -> None:
    """Remove key NAME; a running server refuses it from its next request on.

    \b
    Examples:
      podium keys revoke alice
    """
    path = keys_path(keys_file)
    entries = _raw_entries(path)
    names = [str(e.get("name")) for e in entries]
    if name not in names:
        raise UsageError(f"{path}: no key named '{name}'{did_you_mean(name, names)}; see podium keys list")
    _write(path, [e for e in entries if e.get("name") != name])
    click.echo(f"revoked key '{name}' in {path}")


@keys.command()
@keys_option
def path(keys_file: str | None) -> None:
    """Print the keys file's path (for podium serve --keys).

    \b
    Examples:
      podium serve --keys "$(podium keys path)"
    """
    click.echo(keys_path(keys_file))
