"""A subprocess sandbox for untrusted Python: rlimits, a throwaway uid, no network, a temp dir.

As root (the usual container case) each run gets a fresh unused uid (so ``RLIMIT_NPROC`` counts
only this run's processes and every one of them can be killed at the end with ``kill(-1)`` from
that uid), a private network namespace with no interfaces up, and a mount namespace whose /tmp,
/var/tmp and /dev/shm are small private tmpfs mounts (the working directory is one). Without root it falls back to a
user+network namespace when the kernel allows one, and always to an audit hook in the harness that
refuses internet sockets. See docs/checks.md for what this does not protect against.
"""

from __future__ import annotations

import ast
import asyncio
import ctypes
import marshal
import os
import random
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources as pkg_resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
UID_BASE, UID_SPAN = 1_500_000_000, 500_000_000  # far above any real account
MAX_RESULTS_BYTES = 1 << 20


class SandboxLimits(BaseModel):
    """Limits of one sandboxed run. ``python`` overrides the interpreter (default: this one when the
    sandbox user may execute it, else ``python3`` from /usr/local/bin, /usr/bin or /bin)."""

    model_config = ConfigDict(extra="forbid")
    wall_s: float = Field(default=10.0, gt=0)
    cpu_s: int = Field(default=10, ge=1)
    memory_mb: int = Field(default=512, ge=64)
    max_processes: int = Field(default=16, ge=1)
    file_size_mb: int = Field(default=16, ge=1)
    max_output_chars: int = Field(default=4000, ge=100)
    python: str | None = None


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here safely (the message says what to change)."""


@dataclass
class SandboxRun:
    """What came back from the sandbox. ``records`` are the harness's authenticated result lines."""

    records: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    output_truncated: bool = False
    returncode: int | None = None
    timed_out: bool = False
    isolation: str = ""


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if _libc().unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")


@lru_cache(maxsize=4)
def _netns_flags() -> int | None:
    """The unshare flags that give a child a private network namespace here, or None."""
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    return flags if _probe(lambda: _unshare(flags)) else None


@lru_cache(maxsize=1)
def _private_tmp_works() -> bool:
    """Whether (as root) a child can get private size-capped tmpfs mounts on /tmp, /var/tmp, /dev/shm."""

    def private_tmp() -> None:
        _unshare(CLONE_NEWNS)
        _private_tmp(1, None)

    return os.geteuid() == 0 and _probe(private_tmp)


def _probe(preexec: Callable[[], None]) -> bool:
    try:
        subprocess.run(["true"], preexec_fn=preexec, check=True, env={"PATH": "/usr/bin:/bin"}, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _mount(source: bytes, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _libc().mount(source, target, fstype, flags, data) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target.decode()} failed")


def _private_tmp(size_mb: int, uid: int | None) -> None:
    """In a fresh mount namespace: cover the world-writable dirs with small tmpfs mounts and move
    into a new one, so writes go to capped memory that vanishes with the namespace."""
    _mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    for target in TMP_DIRS:
        if os.path.isdir(target):
            _mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=1777".encode())
    os.mkdir("/tmp/work", 0o700)
    if uid is not None:
        os.chown("/tmp/work", uid, uid)
    os.chdir("/tmp/work")


def _world_usable(path: str, mode: int = stat.S_IXOTH) -> bool:
    """Whether any user may use ``path`` (``mode`` for others, every parent directory searchable)."""
    p = Path(path)
    try:
        if not p.stat().st_mode & mode:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in p.parents)
    except OSError:
        return False


@lru_cache(maxsize=4)
def _interpreter(switch_uid: bool) -> str | None:
    """This interpreter, or (when the sandbox runs as another uid) the first python3 that any user
    may execute together with its standard library; None if there is none."""
    if not switch_uid:
        return sys.executable
    for candidate in (
        sys.executable,
        *(shutil.which("python3", path=d) for d in ("/usr/local/bin", "/usr/bin", "/bin")),
    ):
        real = os.path.realpath(candidate) if candidate else ""
        stdlib = Path(real).parent.parent / "lib" / Path(real).name / "os.py"
        if real and _world_usable(real) and _world_usable(str(stdlib), stat.S_IROTH):
            return real
    return None


