"""Escape attempts against the Python sandbox: each must be contained and reported."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from podium.checks import PythonTestsCheck, SandboxLimits, run_check
from podium.checks.sandbox import UID_BASE, UID_SPAN, _live_uid, run_python

FAST = SandboxLimits(wall_s=5, cpu_s=3, memory_mb=256, max_processes=8, file_size_mb=4, max_output_chars=500)


def _sandbox_procs() -> int:
    """Live (non-zombie) processes running as a sandbox uid (root mode)."""
    return sum(1 for e in os.listdir("/proc") if e.isdigit() and UID_BASE <= (_live_uid(e) or 0) < UID_BASE + UID_SPAN)


async def test_infinite_loop_times_out_and_is_killed() -> None:
    started = time.monotonic()
    result = await run_check(
        PythonTestsCheck(tests=["assert spin() == 1"]), "def spin():\n    while True:\n        pass", limits=FAST
    )
    assert not result.passed and result.contained == "timeout"
    assert "did not finish" in result.detail
    assert time.monotonic() - started < FAST.wall_s + 5


async def test_huge_allocation_hits_the_memory_limit() -> None:
    code = "def grab():\n    return len(bytearray(10 * 1024**3))"
    result = await run_check(PythonTestsCheck(tests=["assert grab() > 0"]), code, limits=FAST)
    assert not result.passed and result.contained == "memory"
    assert "MemoryError" in result.detail


async def test_fork_bomb_is_capped_and_cleaned_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("process counting per sandbox uid needs the root mode")
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _sandbox_procs())

    watcher = threading.Thread(target=watch)
    watcher.start()
    code = "import os\ndef bomb():\n    while True:\n        os.fork()"
    try:
        result = await run_check(PythonTestsCheck(tests=["bomb()"]), code, limits=FAST)
    finally:
        done.set()
        watcher.join()
    assert not result.passed and result.contained in ("process_limit", "timeout")
    # + 1: podium's own cleanup process switches to the sandbox uid to kill(-1) them all, and is counted too
    assert 1 <= peak[0] <= FAST.max_processes + 1
    assert _sandbox_procs() == 0  # nothing left running


async def test_huge_file_write_is_stopped_at_the_size_limit() -> None:
    code = "def write():\n    with open('big', 'wb') as f:\n        for _ in range(10 * 1024):\n            f.write(b'x' * 1024 * 1024)\n    return True"
    result = await run_check(PythonTestsCheck(tests=["assert write()"]), code, limits=FAST)
    assert not result.passed and result.contained == "file_size"


async def test_secret_env_var_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TEST_SECRET", "s3cr3t-value-123")
    code = "import os\ndef leak():\n    print(dict(os.environ))\n    return os.environ.get('PODIUM_TEST_SECRET')"
    result = await run_check(PythonTestsCheck(tests=["assert leak() == 's3cr3t-value-123'"]), code, limits=FAST)
    assert not result.passed
    assert "s3cr3t-value-123" not in result.detail.replace("assert leak() == 's3cr3t-value-123'", "")
    # nor through the parent's /proc entry
    code = "def leak():\n    return open('/proc/%d/environ' % PARENT, 'rb').read()"
    result = await run_check(
        PythonTestsCheck(setup=f"PARENT = {os.getpid()}", tests=["assert b's3cr3t' in leak()"]), code, limits=FAST
    )
    assert not result.passed and "s3cr3t-value-123" not in result.detail


async def test_socket_to_localhost_is_blocked() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[bool] = []

    def accept() -> None:
        server.settimeout(8)
        try:
            server.accept()
            accepted.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    code = f"import socket\ndef call():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return True"
    try:
        result = await run_check(PythonTestsCheck(tests=["assert call()"]), code, limits=FAST)
    finally:
        server.close()
        thread.join()
    assert not result.passed and result.contained == "network_blocked"
    assert not accepted


async def test_output_flood_is_truncated() -> None:
    code = "def shout():\n    print('A' * 100000)\n    return False"
    result = await run_check(PythonTestsCheck(tests=["assert shout()"]), code, limits=FAST)
    assert not result.passed and result.contained == "output_truncated"
    assert len(result.detail) < 4000


async def test_files_outside_the_temp_dir_are_not_writable(tmp_path) -> None:
    target = tmp_path / "pwned"
    if os.geteuid() != 0:
        pytest.skip("only the root mode switches to a throwaway uid")
    code = f"def touch():\n    open({str(target)!r}, 'w').write('x')\n    return True"
    result = await run_check(PythonTestsCheck(tests=["assert touch()"]), code, limits=FAST)
    assert not result.passed and not target.exists()


async def test_writes_to_shared_tmp_dirs_stay_private_and_capped() -> None:
    marker = f"podium-escape-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        f"def spill():\n    open('/tmp/{marker}', 'w').write('x')\n"
        "    n = 0\n    try:\n        while n < 10000:\n            open(f'/dev/shm/f{n}', 'wb').write(b'x' * 1024 * 1024)\n            n += 1\n"
        "    except OSError:\n        pass\n    return n"
    )
    run = await run_python(code, ["print('files', spill())"], limits=FAST)
    assert not os.path.exists(f"/tmp/{marker}")
    if "private-tmp" in run.isolation:
        assert "files" in run.output and int(run.output.split("files")[1].split()[0]) <= FAST.file_size_mb
    assert run.records and all(r["ok"] for r in run.records if r["stage"] == "test")


async def test_isolation_as_root_uses_a_throwaway_uid_and_no_network() -> None:
    run = await run_python("import os\nUID = os.getuid()", ["print('uid', UID)"], limits=FAST)
    if os.geteuid() == 0:
        assert run.isolation.startswith("uid,netns")
        uid = int(run.output.split("uid")[1].split()[0])
        assert UID_BASE <= uid < UID_BASE + UID_SPAN
    else:
        assert "same-uid" in run.isolation


def test_audit_hook_fallback_blocks_sockets_and_programs_without_namespaces() -> None:
    """The last line of defence when no network namespace is available: the harness's audit hook."""
    import ast
    import marshal
    import subprocess
    import sys

    from podium.checks.sandbox import _harness_source

    read_fd, write_fd = os.pipe()
    code = "import socket, subprocess\n"
    tests = [
        "socket.create_connection(('127.0.0.1', 9), timeout=1)",
        "subprocess.run(['true'])",
        "socket.getaddrinfo('localhost', 80)",
        "assert 1 + 1 == 2",
    ]
    payload = marshal.dumps(
        {"nonce": "n", "fd": write_fd, "code": code, "tests": tests, "setup": "", "block_exec": True}
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _harness_source()],
        input=payload,
        pass_fds=(write_fd,),
        capture_output=True,
        timeout=30,
        env={},
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        records = [ast.literal_eval(line) for line in fh.read().splitlines()]
    assert proc.returncode == 0, proc.stderr
    by_index = {r["index"]: r for r in records if r["stage"] == "test"}
    for i in range(3):
        assert not by_index[i]["ok"] and "network_blocked" in by_index[i]["error"], by_index[i]
    assert by_index[3]["ok"]
