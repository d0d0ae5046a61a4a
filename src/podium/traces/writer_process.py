"""Trace writes in a separate process: the scrubbing, row building and SQL of every run on another
core, so they stop competing with the engine or the server for the GIL.

:class:`ProcessTraceWriter` is a drop-in for :class:`~podium.traces.writer.TraceWriter` (the same
``submit() -> Future``, ``enqueue``, ``flush``, ``close``). :meth:`submit` encodes the run in the
caller's thread as the JSON pydantic-core writes for it (≈ 5 µs, :func:`podium.traces._batch.encode`;
done there, it needs no GIL hand-off); a sender thread takes what is queued (up to ``max_batch``
runs) and writes it to the child's stdin as one batch; a reader thread resolves each run's future
from the child's acknowledgement. When ``handoff`` runs are waiting, the caller hands the GIL to the
sender once (:func:`podium.traces.writer.hand_over_gil`): a busy event loop would otherwise starve
it. :meth:`enqueue` (the engine's event handler: nobody waits for the commit) makes no future at
all; :meth:`flush` waits for both by counting the runs settled. The child (``python -m
podium.traces.writer_child``, started at the first submission) stores each batch in one transaction
with the same :class:`~podium.traces.store.Store` code, then acknowledges it.

Scrubbing still happens before anything is written, in the child, with *this* process's secrets:
the sender passes the current secret alternation (:func:`podium.scrub.secrets_pattern`) over the
child's stdin pipe whenever it changes. Secrets never go on a command line or to disk; the store's
location (a PostgreSQL URL may hold a password) goes the same way.

Durability, exactly (the same as the thread writer's):

* a future completes only after the child has committed its run (SQLite: WAL, ``synchronous=NORMAL``);
  a caller that waits for it (the server, before it answers) cannot lose that run to a ``kill -9``
  of either process. If this process is killed, the child still commits every batch it has read,
  then exits when its stdin closes;
* runs submitted but not yet acknowledged live in this process until acknowledged: a SIGKILL of
  this process may lose them (as with the thread writer); a normal exit or SIGTERM/SIGINT handled by
  the application flushes them (:meth:`close`, also registered with :mod:`atexit`);
* if the child dies (killed, crashed), nothing is silently lost: the error is reported (``on_error``,
  else the ``podium.traces`` log), a new child is started and every unacknowledged batch is sent
  again (storing a run twice replaces the first copy). After ``max_restarts`` deaths in a row with no
  batch acknowledged in between, the writer stops using a process and stores runs in its own thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from subprocess import PIPE
from typing import TYPE_CHECKING, Any

from ..scrub import secrets_pattern, secrets_pinned
from ._batch import decode, encode
from .writer import deliver, hand_over_gil, settle, write_batch, write_one
from .writer_child import HEADER, WriterProcessError, compile_pattern, pack, read_frame, write_frame

if TYPE_CHECKING:
    from ..types import RunResult
    from .store import Store

log = logging.getLogger("podium.traces")
_STOP = object()
_UNSENT = object()
Item = tuple[bytes, str | None, str | None, "Future[str] | None"]  # an encoded run, source, owner, future


class ProcessTraceWriter:
    """Background, batched :meth:`Store.record` in a child process (see the module doc)."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 256,
        on_error: Callable[[Exception], None] | None = None,
        max_restarts: int = 3,
        window: int = 2,
        linger: float = 0.0,
        handoff: int = 64,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_error = on_error
        self.max_restarts = max_restarts
        self.window = window  # batches sent and not yet acknowledged: while the child is busy, runs gather
        self.linger = linger  # seconds to let a batch gather before sending it (no caller waits: larger batches)
        self.handoff = handoff  # runs queued at which the caller hands the GIL to the sender (see _put)
        self.batches = 0  # batches acknowledged (for tests and benchmarks)
        self.restarts = 0  # children started after one died
        self.in_process = False  # True once the writer gave up on child processes
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # submissions against close
        self._io = threading.Lock()  # the child's stdin, its replacement, the pending batches' order
        self._pending: dict[int, tuple[bytes, list[Future[str] | None], tuple[str, str] | None]] = {}
        self._acked = threading.Condition()  # batches acknowledged, runs finished (committed or failed)
        self._queued = 0  # runs queued for the child so far
        self._finished = 0  # of those, runs committed or failed
        self._seq = 0
        self._failures = 0  # child deaths since the last acknowledgement
        self._sent_pattern: object = _UNSENT
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._closed = False
        self._closing = False

    # --- the caller's side ---------------------------------------------------------------------

    def submit(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> Future[str]:
        """Queue ``result``; the future gives its run id once committed (or the storage error)."""
        future: Future[str] = Future()
        self._put(result, source, owner, future)
        return future

    def enqueue(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> None:
        """:meth:`submit` for a caller that does not wait for the commit (the engine's event handler):
        no future; a storage error goes to ``on_error`` (else the log). :meth:`flush` still waits for it."""
        self._put(result, source, owner, None)

    def _put(self, result: RunResult, source: str | None, owner: str | None, future: Future[str] | None) -> None:
        try:
            blob = encode(result)  # here, not in the sender: no GIL hand-off for it
        except Exception:  # a run that cannot be encoded: stored here and now
            blob = None
        with self._lock:
            if self._closed or blob is None:  # after close: store it here and now rather than drop it
                write_one(self.store, (result, source, owner), future, self._report)
                return
            if self._proc is None and not self.in_process:
                self._start()
            self._queued += 1
            self._queue.put((blob, source, owner, future))
        if self._queue.qsize() >= self.handoff and self._queued % self.handoff == 0:
            hand_over_gil()

    def start(self, timeout: float | None = 30.0) -> bool:
        """Start the child now (not at the first submission) and wait until it has opened the store."""
        with self._lock:
            if self._proc is None and not self._closed and not self.in_process:
                self._start()
        return self._ready.wait(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every run submitted before this call is committed (or failed)."""
        with self._lock:
            target = self._queued
        with self._acked:
            if not self._acked.wait_for(lambda: self._finished >= target, timeout):
                raise TimeoutError(f"{target - self._finished} trace writes still pending after {timeout} s")

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the threads and the child. Idempotent; later submissions are stored synchronously."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._proc is None and not self.in_process:
                return
            self._queue.put(_STOP)
        self._sender.join(timeout)
        try:
            self.flush(timeout)
        finally:
            with self._io:
                self._closing = True
                proc = self._proc
                if proc is not None and proc.stdin is not None:
                    try:
                        proc.stdin.close()  # the child exits once it has read everything
                    except OSError:
                        pass
            if proc is not None:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self._reader.join(timeout)
            _OPEN.discard(self)

    # --- threads -------------------------------------------------------------------------------

    def _start(self) -> None:
        try:
            self._proc = self._spawn()
        except OSError as exc:  # no child at all: store the runs in this process, say so once
            self.in_process = True
            self._report(WriterProcessError(f"cannot start the trace writer process ({exc}); storing traces here"))
        self._sender = threading.Thread(target=self._send_loop, name="podium-trace-sender", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="podium-trace-acks", daemon=True)
        self._sender.start()
        self._reader.start()
        _OPEN.add(self)

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = spawn_child(self.store)
        self._sent_pattern = _UNSENT
        return proc

    def _send_loop(self) -> None:
        while True:
            with self._acked:  # at most ``window`` batches in flight: fewer, larger batches under load
                self._acked.wait_for(lambda: len(self._pending) < self.window or self.in_process)
            batch: list[Item] = []
            stop = self._take(batch)
            if batch:
                self._send(batch)
            if stop:
                return

    def _take(self, batch: list[Item]) -> bool:
        """Block for one item, then take what else is queued (up to ``max_batch`` runs); True at the end."""
        item = self._queue.get()
        if self.linger and item is not _STOP and self._queue.qsize() < self.handoff:
            time.sleep(self.linger)
        while True:
            if item is _STOP:
                return True
            batch.append(item)
            if len(batch) >= self.max_batch:
                return False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _send(self, batch: list[Item]) -> None:
        futures = [future for *_, future in batch]
        runs = [(blob, source, owner) for blob, source, owner, _ in batch]
        pattern = secrets_pattern()
        with self._io:
            if not self.in_process:
                self._seq += 1
                data = pack(("batch", self._seq, runs))
                self._pending[self._seq] = (data, futures, pattern)
                self._emit(data, pattern)
                return
        self._write_here(runs, futures, pattern)

    def _emit(self, data: bytes, pattern: tuple[str, str] | None) -> None:
        """Send one batch (after the secrets, if they changed); holds ``_io``."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            if pattern != self._sent_pattern:
                write_frame(self._proc.stdin, ("secrets", pattern))
                self._sent_pattern = pattern
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the child is gone: the reader starts another and sends the pending batches again

    def _read_loop(self) -> None:
        while True:
            proc = self._proc
            if proc is None or proc.stdout is None:
                return
            while (message := read_frame(proc.stdout)) is not None:
                if message[0] == "ready":
                    self._ready.set()
                elif message[0] == "ack":
                    self._acknowledge(message[1], message[2])
            code = proc.wait()
            if self._closing:
                if self._pending:
                    self._fail_pending(WriterProcessError(f"trace writer process exited with {code} at close"))
                return
            if not self._replace(proc, code):
                return

    def _acknowledge(self, seq: int, outcomes: list[str | Exception]) -> None:
        self._failures = 0
        self.batches += 1
        with self._acked:
            entry = self._pending.pop(seq, None)
            self._acked.notify_all()
        if entry is not None:
            self._resolve(entry[1], outcomes)

    def _resolve(self, futures: list[Future[str] | None], outcomes: list[str | Exception]) -> None:
        for future, outcome in zip(futures, outcomes, strict=True):
            settle(future, outcome, self._report)
        self._finish(len(futures))

    def _finish(self, runs: int) -> None:
        with self._acked:
            self._finished += runs
            self._acked.notify_all()

    def _replace(self, dead: subprocess.Popen[bytes], code: int | str) -> bool:
        """Start a new child and resend what the dead one did not acknowledge; False: write here from now on."""
        with self._io:
            self._failures += 1
            waiting = sorted(self._pending.items())
            runs = sum(len(futures) for _, (_, futures, _) in waiting)
            if self._failures > self.max_restarts:
                self.in_process = True
                self._pending.clear()
                with self._acked:
                    self._acked.notify_all()
            else:
                try:
                    self._proc = self._spawn()
                except OSError as exc:
                    code, self.in_process = f"{code} and could not be restarted ({exc})", True
                    self._pending.clear()
                    with self._acked:
                        self._acked.notify_all()
                else:
                    self.restarts += 1
                    for _, (data, _, pattern) in waiting:
                        self._emit(data, pattern)
        if self.in_process:
            self._report(
                WriterProcessError(
                    f"trace writer process exited with {code} {self._failures} times in a row; "
                    f"storing traces in this process from now on ({runs} runs pending)"
                )
            )
            for _, (data, futures, pattern) in waiting:
                self._write_here(pickle.loads(data[HEADER.size :])[2], futures, pattern)
            return False
        self._report(WriterProcessError(f"trace writer process exited with {code}; restarted it, {runs} runs resent"))
        return True

    def _write_here(
        self,
        runs: list[tuple[bytes, str | None, str | None]],
        futures: list[Future[str] | None],
        pattern: tuple[str, str] | None,
    ) -> None:
        self._resolve(futures, write_here(self.store, runs, pattern))

    def _fail_pending(self, error: Exception) -> None:
        runs = 0
        for _, futures, _ in self._pending.values():
            runs += len(futures)
            for future in futures:
                if future is not None:
                    deliver(future, error)  # reported once below
        self._pending.clear()
        self._report(error)
        self._finish(runs)

    def _report(self, error: Exception) -> None:
        if self.on_error is not None:
            self.on_error(error)
        else:
            log.error("trace writer: %s", error)


def spawn_child(store: Store) -> subprocess.Popen[bytes]:
    """Start ``python -m podium.traces.writer_child`` and tell it where ``store`` is (over its stdin:
    a PostgreSQL URL may hold a password, which must not go on a command line)."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "podium.traces.writer_child"], stdin=PIPE, stdout=PIPE, env=env)
    assert proc.stdin is not None
    location = getattr(store, "url", None) or str(store.path)
    write_frame(proc.stdin, ("open", location, store.text_mode))
    return proc


def write_here(
    store: Store, runs: list[tuple[bytes, str | None, str | None]], pattern: tuple[str, str] | None
) -> list[str | Exception]:
    """What the child does with a batch, in this process (when no child can be used): each run's id or error."""
    with secrets_pinned(compile_pattern(pattern)):
        outcomes, _ = write_batch(store, [(decode(blob), source, owner) for blob, source, owner in runs])
    return outcomes


_OPEN: weakref.WeakSet[ProcessTraceWriter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, flush what every open writer still holds."""
    for writer in list(_OPEN):
        writer.close()
