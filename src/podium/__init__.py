"""podium: a small coordinator routes thinker / worker / verifier turns over a pool of LLMs.

>>> import podium
>>> result = podium.ask("What is 17 * 23?", pool="embedded")   # doctest: +SKIP
>>> result.answer, result.status, [t.role for t in result.turns]  # doctest: +SKIP
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .engine import Engine, aask, ask
    from .pool import ModelSpec, Policy, Pool, load_pool
    from .types import Budget, Completion, CompletionRequest, Decision, Role, RunResult, RunStatus, Turn, Verdict

__all__ = [
    "Budget",
    "Completion",
    "CompletionRequest",
    "Decision",
    "Engine",
    "ModelSpec",
    "Policy",
    "Pool",
    "Role",
    "RunResult",
    "RunStatus",
    "Turn",
    "Verdict",
    "aask",
    "ask",
    "load_pool",
]
__version__ = "0.1.0"

_HOME = {name: "engine" for name in ("Engine", "aask", "ask")}  # where each public name lives
_HOME |= {name: "pool" for name in ("ModelSpec", "Policy", "Pool", "load_pool")}
_HOME |= {name: "types" for name in __all__ if name not in _HOME}


def __getattr__(name: str) -> object:
    """The public names, imported on first use: a process that only needs ``podium.learned`` (an
    ``eval replay`` worker) or the CLI's help does not pay for the engine and its backends (0.6 s)."""
    if name not in _HOME:
        raise AttributeError(f"module 'podium' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
