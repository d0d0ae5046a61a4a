"""Task loaders: the shared MBPP and GSM8K files, HumanEval-style and podium records, bad records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import SHARED
from podium.checks import run_check
from podium.tasks import TaskFileError, load_tasks

MBPP = SHARED / "data" / "tasks" / "mbpp" / "mbpp_sanitized_427.jsonl"
GSM8K = SHARED / "data" / "tasks" / "gsm8k" / "test.jsonl.gz"


def test_mbpp_loads_all_and_reference_code_passes() -> None:
    tasks = load_tasks(MBPP)
    assert len(tasks) == 427
    first = tasks[0]
    assert first.id == "mbpp/2" and first.family == "mbpp" and first.check.type == "python_tests"
    assert "similar_elements(" in first.prompt  # the first assert names the expected signature
    assert len(first.check.tests) == 3
    reference = json.loads(MBPP.read_text().splitlines()[0])["code"]
    assert run_check_sync(first.check, f"```python\n{reference}\n```").passed
    assert not run_check_sync(first.check, "```python\ndef similar_elements(a, b):\n    return ()\n```").passed


def test_gsm8k_final_number_and_seeded_sample() -> None:
    tasks = load_tasks(GSM8K)
    assert len(tasks) == 1319
    assert tasks[0].id == "gsm8k/1" and tasks[0].check.type == "number" and tasks[0].check.answer == 18
    sample = load_tasks(GSM8K, limit=20, seed=3)
    assert len(sample) == 20 and sample == load_tasks(GSM8K, limit=20, seed=3)
    assert [t.id for t in sample] != [t.id for t in load_tasks(GSM8K, limit=20, seed=4)]
    assert {t.id for t in sample} < {
        t.id for t in load_tasks(GSM8K, limit=200, seed=3)
    }  # samples nest: a benchmark can grow
    assert run_check_sync(tasks[0].check, "She makes 9 * 2 = 18 dollars.\n#### 18").passed


def test_humaneval_and_own_records(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl.gz"
    humaneval = {
        "task_id": "HumanEval/0",
        "prompt": 'import math\ndef add(a, b):\n    """Add."""\n',
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    }
    own = {
        "id": "q1",
        "prompt": "Capital of France?",
        "check": {"type": "regex", "pattern": "(?i)paris"},
        "family": "geo",
    }
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(humaneval) + "\n\n" + json.dumps(own) + "\n")
    he, mine = load_tasks(path)
    assert he.id == "HumanEval/0" and he.family == "humaneval" and "def add(a, b)" in he.prompt
    assert run_check_sync(he.check, "```python\ndef add(a, b):\n    return a + b\n```").passed
    assert not run_check_sync(he.check, "```python\ndef add(a, b):\n    return a - b\n```").passed
    assert mine.id == "q1" and mine.family == "geo" and mine.check.type == "regex"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"foo": 1}', "unknown record format"),
        ('{"id": "a", "prompt": "p", "check": {"type": "sql"}}', "bad podium record"),
        ('{"question": "q", "answer": "no final line"}', "bad gsm8k record"),
        ('{"id": "a", "prompt": "p", "check": {"type": "exact", "answer": "x"}, "extra": 1}', "bad podium record"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"id": "ok", "prompt": "p", "check": {"type": "exact", "answer": "x"}}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(TaskFileError) as info:
        load_tasks(path)
    text = str(info.value)
    assert text.startswith(f"{path}:2: ") and message in text and "\n" not in text


def test_duplicate_ids_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    rec = '{"id": "a", "prompt": "p", "check": {"type": "exact", "answer": "x"}}'
    path.write_text(rec + "\n" + rec + "\n")
    with pytest.raises(TaskFileError, match=r"dup.jsonl:2: duplicate task id 'a' \(first on line 1\)"):
        load_tasks(path)
    with pytest.raises(TaskFileError, match="task file not found"):
        load_tasks(tmp_path / "nope.jsonl")


def run_check_sync(spec, answer: str):
    import asyncio

    return asyncio.run(run_check(spec, answer))
