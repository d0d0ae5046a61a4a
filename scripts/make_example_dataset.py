"""Generate podium's shipped example replay dataset (src/podium/data/example/).

Synthetic and labelled as such: 300 questions in 5 task families, each with a recorded outcome for
4 models whose names match the scripted pool `replay-example`. The outcomes follow a stated skill
profile (each specialist is right ~85% of the time on its task family and ~25% elsewhere; the
generalist ~60% everywhere, at 4x the price), so a learned head has something real to find: route
by task, fall back to the generalist. Deterministic (seed 0). Needs pyarrow.

    python scripts/make_example_dataset.py [OUT_DIR]
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from pathlib import Path

MODELS = {  # name -> (task it is good at or None for all, price in/out USD per Mtok)
    "math-solver": ("arithmetic", (0.10, 0.40)),
    "code-writer": ("code", (0.10, 0.40)),
    "polyglot": ("translation", (0.10, 0.40)),
    "generalist": (None, (0.40, 1.60)),
}
WORDS = [
    "house",
    "river",
    "bread",
    "friend",
    "morning",
    "window",
    "garden",
    "letter",
    "mountain",
    "train",
    "apple",
    "school",
    "doctor",
    "summer",
    "bridge",
    "kitchen",
    "forest",
    "island",
]
LANGS = ["French", "German", "Spanish", "Italian", "Portuguese", "Dutch"]
COUNTRIES = [
    "France",
    "Japan",
    "Kenya",
    "Peru",
    "Canada",
    "Norway",
    "Egypt",
    "India",
    "Chile",
    "Poland",
    "Brazil",
    "Vietnam",
    "Ghana",
    "Mexico",
    "Sweden",
    "Turkey",
    "Nepal",
    "Morocco",
    "Greece",
    "Argentina",
]
CODE = [
    "reverses a list",
    "counts the vowels in a string",
    "returns the n-th Fibonacci number",
    "checks whether a number is prime",
    "merges two sorted lists",
    "removes duplicates from a list keeping order",
    "computes a factorial",
    "flattens a nested list",
    "parses a CSV line into fields",
    "checks whether a string is a palindrome",
    "sums the digits of an integer",
    "finds the largest element of a list",
    "converts Celsius to Fahrenheit",
    "counts word frequencies in a text",
    "validates an email address",
    "sorts a dictionary by value",
]
TOPICS = [
    "photosynthesis",
    "the water cycle",
    "compound interest",
    "plate tectonics",
    "the French revolution",
    "vaccines",
    "inflation",
    "black holes",
    "the immune system",
    "supply and demand",
    "climate change",
    "electricity",
    "the printing press",
    "natural selection",
    "tides",
    "the internet",
]


def question(task: str, rng: random.Random) -> str:
    """One templated question of a task family."""
    if task == "arithmetic":
        a, b, op = rng.randint(11, 99), rng.randint(3, 49), rng.choice(["*", "+", "-"])
        return rng.choice(
            [f"What is {a} {op} {b}?", f"Compute {a} {op} {b} and give the number.", f"Calculate {a} {op} {b}."]
        )
    if task == "code":
        return rng.choice(
            [
                "Write a Python function that {}.",
                "Implement in Python a function that {}.",
                "Python: write code that {}.",
                "Write a function in Python which {}.",
                "Give Python code for a function that {}.",
            ]
        ).format(rng.choice(CODE))
    if task == "translation":
        return f"Translate the word '{rng.choice(WORDS)}' into {rng.choice(LANGS)}."
    if task == "geography":
        return rng.choice(
            [
                f"What is the capital of {rng.choice(COUNTRIES)}?",
                f"Which continent is {rng.choice(COUNTRIES)} in?",
                f"Name the longest river in {rng.choice(COUNTRIES)}.",
            ]
        )
    topic, n = rng.choice(TOPICS), rng.choice(["two", "three", "four"])
    return rng.choice([f"Explain {topic} in {n} sentences.", f"Give a {n}-sentence explanation of {topic}."])


def rows(per_task: int = 60, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    items, outcomes, seen = [], [], set()
    for task in ("arithmetic", "code", "translation", "geography", "explain"):
        for _ in range(100 * per_task):  # templates have more than per_task distinct questions
            if sum(i["task"] == task for i in items) == per_task:
                break
            text = question(task, rng)
            if text in seen:
                continue
            seen.add(text)
            item_id = f"{task}-{len(items):03d}"
            split = "train" if zlib.crc32(item_id.encode()) % 10 < 7 else "test"
            items.append({"item_id": item_id, "task": task, "split": split, "text": text})
            for model, (skill, (p_in, p_out)) in MODELS.items():
                p = 0.6 if skill is None else (0.85 if skill == task else 0.25)
                chars = rng.randint(40, 400)
                cost = (len(text) / 4 * p_in + chars / 4 * p_out) / 1e6
                outcomes.append(
                    {
                        "item_id": item_id,
                        "model": model,
                        "score": float(rng.random() < p),
                        "cost_usd": round(cost, 10),
                        "output_chars": chars,
                    }
                )
    return items, outcomes


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(
        sys.argv[1]
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "src" / "podium" / "data" / "example"
    )
    out.mkdir(parents=True, exist_ok=True)
    items, outcomes = rows()
    pq.write_table(pa.Table.from_pylist(items), out / "items.parquet")
    pq.write_table(pa.Table.from_pylist(outcomes), out / "outcomes.parquet")
    prices = {m: {"input_usd_per_mtok": p[0], "output_usd_per_mtok": p[1]} for m, (_, p) in MODELS.items()}
    (out / "models.json").write_text(json.dumps(prices, indent=2) + "\n")
    (out / "README.md").write_text(__doc__.split("\n\n")[1] + "\n")
    print(f"wrote {len(items)} items, {len(outcomes)} outcomes to {out}")


if __name__ == "__main__":
    main()
