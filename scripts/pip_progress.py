"""Show a long ``pip install -v`` as a few readable lines (used by the Makefile).

Reads pip's verbose output on stdin, keeps all of it in the log file named by the first argument,
and prints pip's top-level lines (Collecting, Building wheel, Successfully installed) plus, every
15 s, a line with the time elapsed and the compile step llama.cpp has reached, so a long build
never looks hung. On a failed install the last 40 log lines are printed.
"""

from __future__ import annotations

import re
import sys
import threading
import time

STEP = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\]|\[\s*(\d+)%\]")
KEEP = ("Collecting ", "Building wheel", "Created wheel", "Successfully ", "Installing collected", "ERROR")
TICK_S = 15.0


def ticker(state: dict, done: threading.Event) -> None:
    """Every TICK_S seconds: elapsed time and the last build step seen."""
    while not done.wait(TICK_S):
        elapsed = int(time.monotonic() - state["start"])
        where = f"llama.cpp build {state['step']}" if state["step"] else state["phase"]
        print(f"  ... {elapsed // 60}m{elapsed % 60:02d}s elapsed; {where}", flush=True)


def main() -> int:
    state = {"start": time.monotonic(), "step": "", "phase": "resolving and downloading packages"}
    done = threading.Event()
    threading.Thread(target=ticker, args=(state, done), daemon=True).start()
    tail: list[str] = []
    with open(sys.argv[1], "w") as log:
        for line in sys.stdin:
            log.write(line)
            tail = (tail + [line])[-40:]
            text = line.strip()
            match = STEP.search(text)
            if match:
                state["step"] = f"step {match[1]}/{match[2]}" if match[1] else f"at {match[3]}%"
            if text.startswith(KEEP) and "Requirement already" not in text:
                state["phase"] = text[:80]
                print(f"  {text[:110]}", flush=True)
    done.set()
    if any(l.lstrip().startswith("ERROR") for l in tail):
        sys.stdout.write("".join(tail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
