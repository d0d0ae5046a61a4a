"""``podium keys`` as a user runs it (subprocesses) against a live ``podium serve --keys FILE``: a
created key works at once, a revoked one is refused at once, the file and listings hold no key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from podium_process import PodiumServer

POOL = Path(__file__).parents[1] / "pools" / "server.yaml"


def podium(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PODIUM_HOME": str(home)}
    env.pop("PODIUM_KEYS", None)
    return subprocess.run(
        [sys.executable, "-m", "podium", "keys", *args], env=env, capture_output=True, text=True, timeout=60
    )


def status(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code


def wait_for(url: str, key: str, expected: int, timeout: float = 5.0) -> int:
    deadline, code = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        code = status(url, key)
        if code == expected:
            return code
        time.sleep(0.1)
    return code


def test_keys_create_list_revoke_against_a_live_server(tmp_path: Path) -> None:
    made = podium(tmp_path, "create", "ops")
    assert made.returncode == 0, made.stderr
    ops_key = made.stdout.strip()
    keys_file = Path(podium(tmp_path, "path").stdout.strip())
    assert keys_file == tmp_path / "keys.yaml" and oct(keys_file.stat().st_mode & 0o777) == "0o600"
    with PodiumServer(POOL, tmp_path, args=["--keys", str(keys_file)]) as server:
        assert status(server.url, ops_key) == 200
        made = podium(tmp_path, "create", "alice", "--budget-usd", "5", "--period", "day", "--rpm", "30")
        made2 = podium(tmp_path, "create", "eu", "--regions", "eu", "--tpm", "1000", "--expires", "2099-01-31")
        assert made.returncode == 0 and made2.returncode == 0, made.stderr + made2.stderr
        alice = made.stdout.strip()
        assert alice.startswith("pk-") and "shown only this once" in made.stderr
        assert wait_for(server.url, alice, 200) == 200  # picked up without a restart
        text = keys_file.read_text()
        assert alice not in text and ops_key not in text  # only hashes are stored
        entries = {e["name"]: e for e in yaml.safe_load(text)["keys"]}
        assert entries["alice"]["budget"] == {"max_usd": 5.0, "period": "day"}
        assert entries["alice"]["rate_limit"] == {"requests_per_minute": 30.0}
        assert (
            entries["eu"]["policy"] == {"allowed_regions": ["eu"]}
            and entries["eu"]["expires_at"] == "2099-01-31T00:00:00Z"
        )
        listed = podium(tmp_path, "list")
        assert listed.returncode == 0 and "alice" in listed.stdout and "$5.0/day" in listed.stdout
        assert alice not in listed.stdout and entries["alice"]["sha256"] not in listed.stdout
        revoked = podium(tmp_path, "revoke", "alice")
        assert revoked.returncode == 0, revoked.stderr
        assert wait_for(server.url, alice, 401) == 401
        assert status(server.url, ops_key) == 200
        for name in ("ops", "eu"):
            assert podium(tmp_path, "revoke", name).returncode == 0
        assert wait_for(server.url, ops_key, 401) == 401  # the last key revoked: nobody gets in


@pytest.mark.parametrize(
    "args,message",
    [
        (["revoke", "nobody"], "no key named 'nobody'"),
        (["create", "x", "--period", "day"], "--period needs --budget-usd"),
        (["create", "x", "--expires", "2001-01-01"], "already past"),
        (["create", "x", "--expires", "soon"], "--expires 'soon'"),
        (["create", "x", "--tpm", "0"], "--tpm"),
        (["create", "dup"], "a key named 'dup' exists"),
        (["list", "--keys", "/nonexistent/k.yaml"], "no keys file yet"),
    ],
)
def test_keys_cli_errors_are_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from podium.cli import main

    monkeypatch.setenv("PODIUM_HOME", str(tmp_path))
    monkeypatch.delenv("PODIUM_KEYS", raising=False)
    main(["keys", "create", "dup"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["keys", *args])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_broken_keys_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text("keys:\n  - name: a\n    sha256: nothex\n")
    out = podium(tmp_path, "create", "b")
    assert out.returncode == 2 and "sha256" in out.stderr
    assert "nothex" in (tmp_path / "keys.yaml").read_text()