def _live_uid(entry: str) -> int | None:
    """The uid of process ``entry`` in /proc, None if it is gone or a zombie (dead, awaiting reaping)."""
    try:
        uid = os.stat(f"/proc/{entry}").st_uid
        with open(f"/proc/{entry}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state in (b"Z", b"X") else uid


def _uid_in_use(uid: int) -> bool:
    return any(_live_uid(e) == uid for e in os.listdir("/proc") if e.isdigit())


def _own_process_count() -> int:
    return sum(1 for e in os.listdir("/proc") if e.isdigit() and _live_uid(e) == os.getuid())


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid``: a child that becomes ``uid`` sends kill(-1) (atomic per
    call, so forks racing the scan are caught by the next round)."""
    for _ in range(10):
        if not _uid_in_use(uid):
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


@dataclass
class _Plan:
    """How this host isolates a run (decided per run; the probes are cached)."""

    python: str
    uid: int | None
    netns: int | None
    private_tmp: bool
    nproc: int

    @property
    def isolation(self) -> str:
        return ",".join(
            [
                "uid" if self.uid is not None else "same-uid",
                "netns" if self.netns else "audit-hook",
                *(["private-tmp"] if self.private_tmp else []),
                "rlimits",
            ]
        )


def _preexec(limits: SandboxLimits, plan: _Plan) -> Callable[[], None]:
    mb = 1 << 20

    def setup() -> None:
        if plan.netns is not None:
            _unshare(plan.netns | (CLONE_NEWNS if plan.private_tmp else 0))
        if plan.private_tmp:
            _private_tmp(limits.file_size_mb, plan.uid)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mb, limits.file_size_mb * mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_NPROC, (plan.nproc, plan.nproc))
        if plan.uid is not None:
            os.setgroups([])
            os.setgid(plan.uid)
            os.setuid(plan.uid)

    return setup


def _plan(limits: SandboxLimits) -> _Plan:
    is_root = os.geteuid() == 0
    python = limits.python or _interpreter(is_root)
    if python is None:  # root ignores RLIMIT_NPROC: never run untrusted code as root
        raise SandboxUnavailable(
            "no python3 that an unprivileged user may execute was found; set SandboxLimits.python to one outside /root"
        )
    netns = _netns_flags()
    nproc = limits.max_processes if is_root else _own_process_count() + limits.max_processes
    return _Plan(python, _fresh_uid() if is_root else None, netns, bool(netns) and _private_tmp_works(), nproc)


def _fresh_uid() -> int:
    while True:
        uid = UID_BASE + random.randrange(UID_SPAN)
        if not _uid_in_use(uid):
            return uid


def _read_head(path: Path, limit: int) -> tuple[str, bool]:
    size = path.stat().st_size
    with path.open("rb") as fh:
        data = fh.read(limit * 4)
    text = data.decode("utf-8", "replace")
    truncated = size > limit or len(text) > limit
    return text[:limit], truncated


def _records(path: Path, nonce: str, pid: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        data = fh.read(MAX_RESULTS_BYTES)
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rec = ast.literal_eval(line)  # literals only: the child cannot make this run code
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(rec, dict) and rec.get("nonce") == nonce and rec.get("pid") == pid:
            out.append(rec)
    return out


async def run_python(code: str, tests: list[str], setup: str = "", limits: SandboxLimits | None = None) -> SandboxRun:
    """Run ``setup`` + ``code`` then each test in a sandboxed interpreter; see the module docstring.
    Raises SandboxUnavailable when this host cannot run untrusted code safely."""
    limits = limits or SandboxLimits()
    plan = _plan(limits)
    base = Path(tempfile.mkdtemp(prefix="podium-check-"))
    try:
        os.chmod(base, 0o711)
        work = base / "work"  # the cwd when there is no private tmpfs
        work.mkdir()
        if plan.uid is not None:
            os.chown(work, plan.uid, plan.uid)
        return await _execute(plan, base, work, code, tests, setup, limits)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _execute(
    plan: _Plan, base: Path, work: Path, code: str, tests: list[str], setup: str, limits: SandboxLimits
) -> SandboxRun:
    out_path, res_path = base / "output", base / "results"
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    res_fd = os.open(res_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    nonce = secrets.token_hex(16)
    payload = marshal.dumps(
        {
            "nonce": nonce,
            "fd": res_fd,
            "code": code,
            "tests": list(tests),
            "setup": setup,
            "block_exec": plan.netns is None,
        }
    )
    home = "/tmp/work" if plan.private_tmp else str(work)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
    run = SandboxRun(isolation=plan.isolation)
    try:  # the harness travels in argv: with a private /tmp its file would be out of reach
        proc = await asyncio.create_subprocess_exec(
            plan.python,
            "-I",
            "-S",
            "-c",
            _harness_source(),
            stdin=asyncio.subprocess.PIPE,
            stdout=out_fd,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=env,
            pass_fds=(res_fd,),
            start_new_session=True,
            preexec_fn=_preexec(limits, plan),
        )
    finally:
        os.close(out_fd)
        os.close(res_fd)
    try:
        await asyncio.wait_for(proc.communicate(payload), timeout=limits.wall_s)
    except TimeoutError:
        run.timed_out = True
    finally:
        _cleanup(proc.pid, plan.uid)
        run.returncode = await proc.wait()
    run.output, run.output_truncated = _read_head(out_path, limits.max_output_chars)
    run.records = _records(res_path, nonce, proc.pid)
    return run


@lru_cache(maxsize=1)
def _harness_source() -> str:
    return pkg_resources.files("podium.checks").joinpath("harness.py").read_text()


def _cleanup(pid: int, uid: int | None) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)
