"""Errors as the README promises: every config problem, whenever found, is one line and exit 2.

Each test runs the real ``podium`` command as a subprocess and checks the exit code, that stderr
is exactly one line, that it names what is wrong, and that no traceback leaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import POOLS, free_port

SCRIPTED = str(POOLS / "scripted.yaml")
KEY_VARS = ("OPENROUTER_API_KEY", "MISTRAL_API_KEY", "SCW_SECRET_KEY", "PODIUM_TEST_KEY")


def podium(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """Assert exit ``code``, a single stderr line starting with 'error:', holding every needle."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write(tmp_path: Path, text: str | bytes, name: str = "pool.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def test_binary_pool_file_is_rejected_cleanly(tmp_path: Path) -> None:
    head = write(tmp_path, b"PK\x03\x04\x00\x00\x00numpy-zip" * 20, "head.npz")
    one_line_error(podium("ask", "--pool", head, "hi"), head, "binary file", "learned:PATH")


def test_non_utf8_pool_file_is_rejected_cleanly(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: caf\xe9\nmodels:\n  - name: a\n    backend: scripted\n")
    one_line_error(podium("models", "--pool", path), path, "not UTF-8", "line 1")


def test_validation_errors_are_one_line_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name: p\nmodels:\n  - name: a\n    backend: scripted\n    fallback: [a]\n    max_tokens: -1\n"
    )
    line = one_line_error(
        podium("ask", "--pool", path, "hi"),
        path,
        "models.0.fallback",
        "did you mean 'fallbacks'",
        "models.0.max_tokens",
    )
    assert line.count(";") >= 1


def test_missing_gguf_found_at_run_start_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nmodels:\n  - name: tiny\n    backend: local\n    model: /nowhere/model.gguf\n")
    one_line_error(podium("ask", "--pool", path, "hi"), "tiny", "/nowhere/model.gguf", "not found")


def test_missing_api_key_is_caught_before_any_request(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: had a request been sent, the run would fail with exit 1
    path = write(
        tmp_path,
        f"name: keyed\nmodels:\n  - name: remote\n    backend: openai\n    base_url: http://127.0.0.1:{port}/v1\n"
        "    model: m\n    api_key_env: PODIUM_TEST_KEY\n",
    )
    one_line_error(podium("ask", "--pool", path, "hi"), "PODIUM_TEST_KEY", "remote", "export PODIUM_TEST_KEY")


def test_missing_key_of_a_shipped_pool_names_the_variable() -> None:
    one_line_error(podium("ask", "--pool", "openrouter", "hi"), "OPENROUTER_API_KEY")


def test_excluding_the_keyless_models_lets_the_run_go_ahead(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: mixed\nmodels:\n  - name: ok\n    backend: scripted\n    replies: ['42']\n"
        "  - name: remote\n    backend: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: PODIUM_TEST_KEY\n",
    )
    one_line_error(podium("ask", "--pool", path, "hi"), "--exclude remote")
    proc = podium("ask", "--pool", path, "--exclude", "remote", "--coordinator", "fixed", "hi")
    assert proc.returncode == 0 and proc.stdout.startswith("42"), proc.stderr


def test_serve_refuses_to_start_without_the_pool_keys() -> None:
    pytest.importorskip("uvicorn", reason="serve needs the server extra")
    one_line_error(podium("serve", "--pool", "eu", "--port", str(free_port())), "MISTRAL_API_KEY", "SCW_SECRET_KEY")


def test_fixed_coordinator_with_an_unknown_model_is_an_error() -> None:
    one_line_error(
        podium("ask", "--pool", SCRIPTED, "--coordinator", "fixed:gpt-4", "hi"), "gpt-4", "planner, solver, checker"
    )
    one_line_error(podium("ask", "--pool", SCRIPTED, "--coordinator", "fixed:solvr", "hi"), "did you mean 'solver'")
    ok = podium("ask", "--pool", SCRIPTED, "--coordinator", "fixed:solver", "hi")
    assert ok.returncode == 0 and ok.stdout.startswith("391")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["asq", "hi"], "did you mean 'ask'"),
        (["traces", "lss"], "did you mean 'ls'"),
        (["pool", "chek"], "did you mean 'check'"),
        (["ask", "--pool", "embeded", "hi"], "did you mean 'embedded'"),
        (["ask", "--pool", SCRIPTED, "--coordinator", "rulez", "hi"], "did you mean 'rules'"),
        (["ask", "--pool", SCRIPTED, "--coordinator", "learnd:x.npz", "hi"], "did you mean 'learned'"),
    ],
)
def test_did_you_mean(args: list[str], needle: str) -> None:
    one_line_error(podium(*args), needle)


def test_bad_flag_value_is_one_line() -> None:
    one_line_error(podium("ask", "--pool", SCRIPTED, "--max-turns", "0", "hi"), "--max-turns", "podium ask --help")


def test_eval_replay_without_the_train_extra_names_the_install() -> None:
    """The train extra is checked by finding its modules, not importing them (cma alone took 2 s of
    every eval replay's start); a missing one is still one line with the install command."""
    script = (
        "import sys\n"
        "import podium.cli.train as t\n"
        "t.TRAIN_MODULES = ('numpy', 'cma', 'podium_no_such_module')\n"
        "from podium.cli import main\n"
        "try:\n    main(['eval', 'replay', 'example'])\n"
        "finally:\n    print('imported cma:', 'cma' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    one_line_error(proc, "podium_no_such_module is not installed", "pip install 'podium[train]'")
    assert proc.stdout.strip() == "imported cma: False"
