"""The garbage collector's work in a process, for bench/bench_server_gc.py (loaded through PYTHONPATH).

Counts each generation's collections and the thread CPU time they take (``gc.callbacks``). On
SIGUSR1 the totals so far, with the process's CPU time, are appended as one JSON line to the file
named by ``PODIUM_GC_PROBE``; the benchmark diffs two lines around a load run.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time

_OUT = os.environ.get("PODIUM_GC_PROBE")
_totals = {g: [0, 0.0] for g in range(3)}  # generation: [collections, CPU seconds]
_started = [0.0]


def _track(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.thread_time()
        return
    total = _totals[info["generation"]]
    total[0] += 1
    total[1] += time.thread_time() - _started[0]


def _report(*_: object) -> None:
    line = {"collections": [t[0] for t in _totals.values()], "gc_cpu_s": [t[1] for t in _totals.values()]}
    line.update(process_cpu_s=time.process_time(), frozen=gc.get_freeze_count(), threshold=gc.get_threshold())
    with open(_OUT, "a") as f:  # type: ignore[arg-type]
        f.write(json.dumps(line) + "\n")


if _OUT:
    gc.callbacks.append(_track)
    signal.signal(signal.SIGUSR1, _report)
