"""Executable checks: exact / regex / number graders and Python tests in the sandbox."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from podium.checks import CheckResult, NumberCheck, PythonTestsCheck, parse_check, run_check
from podium.checks.answers import extract_code, final_number


@pytest.mark.parametrize(
    "spec, answer, passed",
    [
        ({"type": "exact", "answer": "Paris"}, "paris", True),
        ({"type": "exact", "answer": "Paris"}, "The capital is **Paris**.", True),
        ({"type": "exact", "answer": "Paris"}, "I think so.\nThe answer is Paris.", True),
        ({"type": "exact", "answer": "New  York"}, "new york", True),
        ({"type": "exact", "answer": "Paris"}, "Lyon", False),
        ({"type": "exact", "answer": "Paris"}, "", False),
        ({"type": "regex", "pattern": r"(?i)\bparis\b"}, "It is PARIS of course", True),
        ({"type": "regex", "pattern": r"^\d+$"}, "42 apples", False),
        ({"type": "number", "answer": 42}, "40 + 2 = 42\n#### 42", True),
        ({"type": "number", "answer": 1234}, "The total is $1,234.", True),
        ({"type": "number", "answer": -3.5}, "x = -3.5", True),
        ({"type": "number", "answer": 18}, "#### 18\nI double-checked with 3 more steps", True),
        ({"type": "number", "answer": 7}, "\\boxed{7} since 2 and 5", True),
        ({"type": "number", "answer": 42}, "The answer is 41.", False),
        ({"type": "number", "answer": 0.5, "tolerance": 0.01}, "about 0.499", True),
        ({"type": "number", "answer": 42}, "no idea", False),
    ],
)
async def test_answer_checks(spec: dict, answer: str, passed: bool) -> None:
    result = await run_check(parse_check(spec), answer)
    assert isinstance(result, CheckResult)
    assert result.passed is passed
    assert result.score == (1.0 if passed else 0.0)
    assert result.contained is None
    assert bool(result.detail) is (not passed)


def test_specs_reject_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        parse_check({"type": "exact", "answer": "x", "typo": 1})
    with pytest.raises(ValidationError):
        parse_check({"type": "regex", "pattern": "("})
    with pytest.raises(ValidationError):
        parse_check({"type": "sql", "query": "x"})
    with pytest.raises(ValidationError):
        parse_check({"type": "python_tests", "tests": []})
    assert isinstance(parse_check({"type": "number", "answer": "3"}), NumberCheck)


def test_final_number_reads_gsm8k_style() -> None:
    assert final_number("#### 1,000,000") == 1_000_000
    assert final_number("costs $12.50 each") == 12.5
    assert final_number("nothing") is None


def test_extract_code_prefers_python_fences_and_skips_prose() -> None:
    fenced = "Here it is:\n```python\ndef f():\n    return 1\n```\nUsage: f()"
    assert extract_code(fenced).strip() == "def f():\n    return 1"
    raw = "Sure! Here is the function.\ndef g(x):\n    return x * 2\n"
    assert extract_code(raw).startswith("def g(x)")


ADD = "```python\ndef add(a, b):\n    return a + b\n```"


async def test_python_tests_pass_and_score() -> None:
    spec = PythonTestsCheck(tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    result = await run_check(spec, ADD)
    assert result.passed and result.score == 1.0 and result.detail == ""


async def test_python_failing_test_reports_the_test_and_the_value_got() -> None:
    spec = PythonTestsCheck(tests=["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0"])
    result = await run_check(spec, ADD)
    assert not result.passed
    assert result.score == pytest.approx(2 / 3)
    assert "test 2/3 failed" in result.detail and "assert add(2, 2) == 5" in result.detail and "got: 4" in result.detail


async def test_python_code_error_fails_every_test_with_the_traceback() -> None:
    result = await run_check(PythonTestsCheck(tests=["assert f() == 1"]), "```python\ndef f(:\n```")
    assert not result.passed and result.score == 0.0
    assert "SyntaxError" in result.detail


async def test_python_setup_runs_before_the_code() -> None:
    spec = PythonTestsCheck(setup="import math", tests=["assert area(1) == math.pi"])
    assert (await run_check(spec, "def area(r):\n    return math.pi * r * r")).passed


async def test_exit_before_the_tests_is_not_a_pass() -> None:
    for trick in ("import sys; sys.exit(0)", "import os; os._exit(0)"):
        result = await run_check(PythonTestsCheck(tests=["assert False"]), trick)
        assert not result.passed and result.score == 0.0


async def test_printed_fake_results_are_not_trusted() -> None:
    fake = 'print(\'{"nonce": "x", "pid": 1, "stage": "test", "index": 0, "ok": true}\')\nimport os; os._exit(0)'
    result = await run_check(PythonTestsCheck(tests=["assert 1 == 2"]), fake)
    assert not result.passed
