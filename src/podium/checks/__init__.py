"""Executable verifiers: grade an answer by running a check instead of asking a model.

from . import CheckSpec, CheckResult, run_check, SandboxLimits
result = await run_check(parse_check({"type": "number", "answer": 42}), "... #### 42")
"""

from .runner import run_check
from .sandbox import SandboxLimits
from .spec import (
    CHECK_ADAPTER,
    CheckResult,
    CheckSpec,
    ExactCheck,
    NumberCheck,
    PythonTestsCheck,
    RegexCheck,
    parse_check,
)

__all__ = [
    "CHECK_ADAPTER",
    "CheckResult",
    "CheckSpec",
    "ExactCheck",
    "NumberCheck",
    "PythonTestsCheck",
    "RegexCheck",
    "SandboxLimits",
    "parse_check",
    "run_check",
]
