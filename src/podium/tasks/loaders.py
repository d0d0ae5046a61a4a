"""Record formats (GSM8K, MBPP, HumanEval, podium JSONL) to :class:`Task`; see the package docstring."""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..checks import CheckSpec
from ..errors import UsageError

_CHECK = TypeAdapter(CheckSpec)
_GSM_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)
CODE_INSTRUCTION = "Write the Python function in a ```python code block."


class TaskFileError(UsageError):
    """A task file is missing or holds a record no loader understands."""


class Task(BaseModel):
    """One problem: what the models see (``prompt``) and how its answer is graded (``check``)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: str
    check: CheckSpec
    family: str | None = None


def _gsm8k(rec: dict[str, Any]) -> Task:
    match = _GSM_ANSWER.search(str(rec["answer"]))
    if not match:
        raise ValueError("GSM8K answer has no '#### NUMBER' line")
    value = float(match.group(1).replace(",", "").replace("$", ""))
    prompt = (
        f"{rec['question']}\n\nSolve it step by step, then give the final number on the last line as '#### NUMBER'."
    )
    check = _CHECK.validate_python({"type": "number", "answer": value, "tolerance": 1e-6})
    return Task(id=str(rec.get("id", "")), prompt=prompt, check=check, family="gsm8k")


def _mbpp(rec: dict[str, Any]) -> Task:
    tests = [str(t) for t in rec["test_list"]]
    if not tests:
        raise ValueError("MBPP record has an empty test_list")
    setup = "\n".join(filter(None, [*rec.get("test_imports", []), rec.get("test_setup_code") or ""]))
    prompt = f"{rec['text']}\nYour code should pass this test:\n{tests[0]}\n{CODE_INSTRUCTION}"
    check = _CHECK.validate_python({"type": "python_tests", "tests": tests, "setup": setup})
    return Task(id=f"mbpp/{rec['task_id']}", prompt=prompt, check=check, family="mbpp")


def _humaneval(rec: dict[str, Any]) -> Task:
    imports = "\n".join(line for line in str(rec["prompt"]).splitlines() if line.startswith(("import ", "from ")))
    prompt = f"Complete this Python function. Reply with the whole function.\n```python\n{rec['prompt']}```\n{CODE_INSTRUCTION}"
    tests = [f"{rec['test']}\ncheck({rec['entry_point']})"]
    check = _CHECK.validate_python({"type": "python_tests", "tests": tests, "setup": imports})
    return Task(id=str(rec["task_id"]), prompt=prompt, check=check, family="humaneval")


def _own(rec: dict[str, Any]) -> Task:
    return Task.model_validate(rec)


# (required keys, loader); the first format whose keys are all present wins
FORMATS: list[tuple[str, tuple[str, ...], Callable[[dict[str, Any]], Task]]] = [
    ("podium", ("id", "prompt", "check"), _own),
    ("humaneval", ("prompt", "test", "entry_point"), _humaneval),
    ("mbpp", ("text", "test_list"), _mbpp),
    ("gsm8k", ("question", "answer"), _gsm8k),
]


def parse_record(rec: Any, where: str = "record") -> Task:
    """One JSON record to a Task; ``where`` (``file:line``) prefixes any error."""
    if not isinstance(rec, dict):
        raise TaskFileError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for name, keys, loader in FORMATS:
        if all(k in rec for k in keys):
            try:
                task = loader(rec)
            except (ValidationError, ValueError, TypeError, KeyError) as exc:
                raise TaskFileError(f"{where}: bad {name} record: {_one_line(exc)}") from None
            return task
    raise TaskFileError(
        f"{where}: unknown record format (keys {sorted(rec)[:8]}); expected podium "
        '{"id", "prompt", "check"}, GSM8K, MBPP or HumanEval records; see docs/bench.md'
    )


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return f"{loc}: {err['msg']}" if loc else err["msg"]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _lines(path: Path) -> list[str]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read().splitlines()
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TaskFileError(f"{path}: task file not found") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TaskFileError(f"{path}: cannot read ({exc})") from None


def load_tasks(path: str | Path, *, limit: int | None = None, seed: int = 0) -> list[Task]:
    """Every task of a JSONL(.gz) file, or a seeded sample of ``limit`` of them (file order kept).

    The sample with a larger ``limit`` (same seed) contains the smaller one, so a benchmark can grow.

    Records without an id get ``STEM/LINE``. Duplicate ids are an error (resume keys on them).
    """
    path = Path(path).expanduser()
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{where}: not valid JSON ({exc.msg})") from None
        task = parse_record(rec, where)
        if not task.id:
            task.id = f"{task.family or path.name.split('.')[0]}/{number}"
        if task.id in seen:
            raise TaskFileError(f"{where}: duplicate task id '{task.id}' (first on line {seen[task.id]})")
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"{path}: no tasks in the file")
    if limit is not None and limit < len(tasks):
        order = list(range(len(tasks)))
        random.Random(seed).shuffle(order)  # a prefix of one seeded order: a larger limit extends a smaller sample
        keep = sorted(order[:limit])
        tasks = [tasks[i] for i in keep]
    return tasks
