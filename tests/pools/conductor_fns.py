"""Scripted reply functions for tests/pools/conductor_server.yaml (imported by `podium serve` in the tests)."""

from __future__ import annotations

import json

FINAL = "The product 17 x 23 is 391: 17 x 20 = 340 plus 17 x 3 = 51."


def conductor(request) -> str:
    """Plans from the model cards it is shown: one step per worker model in parallel, then a merge."""
    text = "\n".join(m.content for m in request.messages)
    cards = [line[2:] for line in text.splitlines() if line.startswith("- ") and ": roles " in line]
    workers = [card.split(":")[0] for card in cards if "worker" in card.split(";")[0]]
    steps = [
        {
            "id": f"w{i + 1}",
            "model": m,
            "role": "worker",
            "instruction": f"Work on the task as {m}.",
            "access": ["query"],
        }
        for i, m in enumerate(workers[:2])
    ]
    merger = workers[0]
    steps.append(
        {
            "id": "merge",
            "model": merger,
            "role": "worker",
            "instruction": "MERGE the drafts into one answer.",
            "access": ["query", *[s["id"] for s in steps]],
        }
    )
    return json.dumps({"reason": "parallel drafts, then a merge", "steps": steps, "final": "merge"})


def worker(request) -> str:
    text = request.messages[-1].content
    return FINAL if text.startswith("MERGE") else "!sleep 0.2\ndraft: 391"
