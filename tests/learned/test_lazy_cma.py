"""``load_cma`` imports cma without scipy.stats and pyplot, and leaves both importable afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("cma")


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_cma_loads_without_its_unused_imports_which_stay_importable() -> None:
    proc = run(
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "from podium.learned.lazy_cma import load_cma\n"
        "cma = load_cma()\n"
        "es = cma.CMAEvolutionStrategy([0.0, 0.0], 0.5, {'CMA_diagonal': True, 'seed': 1, 'verbose': -9})\n"
        "es.optimize(lambda x: sum(v * v for v in x), iterations=30)\n"
        "print('scipy.stats' in sys.modules, 'matplotlib.pyplot' in sys.modules, es.result.fbest < 1e-3)\n"
        "import matplotlib.pyplot, scipy.stats\n"
        "print(load_cma() is cma)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "True", "True"]


def test_missing_cma_names_the_train_extra() -> None:
    proc = run(
        "import sys\n"
        "sys.modules['cma'] = None\n"
        "from podium.learned.lazy_cma import load_cma\n"
        "try:\n    load_cma()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    assert "cma is not installed" in proc.stdout and "pip install 'podium[train]'" in proc.stdout, proc.stdout
