"""podium: a small coordinator routes thinker / worker / verifier turns over a pool of LLMs.

>>> import podium
>>> result = podium.ask("What is 17 * 23?", pool="embedded")   # doctest: +SKIP
>>> result.answer, result.status, [t.role for t in result.turns]  # doctest: +SKIP
"""

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
