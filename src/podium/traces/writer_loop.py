"""The trace writer process, driven from the event loop: how ``podium serve`` stores its runs.

:class:`~podium.traces.writer_process.ProcessTraceWriter` talks to its child from two threads (a
sender and an acknowledgement reader), and each commit reaches the waiting request through a
concurrent future and a wake-up of the loop. In a server whose event loop is the bottleneck, every
batch then wakes two threads that take the GIL from the loop. :class:`LoopTraceWriter` speaks the
same wire to the same child (:mod:`podium.traces.writer_child`) from the event loop itself, with no
thread in this process: :meth:`~LoopTraceWriter.record` encodes the run (:func:`._batch.encode`)
and queues it; once per loop iteration, what is queued goes down the child's stdin as one batch
(at most ``window`` batches unacknowledged: while the child is busy, runs gather into larger
batches); the child's acknowledgements come back on a pipe the loop reads like any socket and
resolve each run's asyncio future directly.

Durability is :class:`~podium.traces.writer_process.ProcessTraceWriter`'s, exactly:

* :meth:`~LoopTraceWriter.record` returns only after the child has committed the run (SQLite: WAL,
  ``synchronous=NORMAL``): a server that answers after it cannot lose that run to a ``kill -9`` of
  either process. If this process is killed, the child still commits every batch it has read, then
  exits when its stdin closes;
* if the child dies, a new one is started and sent every unacknowledged batch again (a run stored
  twice replaces the first copy); after ``max_restarts`` deaths with no acknowledgement in between,
  or if no child can be started, batches are written in one thread of this process instead, and
  the error is reported once (``on_error``, else the ``podium.traces`` log);
* :meth:`~LoopTraceWriter.aclose` (the server's shutdown) waits for every queued run.

The writer belongs to the event loop that first used it; used from another loop (one app served by
two loops in turn), it starts a new child there and sends it what the first did not acknowledge.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import pickle
import subprocess
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..scrub import secrets_pattern
from ._batch import encode
from .writer_child import HEADER, WriterProcessError, pack
from .writer_process import spawn_child, write_here

if TYPE_CHECKING:
    from ..types import RunResult
    from .store import Store

log = logging.getLogger("podium.traces")
Run = tuple[bytes, str | None, str | None]  # an encoded run, its source, its owner
_UNSENT = object()


@dataclass
class _Batch:
    runs: list[Run]
    futures: list[asyncio.Future[str]]
    pattern: tuple[str, str] | None  # the secrets to scrub with, as they were when it was sent
    data: bytes  # its frame on the child's stdin


class LoopTraceWriter:
    """Batched :meth:`Store.record` in a child process, from the event loop (see the module doc)."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 256,
        window: int = 2,
        max_restarts: int = 3,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.window = window
        self.max_restarts = max_restarts
        self.on_error = on_error
        self.batches = 0  # batches acknowledged (for tests and benchmarks)
        self.restarts = 0  # children started after one died
        self.in_process = False  # True once batches are written in this process's thread
        self._queue: list[tuple[Run, asyncio.Future[str]]] = []
        self._pending: dict[int, _Batch] = {}
        self._seq = 0
        self._failures = 0  # child deaths since the last acknowledgement
        self._loop: asyncio.AbstractEventLoop | None = None
        self._child: _Child | None = None
        self._starting = False  # a task is starting a child
        self._pumping = False  # a pump is due on the loop
        self._closed = False
        self._here: ThreadPoolExecutor | None = None

    async def record(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> str:
        """Store ``result``; returns its run id once committed (or raises the storage error)."""
        try:
            blob = encode(result)
        except Exception:  # a run that cannot be encoded: stored by the store's own slow path
            blob = None
        if blob is None or self._closed:
            return await asyncio.to_thread(lambda: self.store.record_many([(result, source, owner)])[0])
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future: asyncio.Future[str] = loop.create_future()
        self._queue.append(((blob, source, owner), future))
        if not self._pumping:
            self._pumping = True
            loop.call_soon(self._pump)  # after this iteration's other records: one batch for them all
        return await future

    async def aclose(self, timeout: float = 30.0) -> None:
        """Wait for every queued run, then stop the child. Later records are stored synchronously."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._queue or self._pending) and loop.time() < deadline and self._loop is loop:
            await asyncio.sleep(0.005)  # the writer still works meanwhile: a child may still be starting
        self._closed = True
        child, self._child = self._child, None
        if child is not None:
            child.detach()  # here: its pipes belong to this loop
        await asyncio.to_thread(self._finish, child, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child (it commits what it has read, then exits); runs it has not acknowledged are
        written here. For when no event loop runs any more (at exit); a server calls :meth:`aclose`."""
        self._closed = True
        child, self._child = self._child, None
        if child is not None:
            child.detach()
        self._finish(child, timeout)

    def _finish(self, child: _Child | None, timeout: float) -> None:
        _OPEN.discard(self)
        if child is not None:
            child.wait(timeout)
        leftover = list(self._queue) + [item for b in self._pending.values() for item in zip(b.runs, b.futures)]
        self._queue.clear()
        self._pending.clear()
        if leftover:  # stored here; a copy the child also stored is replaced
            outcomes = write_here(self.store, [run for run, _ in leftover], secrets_pattern())
            for (_, future), outcome in zip(leftover, outcomes, strict=True):
                _settle(future, outcome)
        if self._here is not None:
            self._here.shutdown()

    # --- the loop's side -----------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._child is not None:  # another loop's child: it commits what it has read and exits
            self._child.detach()
            self._child = None
        self._loop, self._starting, self._pumping = loop, False, False
        _OPEN.add(self)

    def _pump(self) -> None:
        """Send what is queued, as far as the window allows; start a child first if there is none."""
        self._pumping = False
        if self._child is None and not self.in_process:
            if not self._starting:
                self._starting = True
                assert self._loop is not None
                self._loop.create_task(self._start())
            return
        while self._queue and len(self._pending) < self.window:
            taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._seq += 1
            runs = [run for run, _ in taken]
            batch = _Batch(runs, [f for _, f in taken], secrets_pattern(), pack(("batch", self._seq, runs)))
            self._pending[self._seq] = batch
            self._dispatch(self._seq, batch)

    def _dispatch(self, seq: int, batch: _Batch) -> None:
        if self._child is not None:
            self._child.send(batch)
            return
        if self._here is None:
            self._here = ThreadPoolExecutor(1, thread_name_prefix="podium-trace-writer")
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._here, write_here, self.store, batch.runs, batch.pattern)
        done.add_done_callback(lambda f: self._acknowledge(seq, _outcomes(f, len(batch.runs))))

    async def _start(self, dead: _Child | None = None) -> None:
        """Start a child (after ``dead``: if it may be restarted) and send it every pending batch."""
        loop = asyncio.get_running_loop()
        problem = ""
        if dead is not None:
            code = await asyncio.to_thread(dead.proc.wait)
            self._failures += 1
            if self._failures > self.max_restarts:
                problem = f"exited with {code} {self._failures} times in a row"
        if not problem:
            try:
                child = await _Child.start(self.store, loop, self._message, self._gone)
            except OSError as exc:
                problem = f"could not be started ({exc})"
        if loop is not self._loop or self._closed:  # not wanted any more
            if not problem:
                child.detach()
            return
        self._starting = False
        waiting = sorted(self._pending.items())
        runs = sum(len(batch.runs) for _, batch in waiting)
        if problem:
            self.in_process = True
            self._report(
                WriterProcessError(
                    f"trace writer process {problem}; storing traces in this process from now on ({runs} runs pending)"
                )
            )
        else:
            self._child = child
            if dead is not None:
                self.restarts += 1
                self._report(WriterProcessError(f"trace writer process exited; restarted it, {runs} runs resent"))
        for seq, batch in waiting:
            self._dispatch(seq, batch)
        self._pump()

    def _message(self, message: Any) -> None:
        if message[0] == "ack":
            self._failures = 0
            self._acknowledge(message[1], message[2])

    def _acknowledge(self, seq: int, outcomes: list[str | Exception]) -> None:
        batch = self._pending.pop(seq, None)
        if batch is None:
            return
        self.batches += 1
        for future, outcome in zip(batch.futures, outcomes, strict=True):
            delivered = _settle(future, outcome)
            if isinstance(outcome, Exception) and (self.on_error is not None or not delivered):
                self._report(outcome)
        if self._queue and not self._pumping:
            self._pump()

    def _gone(self, child: _Child) -> None:
        """The child's stdout ended (every acknowledgement it sent has been read)."""
        if child is not self._child or self._closed:
            return
        self._child = None
        self._starting = True
        assert self._loop is not None
        self._loop.create_task(self._start(dead=child))

    def _report(self, error: Exception) -> None:
        if self.on_error is not None:
            self.on_error(error)
        else:
            log.error("trace writer: %s", error)


