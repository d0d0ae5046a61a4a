"""Workflow coordinators from the command line: `podium ask --coordinator conductor|topology:NAME|workflow:PATH`,
`--show-plan`, `--json`, clean errors, and `podium traces show` printing the step graph."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import POOLS

POOL = str(POOLS / "conductor.yaml")


def podium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podium", *args], capture_output=True, text=True, timeout=60)


def test_topology_show_plan_and_table() -> None:
    proc = podium("ask", "--pool", POOL, "--coordinator", "topology:moa", "--show-plan", "What is 17 * 23?")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "plan (depth 0) from topology moa" in out and "workflow: 4 steps, final aggregate" in out
    assert "aggregate  worker   alpha" in out and "sees [query, p1, p2, p3]" in out
    assert "step aggregate" in out and "status: answered" in out


def test_json_carries_steps_and_the_workflow() -> None:
    proc = podium("ask", "--pool", POOL, "--coordinator", "topology:debate", "--max-parallel", "2", "--json", "q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["coordinator"] == "topology:debate" and data["status"] == "answered"
    assert [t["step"] for t in data["turns"]] == ["a1", "b1", "a2", "b2", "judge"]
    assert data["turns"][2]["inputs"] == ["query", "a1", "b1"]
    assert all(t["started_at"] <= t["ended_at"] for t in data["turns"])
    assert data["workflow"]["max_parallel"] == 2 and data["workflow"]["plans"][0]["origin"] == "topology debate"


def test_conductor_garbage_falls_back_and_trace_shows_the_graph() -> None:
    proc = podium("ask", "--pool", POOL, "--coordinator", "conductor", "--json", "q")  # its conductor replies "{}"
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["workflow"]["plans"][0]["origin"].startswith(
        "default topology chain: conductor output invalid after one repair"
    )
    shown = podium("traces", "show", data["trace_id"])
    assert shown.returncode == 0, shown.stderr
    assert "workflow graph:" in shown.stdout and "default topology chain" in shown.stdout
    lines = [
        line for line in shown.stdout.splitlines() if "|" in line and line.split()[0] in ("plan", "work", "verify")
    ]
    assert len(lines) == 3 and "query, work" in lines[2] and "ACCEPT" in lines[2]


def test_bad_coordinator_and_workflow_file_exit_2_in_one_line(tmp_path) -> None:
    proc = podium("ask", "--pool", POOL, "--coordinator", "topology:star", "q")
    assert proc.returncode == 2 and "unknown topology 'star'" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "wf.yaml"
    bad.write_text(
        "steps:\n  - {id: a, model: alpha, instruction: go, access: [query, b]}\n  - {id: b, model: beta, instruction: go, access: [a]}\n"
    )
    proc = podium("ask", "--pool", POOL, "--coordinator", f"workflow:{bad}", "q")
    assert proc.returncode == 2 and "cycle a -> b -> a" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    good = tmp_path / "ok.yaml"
    good.write_text("steps:\n  - {id: a, model: beta, instruction: go}\n")
    proc = podium("ask", "--pool", POOL, "--coordinator", f"workflow:{good}", "--region", "eu", "q")
    assert proc.returncode == 2 and "'beta' is not allowed by the policy" in proc.stderr
