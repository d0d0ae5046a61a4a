"""The writer process's side of :mod:`podium.traces.writer_process`, and the wire both sides speak:
length-prefixed pickled messages on the child's stdin (``("open", location, text_mode)`` first,
then ``("secrets", pattern)`` and ``("batch", seq, runs)``) and stdout (``("ready",)``,
``("ack", seq, outcomes)``).

Run as ``python -m podium.traces.writer_child`` by :class:`~podium.traces.writer_process.ProcessTraceWriter`.
"""

from __future__ import annotations

import gc
import io
import pickle
import re
import signal
import struct
import sys
from typing import IO, Any

from pydantic import BaseModel

from ..scrub import secrets_pinned
from ._batch import decode
from .writer import write_batch

HEADER = struct.Struct("!I")


class WriterProcessError(RuntimeError):
    """The trace writer process died or could not start (its runs are sent again, not lost)."""


def pack(message: Any) -> bytes:
    """One length-prefixed pickled message (of plain values: runs travel encoded, :func:`._batch.encode`)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_frame(stream: IO[bytes], message: Any) -> None:
    """One length-prefixed pickled message, in one write."""
    stream.write(pack(message))
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    return pickle.loads(body) if len(body) == size else None


def dumps(value: Any) -> bytes:
    """``value`` pickled, pydantic models by their state (a third faster than their own reduce)."""
    buffer = io.BytesIO()
    _ModelPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def frame(message: Any) -> bytes:
    """``message`` pickled (pydantic models by their state, a third faster than their own reduce)."""
    buffer = io.BytesIO()
    buffer.write(HEADER.pack(0))
    _ModelPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    data = buffer.getbuffer()
    data[: HEADER.size] = HEADER.pack(len(data) - HEADER.size)
    del data
    return buffer.getvalue()


class _ModelPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseModel):  # the same state pydantic's __getstate__ gives, without its overhead
            state = (obj.__dict__, obj.__pydantic_fields_set__, obj.__pydantic_extra__, obj.__pydantic_private__)
            return _model, (type(obj), *state)
        return NotImplemented


def _model(cls: type[BaseModel], fields: dict[str, Any], fields_set: set[str], extra: Any, private: Any) -> BaseModel:
    """A pickled model back, as pydantic's __setstate__ rebuilds it."""
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    object.__setattr__(model, "__pydantic_extra__", extra)
    object.__setattr__(model, "__pydantic_private__", private)
    return model


def compile_pattern(pattern: tuple[str, str] | None) -> tuple[re.Pattern[str], re.Pattern[str]] | None:
    """:func:`podium.scrub.secrets_pattern`'s sources, compiled (for :func:`podium.scrub.secrets_pinned`)."""
    return (re.compile(pattern[0]), re.compile(pattern[1])) if pattern is not None else None


def _portable(outcome: str | Exception) -> str | Exception:
    """An error that survives pickling back to the parent (else its text in a WriterProcessError)."""
    if isinstance(outcome, Exception):
        try:
            pickle.loads(pickle.dumps(outcome))
        except Exception:
            return WriterProcessError(f"{type(outcome).__name__}: {outcome}")
    return outcome


def child_main(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Store the batches read from ``stdin`` (one transaction per batch), acknowledging each on ``stdout``."""
    from .store import Store

    opening = read_frame(stdin)
    if opening is None:
        return
    _, location, text_mode = opening
    store = Store.open(location, text_mode=text_mode)
    # Everything alive now (modules, the store) lives as long as the process: the collector need not
    # walk it again at each full collection. A batch's rows are acyclic and freed by refcounting.
    gc.freeze()
    write_frame(stdout, ("ready",))
    regex: tuple[re.Pattern[str], re.Pattern[str]] | None = None
    while (message := read_frame(stdin)) is not None:
        if message[0] == "secrets":
            regex = compile_pattern(message[1])
            continue
        _, seq, runs = message
        items = [(decode(blob), source, owner) for blob, source, owner in runs]  # encoded by the caller
        with secrets_pinned(regex):
            outcomes, _ = write_batch(store, items)
        try:
            write_frame(stdout, ("ack", seq, [_portable(o) for o in outcomes]))
        except OSError:
            pass  # the parent is gone: keep committing what it sent
    store.close()


if __name__ == "__main__":
    # Ctrl-C and SIGTERM go to the parent, which flushes through us and then closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the acknowledgements
    child_main(sys.stdin.buffer, out)