def _outcomes(done: asyncio.Future[list[str | Exception]], runs: int) -> list[str | Exception]:
    exc = done.exception()
    return [exc] * runs if isinstance(exc, Exception) else done.result()


def _settle(future: asyncio.Future[str], outcome: str | Exception) -> bool:
    """Give ``outcome`` to ``future``; False if nobody waits for it any more."""
    if future.done() or future.get_loop().is_closed():
        return False
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if future.get_loop() is running:
        _set_unless_done(future, outcome)
        return True
    try:  # a waiter of another loop (one that served before this one), or called from a thread
        future.get_loop().call_soon_threadsafe(_set_unless_done, future, outcome)
    except RuntimeError:
        return False
    return True


def _set_unless_done(future: asyncio.Future[str], outcome: str | Exception) -> None:
    if not future.done():
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class _Child:
    """One writer process and its two pipes, as transports of one event loop."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: asyncio.WriteTransport) -> None:
        self.proc = proc
        self._stdin = stdin
        self._sent_pattern: object = _UNSENT

    @classmethod
    async def start(
        cls,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[Any], None],
        on_gone: Callable[[_Child], None],
    ) -> _Child:
        proc = spawn_child(store)
        assert proc.stdin is not None and proc.stdout is not None
        stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
        child = cls(proc, stdin)
        await loop.connect_read_pipe(lambda: _Acks(on_message, lambda: on_gone(child)), proc.stdout)
        return child

    def send(self, batch: _Batch) -> None:
        if batch.pattern != self._sent_pattern:
            self._stdin.write(pack(("secrets", batch.pattern)))
            self._sent_pattern = batch.pattern
        self._stdin.write(batch.data)  # a dead child's pipe drops it: the batch is resent to the next

    def detach(self) -> None:
        """Close its stdin (it commits what it has read, then exits); hear no more from it."""
        with contextlib.suppress(Exception):
            self._stdin.close()
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def wait(self, timeout: float) -> None:
        """Wait for it to exit (killed after ``timeout`` seconds)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Acks(asyncio.Protocol):
    """The child's stdout: length-prefixed pickled messages (:mod:`podium.traces.writer_child`)."""

    def __init__(self, on_message: Callable[[Any], None], on_gone: Callable[[], None]) -> None:
        self._buffer = bytearray()
        self._on_message = on_message
        self._on_gone = on_gone

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer)
            end = HEADER.size + size
            if len(buffer) < end:
                return
            message = pickle.loads(buffer[HEADER.size : end])
            del buffer[:end]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_gone()


_OPEN: weakref.WeakSet[LoopTraceWriter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, store what every writer still holds and stop its child."""
    for writer in list(_OPEN):
        writer.close()
