"""Trace writes off the event loop: one background thread, batched transactions, flushed on close.

:meth:`TraceWriter.submit` queues a run and returns at once with a future that completes when the
run is committed. The writer thread takes everything queued (up to ``max_batch`` runs), scrubs and
serializes it there, and stores the batch in one transaction: at 50 concurrent requests one commit
serves dozens of runs, and the event loop does none of the work.

Durability, exactly:

* a caller that waits for the future (the server does, before it answers) has its run committed
  to SQLite (WAL, ``synchronous=NORMAL``) when the wait ends: a ``kill -9`` of the process after that
  cannot lose it. An operating-system crash or power loss can still lose the last transactions
  (``synchronous=NORMAL``), as before this module;
* a caller that does not wait (the engine's event handler, :meth:`Store.handler` with
  ``background=True``) may lose the runs still queued if the process is killed with SIGKILL; a
  normal exit, an exception or SIGTERM/SIGINT handled by the application flushes them
  (:meth:`close`, also registered with :mod:`atexit`).

:class:`~podium.traces.writer_process.ProcessTraceWriter` does the same work in a child process (the
same interface and guarantees; ``PODIUM_TRACE_WRITER=process`` or ``Store.handler(background="process")``).

A batch that fails is retried run by run, so one bad run cannot take its batch-mates with it; each
failure goes to ``on_error`` and to that run's future.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..types import RunResult
    from ._batch import Item as BatchItem
    from .store import Store

log = logging.getLogger("podium.traces")
Item = tuple["RunResult", str | None, str | None, "Future[str] | None"]
_STOP = object()


class TraceWriter:
    """Background, batched :meth:`Store.record` (see the module doc)."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 256,
        on_error: Callable[[Exception], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_error = on_error
        self.linger = linger  # seconds to let a batch gather (no caller waits: fewer, larger batches)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None  # started by the first submission
        self.batches = 0  # how many transactions were committed (for tests and benchmarks)

    def submit(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> Future[str]:
        """Queue ``result``; the future gives its run id once committed (or the storage error)."""
        future: Future[str] = Future()
        self._put(result, source, owner, future)
        return future

    def enqueue(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> None:
        """:meth:`submit` for a caller that does not wait for the commit (the engine's event handler):
        no future; a storage error goes to ``on_error``. :meth:`flush` still waits for it."""
        self._put(result, source, owner, None)

    def _put(self, result: RunResult, source: str | None, owner: str | None, future: Future[str] | None) -> None:
        with self._lock:
            if self._closed:  # after close: store it here and now rather than drop it
                write_one(self.store, (result, source, owner), future, self.on_error)
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="podium-trace-writer", daemon=True)
                self._thread.start()
                _OPEN.add(self)
            self._queue.put((result, source, owner, future))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every run submitted before this call is committed (or failed)."""
        if self._thread is None or not self._thread.is_alive():
            return
        marker: Future[str] = Future()
        self._queue.put(marker)
        marker.result(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the thread. Idempotent; later submissions are stored synchronously."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is None:
                return
            self._queue.put(_STOP)
        self._thread.join(timeout)
        _OPEN.discard(self)

    def _run(self) -> None:
        while True:
            batch: list[Item] = []
            markers: list[Future[str]] = []
            stop = self._take(batch, markers)
            if batch:
                self._write(batch)
            for marker in markers:
                marker.set_result("")
            if stop:
                self.store.close()
                return

    def _take(self, batch: list[Item], markers: list[Future[str]]) -> bool:
        """Block for one item, then take what else is queued (up to ``max_batch`` runs); True at the end."""
        item = self._queue.get()
        if self.linger and isinstance(item, tuple):
            time.sleep(self.linger)
        while True:
            if item is _STOP:
                return True
            if isinstance(item, Future):
                markers.append(item)
            else:
                batch.append(item)
            if len(batch) >= self.max_batch:
                return False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _write(self, batch: list[Item]) -> None:
        outcomes, batched = write_batch(self.store, [(r, source, owner) for r, source, owner, _ in batch])
        self.batches += batched
        for (*_, future), outcome in zip(batch, outcomes, strict=True):
            settle(future, outcome, self.on_error)


HANDOFF_S = 0.0002


def hand_over_gil() -> None:
    """Block this thread briefly so that a writer thread waiting for the GIL can take it.

    An event loop with work always ready drops the GIL for every ``select(0)`` and takes it back
    before a woken thread runs; the waiting thread never times out, so it never asks for the GIL
    (CPython's convoy effect). Measured: the sender waited up to 1.5 s while runs piled up. A caller
    whose queue has grown sleeps ~0.2 ms, once per batch's worth of runs.
    """
    time.sleep(HANDOFF_S)


def settle(future: Future[str] | None, outcome: str | Exception, on_error: Callable[[Exception], None] | None) -> None:
    """Give ``outcome`` to ``future`` (if any); an error also goes to ``on_error``."""
    delivered = future is not None and deliver(future, outcome)
    if isinstance(outcome, Exception):
        if on_error is not None:
            on_error(outcome)
        elif not delivered:  # nobody else would hear of it
            log.error("trace writer: %s", outcome)


def deliver(future: Future[str], outcome: str | Exception) -> bool:
    """Set the future's outcome; False if its caller had cancelled it (the run is stored all the same)."""
    try:
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        return False
    return True


def write_one(
    store: Store, item: BatchItem, future: Future[str] | None, on_error: Callable[[Exception], None] | None
) -> None:
    outcome: str | Exception
    try:
        outcome = store.record_many([item])[0]
    except Exception as exc:
        outcome = exc
    settle(future, outcome, on_error)


def write_batch(store: Store, items: Sequence[BatchItem]) -> tuple[list[str | Exception], bool]:
    """Store ``items`` (each ``(run or its plain form, source, owner)``) in one transaction, else (it
    failed) run by run so that a bad run fails alone. Returns each run's id or error, and whether the
    one transaction succeeded."""
    try:
        return list(store.record_many(items)), True
    except Exception:
        outcomes: list[str | Exception] = []
        for item in items:
            try:
                outcomes.append(store.record_many([item])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes, False


WRITER_ENV = "PODIUM_TRACE_WRITER"


def writer_kind(kind: str | None = None) -> str:
    """``kind``, else ``$PODIUM_TRACE_WRITER``, else ``"thread"`` (checked by :func:`open_writer`)."""
    return kind or os.environ.get(WRITER_ENV) or "thread"


def open_writer(
    store: Store,
    kind: str | None = None,
    *,
    on_error: Callable[[Exception], None] | None = None,
    linger: float = 0.0,
) -> Any:
    """A background writer for ``store``: ``"thread"`` (:class:`TraceWriter`) or ``"process"``
    (:class:`~podium.traces.writer_process.ProcessTraceWriter`: the work on another core, for a
    long-lived server or job on a machine with a core to spare; it costs a child process of ~50 MB and
    ~1 s to start). Default ``$PODIUM_TRACE_WRITER``, else thread. ``linger``: seconds the writer
    lets a batch gather, for callers that do not wait for the commit."""
    kind = writer_kind(kind)
    if kind == "thread":
        return TraceWriter(store, on_error=on_error, linger=linger)
    if kind == "process":
        from .writer_process import ProcessTraceWriter

        return ProcessTraceWriter(store, on_error=on_error, linger=linger)
    raise ConfigError(f"{WRITER_ENV}={kind!r} is not valid; use 'process' or 'thread'")


_OPEN: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, flush what every open writer still holds."""
    for writer in list(_OPEN):
        writer.close()
