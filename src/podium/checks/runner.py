"""``run_check``: grade an answer against a :data:`CheckSpec`."""

from __future__ import annotations

import re
import signal
from typing import Any

from .answers import extract_code, final_answer_candidates, final_number, normalise
from .sandbox import SandboxLimits, SandboxRun, run_python
from .spec import (
    CheckResult,
    CheckSpec,
    ExactCheck,
    NumberCheck,
    PythonTestsCheck,
    RegexCheck,
    parse_check,
)

MAX_DETAIL = 2000
# (label, substrings in the harness errors or the output that show the sandbox stopped something)
_SIGNS = [
    ("memory", ("MemoryError", "Cannot allocate memory")),
    ("process_limit", ("BlockingIOError", "Resource temporarily unavailable")),
    ("file_size", ("File too large", "No space left on device")),
    ("network_blocked", ("network_blocked", "Network is unreachable", "Cannot assign requested address")),
]


def _clip(text: str, limit: int = MAX_DETAIL) -> str:
    return (
        text
        if len(text) <= limit
        else text[: limit // 2] + f"\n...[{len(text) - limit} chars cut]...\n" + text[-limit // 2 :]
    )


def check_exact(spec: ExactCheck, answer: str) -> CheckResult:
    want = normalise(spec.answer)
    ok = any(normalise(c) == want for c in final_answer_candidates(answer))
    return CheckResult(
        passed=ok,
        score=float(ok),
        detail="" if ok else f"expected the final answer {spec.answer!r}; the answer does not state it",
    )


def check_regex(spec: RegexCheck, answer: str) -> CheckResult:
    ok = re.search(spec.pattern, answer) is not None
    return CheckResult(
        passed=ok, score=float(ok), detail="" if ok else f"the answer does not match the pattern {spec.pattern!r}"
    )


def check_number(spec: NumberCheck, answer: str) -> CheckResult:
    got = final_number(answer)
    if got is None:
        return CheckResult(
            passed=False, score=0.0, detail="the answer states no number; end it with the final number (e.g. '#### 42')"
        )
    ok = abs(got - spec.answer) <= spec.tolerance
    return CheckResult(passed=ok, score=float(ok), detail="" if ok else f"the final number is {got:g}, which is wrong")


def _contained(run: SandboxRun, texts: str) -> str | None:
    rc = run.returncode or 0
    if run.timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if rc == -signal.SIGXFSZ:
        return "file_size"
    for label, signs in _SIGNS:
        if any(s in texts for s in signs):
            return label
    return "output_truncated" if run.output_truncated else None


def _grade(run: SandboxRun, spec: PythonTestsCheck, limits: SandboxLimits) -> CheckResult:
    total = len(spec.tests)
    tests = {r["index"]: r for r in run.records if r.get("stage") == "test" and isinstance(r.get("index"), int)}
    passed = sum(1 for i in range(total) if tests.get(i, {}).get("ok") is True)
    errors = "\n".join(str(r.get("error", "")) for r in run.records)
    contained = _contained(run, errors + run.output)
    failure = _first_failure(run, spec, tests, limits, contained)
    output = (
        f"\noutput:\n{run.output}" + ("\n...[output truncated]" if run.output_truncated else "")
        if run.output.strip()
        else ""
    )
    detail = "" if failure is None else _clip(failure + output)
    return CheckResult(
        passed=passed == total and failure is None, score=passed / total, detail=detail, contained=contained
    )


def _first_failure(
    run: SandboxRun,
    spec: PythonTestsCheck,
    tests: dict[int, dict[str, Any]],
    limits: SandboxLimits,
    contained: str | None,
) -> str | None:
    code_error = next((r for r in run.records if r.get("stage") == "code"), None)
    if code_error:
        return f"the code failed before any test ran:\n{code_error.get('error', '')}"
    for i, test in enumerate(spec.tests):
        rec = tests.get(i)
        if rec is None:
            why = {"timeout": f"timed out (wall {limits.wall_s}s / cpu {limits.cpu_s}s)"}.get(
                contained or "", f"stopped (exit {run.returncode})"
            )
            return f"test {i + 1}/{len(spec.tests)} did not finish: the process {why} while running:\n{test}"
        if not rec.get("ok"):
            got = f"\ngot: {rec['got']}" if rec.get("got") else ""
            return f"test {i + 1}/{len(spec.tests)} failed:\n{test}{got}\n{rec.get('error', '')}".rstrip()
    return None


async def check_python(spec: PythonTestsCheck, answer: str, limits: SandboxLimits | None = None) -> CheckResult:
    limits = limits or SandboxLimits()
    code = extract_code(answer)
    run = await run_python(code, list(spec.tests), spec.setup, limits)
    return _grade(run, spec, limits)


async def run_check(spec: CheckSpec, answer: str, *, limits: SandboxLimits | None = None) -> CheckResult:
    """Grade ``answer`` against ``spec`` (a CheckSpec or its dict form). Never raises for a bad answer:
    a failure is a CheckResult with ``passed=False`` and a ``detail`` the next worker can act on."""
    spec = parse_check(spec)
    answer = answer or ""
    if isinstance(spec, ExactCheck):
        return check_exact(spec, answer)
    if isinstance(spec, RegexCheck):
        return check_regex(spec, answer)
    if isinstance(spec, NumberCheck):
        return check_number(spec, answer)
    return await check_python(spec, answer, limits)
