"""Diff two ``podium eval replay --json-out`` files field by field, ignoring timing fields.

Usage: python bench/replay_diff.py OLD.json NEW.json [--dataset NAME ...]
Exit 0 when every non-timing field is identical (floats compared exactly), 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TIMING = {
    "seconds",
    "latency_ms",
    "p50_ms_fresh",
    "p50_ms_hit",
    "p99_ms_fresh",
    "p99_ms_hit",
    "train_seconds",
    "created",
}


def diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in TIMING or "ms" in key.split("_"):
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'new' if key not in a else 'old'}")
                continue
            diff(a[key], b[key], f"{path}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        out.append(f"{path}: {a!r} != {b!r}")


def main(argv: list[str]) -> int:
    old, new = (json.load(open(p)) for p in argv[:2])
    only = set(argv[argv.index("--dataset") + 1 :]) if "--dataset" in argv else None
    olds = {r["dataset"]["name"]: r for r in old["results"]}
    news = {r["dataset"]["name"]: r for r in new["results"]}
    out: list[str] = []
    names = sorted(only or (set(olds) | set(news)))
    for name in names:
        if name not in olds or name not in news:
            out.append(f"{name}: missing in {'old' if name not in olds else 'new'}")
            continue
        diff(olds[name], news[name], name, out)
    for line in out[:50]:
        print(line)
    print(f"{len(out)} differences in {', '.join(names)}" if out else f"identical: {', '.join(names)}")
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
