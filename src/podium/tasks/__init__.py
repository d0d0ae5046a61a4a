"""Task sets with executable checks, for live benchmarks and training.

:func:`load_tasks` reads a JSONL file (optionally ``.gz``) and detects each record's format:

- **GSM8K** ``{"question", "answer"}``: the check is the number after ``####`` in ``answer``.
- **MBPP** ``{"task_id", "text", "test_list", "test_setup_code"?}``: the asserts are the tests; the
  prompt shows the first assert so the model knows the expected function name and signature.
- **HumanEval** ``{"task_id", "prompt", "test", "entry_point"}``: ``check(entry_point)`` runs the tests.
- **podium's own** ``{"id", "prompt", "check": {"type": "exact|regex|number|python_tests", ...}, "family"?}``.

A bad record raises :class:`TaskFileError` naming the file and line.
"""

from __future__ import annotations

from .loaders import Task, TaskFileError, load_tasks, parse_record

__all__ = ["Task", "TaskFileError", "load_tasks", "parse_record"]
