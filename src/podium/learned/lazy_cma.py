"""Import ``cma`` (the train extra's sep-CMA-ES) without the parts podium does not use.

``import cma`` loads ``scipy.stats`` (for its surrogate fitness models) and ``matplotlib.pyplot``
(for its plots) when they are installed: 1.7 of the 2.1 s it takes, paid again by each ``eval
replay`` worker process before any training. Both imports are optional inside ``cma`` (a
``try``/``except ImportError``), so they are made to fail for the length of that import only; the
optimiser's code and numbers are the same.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType

from ..errors import missing_extra

UNUSED = ("scipy.stats", "matplotlib.pyplot")


def load_cma() -> ModuleType:
    """The ``cma`` module (imported once per process); a missing train extra names the install."""
    if sys.modules.get("cma") is not None:
        return sys.modules["cma"]
    blocked = [name for name in UNUSED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's way to make an import fail
    try:
        with warnings.catch_warnings():  # "Could not import matplotlib.pyplot": cma's plots are not used
            warnings.simplefilter("ignore")
            import cma as loaded
    except ImportError:
        raise missing_extra("cma", "train") from None
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    module: ModuleType = loaded
    return module
