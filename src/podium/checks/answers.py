"""Reading a model's answer: its final answer, its final number, its code."""

from __future__ import annotations

import ast
import re

_HASHES = re.compile(r"####\s*(.+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(.+)", re.I)
_NUMBER = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PUNCT = " \t\n.!;:*\"'`"


def normalise(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding quotes, asterisks and final punctuation."""
    return re.sub(r"\s+", " ", text).strip(_PUNCT).lower()


def final_answer_candidates(text: str) -> list[str]:
    """Where a final answer may sit, most explicit first: ``####``, ``\\boxed{}``, "answer is",
    the last **bold** span, the last non-empty line, the whole text."""
    out: list[str] = []
    for pattern in (_HASHES, _BOXED, _ANSWER_IS, _BOLD):
        found = pattern.findall(text)
        if found:
            out.append(found[-1].strip().splitlines()[0] if found[-1].strip() else "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        out.append(lines[-1])
    out.append(text)
    return out


def _to_float(token: str) -> float | None:
    cleaned = token.replace(",", "").replace("$", "").replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The answer's final number: after the last ``####``, else in the last ``\\boxed{}``, else the
    last number of the text (GSM8K style; ``1,234``, ``$5``, ``-3.5``, ``40%`` read as numbers)."""
    for pattern in (_HASHES, _BOXED):
        found = pattern.findall(text)
        if found:
            numbers = _NUMBER.findall(found[-1])
            if numbers:
                return _to_float(numbers[0])
    numbers = _NUMBER.findall(text)
    return _to_float(numbers[-1]) if numbers else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def extract_code(text: str) -> str:
    """The Python code of an answer: its ```python (or untagged) fenced blocks that parse, joined;
    without fences the raw text, dropping leading prose lines until the rest parses."""
    blocks: list[tuple[str, str]] = _FENCE.findall(text)
    tagged = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    for group in (tagged, [body for lang, body in blocks if not lang]):
        good = [body for body in group if _parses(body)]
        if good:
            return "\n\n".join(good)
    if blocks:  # fenced but nothing parses: hand over the first python-ish block, its error helps
        return (tagged or [blocks[0][1]])[0]
    lines = text.splitlines()
    for start in range(len(lines)):
        candidate = "\n".join(lines[start:])
        if candidate.strip() and _parses(candidate):
            return candidate
    return text
