"""Live benchmarks on task sets with executable checks (``podium bench run``).

- :mod:`podium.benchmark.runner`: every task through every coordinator, graded, resumable.
- :mod:`podium.benchmark.report`: accuracy (95% Wilson), cost, tokens, latency, McNemar vs the best single model.
- :mod:`podium.benchmark.record`: the single-model outcomes as a replay dataset for ``podium train replay``.
"""

from __future__ import annotations

from .report import build_report, markdown, write_report
from .runner import BenchConfig, BenchRunner, coordinator_names, load_results

__all__ = [
    "BenchConfig",
    "BenchRunner",
    "build_report",
    "coordinator_names",
    "load_results",
    "markdown",
    "write_report",
]
