"""The verdict grammar on the real embedded model: every verifier reply ends with the protocol line."""

from __future__ import annotations

import re

from podium import Engine, Role, RunStatus, load_pool
from podium.backends.local import LocalBackend
from podium.roles import DEFAULT_PROMPTS, parse_verdict
from podium.types import ChatMessage, CompletionRequest

PROTOCOL = re.compile(r"\nVERDICT: (ACCEPT|REVISE)$")
CASES = [
    ("What is 17 * 23?", "17 * 23 = 391"),
    ("What is the capital of France?", "The capital of France is Berlin."),
    ("Write a Python function that returns the square of x.", "```python\ndef square(x):\n    return x * x\n```"),
]


async def test_grammar_forces_the_protocol_line() -> None:
    backend = LocalBackend(load_pool("embedded").get("smollm2-precise"))
    for query, answer in CASES:
        prompt = DEFAULT_PROMPTS["verifier"].format(query=query, answer=answer)
        completion = await backend.complete(
            CompletionRequest(messages=[ChatMessage(role="user", content=prompt)], max_tokens=160, structured="verdict")
        )
        found = PROTOCOL.search(completion.text)
        assert found, completion.text
        assert parse_verdict(completion.text)[0].value == found.group(1)


async def test_embedded_run_reads_a_protocol_verdict() -> None:
    result = await Engine(load_pool("embedded"), "rules").run("What is 2 + 2?", budget=None)
    verifier = [t for t in result.turns if t.role == Role.VERIFIER and not t.error]
    assert verifier, result.turns
    assert all(PROTOCOL.search(t.output) for t in verifier)
    assert result.status in (RunStatus.ACCEPTED, RunStatus.MAX_TURNS)
