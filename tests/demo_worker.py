"""A scripted worker for tests/cli/test_demo.py: deterministic in its prompt, like the seeded embedded
model. It answers a task wrongly, except after reviewer feedback (then correctly), and never
answers the 'hopeless' task correctly."""

from __future__ import annotations

from podium.types import CompletionRequest

RIGHT = {
    "add": "```python\ndef add(a, b):\n    return a + b\n```",
    "double": "```python\ndef double(x):\n    return 2 * x\n```",
}
WRONG = {
    "add": "```python\ndef add(a, b):\n    return a - b\n```",
    "double": "```python\ndef double(x):\n    return x\n```",
}


def answer(request: CompletionRequest) -> str:
    prompt = "\n".join(m.content for m in request.messages)
    if "hopeless" in prompt:
        return "I do not know."
    name = "add" if "add(" in prompt else "double"
    if "easy" in prompt or "Reviewer feedback" in prompt:
        return RIGHT[name]
    return WRONG[name]
