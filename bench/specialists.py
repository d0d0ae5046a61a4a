"""A scripted pool of specialists for bench_conductor.py: every model is right only on its own kind of
subtask, and each task needs several kinds combined.

Tasks have 1-3 parts, each of one kind: ``arith`` (multiply two numbers), ``reverse`` (reverse a word)
or ``count`` (count a letter in a word). The answer is ``FINAL: v1|v2|v3``.

Models (scripted functions of the prompt they receive, nothing else):

- ``calc`` / ``lexi`` / ``tally``: right (90%) on arith / reverse / count parts, wrong on the others.
- ``generalist``: right on any part half of the time.
- A model answers the parts its prompt asks for (``Solve only part B`` in a focused instruction,
  else every part of the task). For a part outside its specialty it adopts the most common value
  among the earlier outputs it was shown (ties: the first), else guesses (wrong). A verifier checks
  the parts of its own kind and says REVISE when one is wrong.
- ``conductor``: the scripted conductor. It reads the model cards it is shown (their ``strengths``
  tags) and the task's parts, gives each part to the model whose tags match it with a focused
  instruction, and adds a merge step. It is a script, not a trained model: the benchmark measures
  what such a plan does when run through podium's workflow engine, not how well a model plans.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass

KINDS = ("arith", "reverse", "count")
SPECIALTY = {"calc": "arith", "lexi": "reverse", "tally": "count"}
TAGS = {"arith": "arithmetic", "reverse": "spelling", "count": "counting"}
WORDS = ["podium", "conductor", "orchestra", "violin", "tempo", "harmony", "melody", "rhythm", "cadence", "sonata"]
PART = re.compile(r"^([A-C])\) (multiply (\d+) by (\d+)|reverse the word (\w+)|count the letter (\w) in (\w+))$", re.M)
VALUE = re.compile(r"\b([A-C])=([^\s;|]+)")
ONLY = re.compile(r"Solve only part ([A-C])")
ACCURACY = 0.9
GENERALIST_ACCURACY = 0.5


@dataclass
class Task:
    """One benchmark item: the question text and the expected final answer."""

    id: str
    question: str
    answer: str
    kinds: list[str]


def make_tasks(n: int, seed: int = 7) -> list[Task]:
    """``n`` tasks with 1-3 parts of random kinds (deterministic)."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        kinds = [rng.choice(KINDS) for _ in range(rng.choice((1, 2, 2, 3, 3)))]
        lines, answers = [], []
        for label, kind in zip("ABC", kinds):
            if kind == "arith":
                a, b = rng.randint(12, 99), rng.randint(12, 99)
                lines.append(f"{label}) multiply {a} by {b}")
                answers.append(str(a * b))
            elif kind == "reverse":
                word = rng.choice(WORDS)
                lines.append(f"{label}) reverse the word {word}")
                answers.append(word[::-1])
            else:
                word = rng.choice(WORDS)
                letter = rng.choice(sorted(set(word)))
                lines.append(f"{label}) count the letter {letter} in {word}")
                answers.append(str(word.count(letter)))
        question = "Solve every part, then give the answers in order as FINAL: v1|v2|v3.\n" + "\n".join(lines)
        tasks.append(Task(f"t{i:03d}", question, "|".join(answers), kinds))
    return tasks


def parts_of(text: str) -> dict[str, tuple[str, str]]:
    """Part label -> (kind, correct value), from the task lines in ``text``."""
    out = {}
    for m in PART.finditer(text):
        if m.group(3):
            out[m.group(1)] = ("arith", str(int(m.group(3)) * int(m.group(4))))
        elif m.group(5):
            out[m.group(1)] = ("reverse", m.group(5)[::-1])
        else:
            out[m.group(1)] = ("count", str(m.group(7).count(m.group(6))))
    return out


