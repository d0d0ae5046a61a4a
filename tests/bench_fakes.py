"""Scripted models for the bench and live-training tests (pool ``function:`` entries).

Code pool: ``coder`` writes a wrong function first and fixes it only when the feedback of its next
turn carries the failing test (so grounded verification is what makes it pass); ``lazy`` is always
wrong.

Arithmetic pool with a known optimum: tasks "What is A plus B?" / "What is A times B?".
``w_add`` is right only on sums; ``w_gen`` (the default worker) is right on products only when a
plan is present, and ``planner`` (the only thinker) helps only there; ``v_noisy`` accepts every
right answer and wrongly accepts a wrong one when A + B is even.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import yaml

from podium.types import CompletionRequest

TASK = re.compile(r"What is (\d+) (plus|times) (\d+)\?")
WRONG = "```python\ndef {name}(a, b):\n    return a - b\n```"
RIGHT = "```python\ndef {name}(a, b):\n    return a {op} b\n```"
FUNC = re.compile(r"function `(\w+)\(a, b\)` returning a ([+*]) b")


def _text(request: CompletionRequest) -> str:
    return "\n".join(m.content for m in request.messages)


def coder(request: CompletionRequest) -> str:
    text = _text(request)
    name, op = FUNC.search(text).groups()
    feedback = text.split("Revision needed", 1)[1] if "Revision needed" in text else ""
    return RIGHT.format(name=name, op=op) if "assert" in feedback.lower() else WRONG.format(name=name)


def mortal_coder(request: CompletionRequest) -> str:
    """:func:`coder`, for fault tests: with ``PODIUM_TEST_SLOW`` each call takes that many seconds; with
    ``PODIUM_TEST_DIE_ON=NAME`` and ``PODIUM_TEST_DIE_MARK=PATH`` the first call for function NAME kills
    its own process (a Ray worker dying mid-task), once: the file PATH records that it did."""
    time.sleep(float(os.environ.get("PODIUM_TEST_SLOW", "0")))
    mark, victim = os.environ.get("PODIUM_TEST_DIE_MARK"), os.environ.get("PODIUM_TEST_DIE_ON")
    if mark and victim and FUNC.search(_text(request)).group(1) == victim and not Path(mark).exists():
        Path(mark).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return coder(request)


def lazy(request: CompletionRequest) -> str:
    name, _ = FUNC.search(_text(request)).groups()
    return WRONG.format(name=name)


def _task(text: str) -> tuple[int, str, int, int]:
    match = TASK.search(text)
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    return a, op, b, (a + b if op == "plus" else a * b)


def planner(request: CompletionRequest) -> str:
    return "1. Multiply the two numbers.\n2. Report the product."


def w_add(request: CompletionRequest) -> str:
    a, op, b, _ = _task(_text(request))
    return str(a + b)


def w_gen(request: CompletionRequest) -> str:
    text = _text(request)
    a, op, b, right = _task(text)
    if op == "times" and "Plan:" in text:
        return str(right)
    return str(right + 1)


def v_noisy(request: CompletionRequest) -> str:
    text = _text(request)
    match = TASK.search(text)
    a, op, b, right = _task(text)
    given = re.search(r"-?\d+", text[match.end() :])
    if given and int(given.group()) == right:
        return "The answer is right.\nVERDICT: ACCEPT"
    if (a + b) % 2 == 0:
        return "Looks fine to me.\nVERDICT: ACCEPT"  # the known false accept
    return "The number is wrong.\nVERDICT: REVISE"


def _model(name: str, fn: str, roles: list[str], price: float = 1.0) -> dict:
    return {
        "name": name,
        "backend": "scripted",
        "function": f"bench_fakes:{fn}",
        "roles": roles,
        "input_usd_per_mtok": price,
        "output_usd_per_mtok": price,
    }


def write_code_pool(folder) -> str:
    pool = {
        "name": "code-fakes",
        "models": [
            _model("planner", "planner", ["thinker", "verifier"]),
            _model("coder", "coder", ["worker"]),
            _model("lazy", "lazy", ["worker"], 0.5),
        ],
        "defaults": {"thinker": "planner", "worker": "coder", "verifier": "planner"},
        "budget": {"max_turns": 5},
    }
    path = folder / "code-pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return str(path)


def write_arith_pool(folder) -> str:
    pool = {
        "name": "arith",
        "models": [
            _model("planner", "planner", ["thinker"]),
            _model("w_gen", "w_gen", ["worker"]),
            _model("w_add", "w_add", ["worker"]),
            _model("v_noisy", "v_noisy", ["verifier"]),
        ],
        "defaults": {"thinker": "planner", "worker": "w_gen", "verifier": "v_noisy"},
        "budget": {"max_turns": 5},
    }
    path = folder / "arith-pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return str(path)


def arith_tasks(n_per_family: int) -> list[dict]:
    """Podium task records: sums and products with distinct numbers."""
    out = []
    for i in range(n_per_family):
        a, b = 3 + i, 7 + 2 * i
        out.append(
            {
                "id": f"add/{i}",
                "family": "add",
                "prompt": f"Addition task. What is {a} plus {b}? Add the numbers.",
                "check": {"type": "number", "answer": a + b},
            }
        )
        out.append(
            {
                "id": f"mul/{i}",
                "family": "mul",
                "prompt": f"Product task. What is {a} times {b}? Multiply them.",
                "check": {"type": "number", "answer": a * b},
            }
        )
    return out


def code_tasks(n: int) -> list[dict]:
    ops = [("+", "add"), ("*", "mul")]
    out = []
    for i in range(n):
        op, word = ops[i % 2]
        name = f"{word}_{i}"
        tests = [f"assert {name}({i + 1}, 3) == {i + 1} {op} 3", f"assert {name}(2, {i + 2}) == 2 {op} {i + 2}"]
        out.append(
            {
                "id": f"code/{i}",
                "family": word,
                "prompt": f"Write a Python function `{name}(a, b)` returning a {op} b.",
                "check": {"type": "python_tests", "tests": tests},
            }
        )
    return out