def _coin(*key: object) -> float:
    return int(hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _wrong(model: str, value: str) -> str:
    return f"{value}x" if not value.isdigit() else str(int(value) + 1 + sum(map(ord, model)) % 7)


def solve_part(model: str, label: str, kind: str, value: str, seen: list[str], salt: str, task: str = "") -> str:
    """What ``model`` answers for one part, given the values for it in the outputs it was shown.
    A specialist's rare mistakes depend on the whole task (``task``), not on the part alone."""
    if SPECIALTY.get(model) == kind:
        return value if _coin(model, label, value, task, "own") < ACCURACY else _wrong(model, value)
    if seen:
        counts = Counter(seen)
        top = max(counts.values())
        return next(v for v in seen if counts[v] == top)
    if model == "generalist" and _coin(model, label, value, salt) < GENERALIST_ACCURACY:
        return value
    return _wrong(model, value)


def respond(model: str, text: str, salt: str = "") -> str:
    """A worker's reply: ``A=v; B=v; FINAL: v|v``, or a verifier's verdict when asked to check."""
    task_text, _, shown = text.partition("Output of step")
    parts = parts_of(text)
    if "Start your reply with ACCEPT or REVISE" in text:
        return verdict(model, parts, text)
    if "Do not solve the task" in text:  # a thinker writes a plan, not answers
        return "1. Solve each part on its own. 2. Report the answers in order after FINAL:."
    wanted = ONLY.findall(task_text) or sorted(parts)
    values = {}
    for label in wanted:
        if label not in parts:
            continue
        seen = [
            v
            for blk in ("Output of step" + shown).split("Output of step")[1:]
            for lbl, v in VALUE.findall(blk)
            if lbl == label
        ]
        values[label] = solve_part(model, label, *parts[label], seen, salt, "|".join(v for _, v in parts.values()))
    body = "; ".join(f"{k}={v}" for k, v in values.items())
    return f"{body}; FINAL: {'|'.join(values.values())}" if len(wanted) == len(parts) else body


def verdict(model: str, parts: dict[str, tuple[str, str]], text: str) -> str:
    """ACCEPT unless a part of the verifier's own kind has a wrong value in the answer it checks."""
    given = dict(VALUE.findall(text.split("Output of step")[-1]))
    for label, (kind, value) in parts.items():
        if SPECIALTY.get(model) == kind and given.get(label) not in (None, value):
            return f"REVISE: part {label} is wrong"
    return "ACCEPT"


def conductor(text: str) -> str:
    """The scripted conductor: one focused step per part, on the model whose card matches its kind, then a merge."""
    cards = {}
    for line in text.splitlines():
        m = re.match(r"- ([\w-]+): roles ([\w/]+); strengths: ([^;]+);", line)
        if m and "worker" in m.group(2):
            cards[m.group(1)] = [t.strip() for t in m.group(3).split(",")]
    parts = parts_of(text.split("Task:")[-1])
    fallback = next(iter(cards))
    steps = []
    for label, (kind, _) in sorted(parts.items()):
        model = next((name for name, tags in cards.items() if TAGS[kind] in tags), fallback)
        steps.append(
            {
                "id": f"part{label}",
                "model": model,
                "role": "worker",
                "access": ["query"],
                "instruction": f"Solve only part {label}. Reply as {label}=VALUE.",
            }
        )
    merger = "generalist" if "generalist" in cards else fallback
    steps.append(
        {
            "id": "merge",
            "model": merger,
            "role": "worker",
            "access": ["query", *[s["id"] for s in steps]],
            "instruction": "Combine the part answers below into the final answer, in order.",
        }
    )
    return json.dumps(
        {
            "reason": "each part to the specialist whose strengths match it, then a merge",
            "steps": steps,
            "final": "merge",
        }
    )


def check(reply: str | None, expected: str) -> bool:
    """Whether the reply's ``FINAL:`` line equals the expected answer."""
    m = re.search(r"FINAL:\s*([^\n]+)", reply or "")
    return bool(m) and m.group(1).strip().rstrip(".") == expected


POOL_YAML = """
name: specialists
description: scripted specialists (bench/specialists.py)
models:
  - {name: conductor, backend: scripted, roles: [coordinator], input_usd_per_mtok: 0.2, output_usd_per_mtok: 0.8, tags: [planning]}
  - {name: calc, backend: scripted, roles: [worker, verifier], input_usd_per_mtok: 0.5, output_usd_per_mtok: 1.5, tags: [arithmetic]}
  - {name: lexi, backend: scripted, roles: [worker, verifier], input_usd_per_mtok: 0.5, output_usd_per_mtok: 1.5, tags: [spelling]}
  - {name: tally, backend: scripted, roles: [worker, verifier], input_usd_per_mtok: 0.5, output_usd_per_mtok: 1.5, tags: [counting]}
  - {name: generalist, backend: scripted, roles: [thinker, worker, verifier], input_usd_per_mtok: 1.0, output_usd_per_mtok: 3.0, tags: [general]}
defaults: {thinker: generalist, worker: generalist, verifier: generalist, coordinator: conductor}
budget: {max_turns: 16}
"""
