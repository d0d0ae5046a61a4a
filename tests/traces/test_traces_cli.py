"""``podium traces`` as a user runs it (real subprocesses), and the exports it writes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from conftest import POOLS, REPO, Ran, default_sigint
from podium.traces.reports import winning_path
from podium.traces.store import Store
from podium.types import Role, RunResult, RunStatus, Turn
from store_seed import questions, seed, write_pool

SCRIPTED = str(POOLS / "scripted.yaml")


def env() -> dict[str, str]:
    """The test's environment (with its temp PODIUM_HOME), able to import the seed pool's functions."""
    paths = [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def podium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args], capture_output=True, text=True, timeout=timeout, env=env()
    )


@pytest.fixture
def traces_url(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PODIUM_TRACES_URL set to a SQLite file or a PostgreSQL schema: the commands below run on both."""
    monkeypatch.setenv("PODIUM_TRACES_URL", store_url)
    return store_url


def ok(proc: subprocess.CompletedProcess[str] | Ran) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.mark.usefixtures("traces_url")
def test_ask_then_ls_show_the_run(cli, podium_home: Path) -> None:
    answer = json.loads(ok(podium("ask", "--pool", SCRIPTED, "--json", "What is 17 * 23?")))
    trace_id = answer["trace_id"]
    runs = json.loads(ok(podium("traces", "ls", "--json")))
    assert [r["id"] for r in runs] == [trace_id]
    assert runs[0]["status"] == "accepted" and runs[0]["query"] == "What is 17 * 23?" and runs[0]["source"] == "cli"
    assert runs[0]["total_tokens"] == answer["total_tokens"] and runs[0]["models"] == ["checker", "planner", "solver"]
    shown = ok(cli("traces", "show", trace_id[:-2]))
    assert trace_id in shown and "answer: 391" in shown
    assert [
        line.split()[1:3] for line in shown.splitlines() if line.split()[1:2] in (["thinker"], ["worker"], ["verifier"])
    ] == [["thinker", "planner"], ["worker", "solver"], ["verifier", "checker"]]
    full = ok(cli("traces", "show", trace_id, "--full"))
    assert "Answer to check:" in full and "[response] ACCEPT: correct" in full
    detail = json.loads(ok(cli("traces", "show", trace_id, "--json")))
    assert [t["response"] for t in detail["turns"]] == ["1. Multiply. 2. Report.", "391", "ACCEPT: correct"]
    assert Store.open().count() == 1


def test_traces_off_stores_nothing(podium_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "off")
    ok(podium("ask", "--pool", SCRIPTED, "--json", "What is 17 * 23?"))
    assert not (podium_home / "podium.db").exists()


def test_interrupted_cli_run_is_stored(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = tmp_path / "hang.yaml"
    pool.write_text(
        "name: hang\nmodels:\n  - name: hang\n    backend: scripted\n    function: store_seed:marker_then_sleep\n"
    )
    marker = tmp_path / "started"
    monkeypatch.setenv("SEED_MARKER", str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "ask", "--pool", str(pool), "--json", "a question to interrupt"],
        env=env(),
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    runs = json.loads(ok(cli("traces", "ls", "--json", "--status", "interrupted")))
    assert [(r["query"], r["status"], r["reason"]) for r in runs] == [
        ("a question to interrupt", "interrupted", "interrupted")
    ]


@pytest.mark.usefixtures("traces_url")
def test_stats_audit_and_filters(cli, podium_home: Path) -> None:
    seed(Store.open(), questions(2))  # [math] and [code], once with each worker
    stats = {s["model"]: s for s in json.loads(ok(cli("traces", "stats", "--json")))}
    assert sorted(stats) == ["code-us", "judge", "math-eu", "planner"]
    assert stats["planner"]["calls"] == 4 and stats["planner"]["accept_rate"] == 0.5
    assert stats["math-eu"]["calls"] == 2 and stats["math-eu"]["failure_rate"] == 0.0
    assert stats["judge"]["verifier_accept_share"] == 0.5
    assert stats["code-us"]["latency_p95_s"] >= stats["code-us"]["latency_p50_s"] >= 0
    assert "p95 s" in ok(cli("traces", "stats"))
    assert len(json.loads(ok(cli("traces", "ls", "--json", "--model", "code-us")))) == 2
    assert len(json.loads(ok(cli("traces", "ls", "--json", "--status", "accepted")))) == 2
    assert json.loads(ok(cli("traces", "ls", "--json", "--since", "2999-01-01"))) == []

    clean = cli("traces", "audit", "--allowed-regions", "eu,us", "--json")
    assert json.loads(ok(clean)) == []
    found = cli("traces", "audit", "--allowed-regions", "eu", "--json")
    assert found.returncode == 1
    violations = json.loads(found.stdout)
    assert len(violations) == 2 and {v["model"] for run in violations for v in run["violations"]} == {"code-us"}
    assert "2 of 4 runs sent data outside eu" in cli("traces", "audit", "--allowed-regions", "eu").stderr


@pytest.mark.usefixtures("traces_url")
def test_audit_counts_failed_attempts_and_unknown_regions(cli, podium_home: Path) -> None:
    result = RunResult(query="q", status=RunStatus.ACCEPTED, pool="p")
    result.turns = [
        Turn(
            turn=1,
            role=Role.WORKER,
            model="eu-backup",
            region="eu",
            fallback_from="us-main",
            output="x",
            attempts=["us-main: HTTP 503", "ghost: refused"],
        ),
        Turn(turn=2, role=Role.VERIFIER, model="us-main", region="us", error="timeout", attempts=["us-main: timeout"]),
    ]
    Store.open().record(result)
    other = RunResult(query="q2", status=RunStatus.ACCEPTED, pool="p")
    other.turns = [Turn(turn=1, role=Role.WORKER, model="eu-backup", region="eu", output="y")]
    Store.open().record(other)
    found = json.loads(cli("traces", "audit", "--allowed-regions", "eu", "--json").stdout)
    assert [f["run_id"] for f in found] == [result.run_id]
    got = {(v["turn"], v["model"], v["region"], v["call_failed"]) for v in found[0]["violations"]}
    assert got == {(1, "us-main", "us", True), (1, "ghost", "unknown", True), (2, "us-main", "us", True)}


def test_bad_input_is_one_clean_error(cli, podium_home: Path) -> None:
    for args, needle in [
        (("traces", "ls", "--since", "last tuesday"), "not a date"),
        (("traces", "show", "run_nope"), "no stored run"),
        (("traces", "purge", "--before", "soon", "--yes"), "not a date"),
        (("traces", "export", "--format", "replay"), "needs an output folder"),
    ]:
        proc = podium(*args) if args[1] == "ls" else cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and needle in proc.stderr


@pytest.mark.usefixtures("traces_url")
def test_purge_cli(cli, podium_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(Store.open(), questions(1))
    assert "deleted 0 runs" in ok(cli("traces", "purge", "--before", "2001-01-01", "--yes"))
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    refused = cli("traces", "purge", "--before", "2999-01-01")  # without --yes it asks; the answer is no
    assert "delete 2 runs" in refused.stdout + refused.stderr
    assert refused.returncode != 0 and Store.open().count() == 2
    assert "deleted 2 runs" in ok(cli("traces", "purge", "--before", "2999-01-01", "--yes"))
    assert Store.open().count() == 0


def test_winning_path_skips_rejected_answers_and_errors() -> None:
    def t(role: str, model: str, verdict: str | None = None, error: str | None = None) -> dict:
        return {"role": role, "model": model, "verdict": verdict, "error": error}

    turns = [
        t("thinker", "p"),
        t("worker", "bad"),
        t("verifier", "v", "REVISE"),
        t("worker", "x", error="boom"),
        t("worker", "good"),
        t("verifier", "v", "ACCEPT"),
    ]
    assert [(s["role"], s["model"]) for s in winning_path(turns)] == [
        ("thinker", "p"),
        ("worker", "good"),
        ("verifier", "v"),
    ]


@pytest.mark.usefixtures("traces_url")
def test_export_sft(cli, podium_home: Path, tmp_path: Path) -> None:
    seed(Store.open(), questions(2))
    out = tmp_path / "sft.jsonl"
    proc = cli("traces", "export", "--format", "sft", str(out))
    assert "wrote 6 sft records" in ok(proc) + proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(r) == {"instruction", "input", "output"} for r in records)
    assert [r["output"] for r in records] == [
        "thinker planner",
        "worker math-eu",
        "verifier judge",
        "thinker planner",
        "worker code-us",
        "verifier judge",
    ]
    assert "[math] question number 0" in records[1]["input"] and "1. thinker planner" in records[1]["input"]
    assert "Turns so far:\n(none)" in records[0]["input"]
    assert ok(cli("traces", "export", "--format", "sft")).count("\n") == 6  # stdout by default


def test_export_replay_format(cli, podium_home: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq  # the train extra

    seed(Store.open(), questions(6))
    out = tmp_path / "replay"
    assert "wrote 6 items" in ok(cli("traces", "export", "--format", "replay", str(out)))
    items = pq.read_table(out / "items.parquet")
    outcomes = pq.read_table(out / "outcomes.parquet")
    assert items.column_names == ["item_id", "task", "split", "text"]
    assert outcomes.column_names == ["item_id", "model", "score", "cost_usd", "output_chars"]
    assert json.loads((out / "models.json").read_text()) == {}
    rows = items.to_pylist()
    assert all(r["split"] == ("train" if zlib.crc32(r["item_id"].encode()) % 10 < 7 else "test") for r in rows)
    text_of = {r["item_id"]: r["text"] for r in rows}
    for o in outcomes.to_pylist():
        good = ("[math]" in text_of[o["item_id"]]) == (o["model"] == "math-eu")
        assert o["score"] == (1.0 if good else 0.0) and o["cost_usd"] > 0 and o["output_chars"] > 0
    assert len(outcomes) == 12


def test_export_replay_then_eval_replay(cli, podium_home: Path, tmp_path: Path) -> None:
    """Done-when: runs made with the scripted backend, exported, then evaluated by ``podium eval replay``;
    and the loop closes: a coordinator trained on the export routes new questions to the right expert."""
    seed(Store.open(), questions(40))
    out = tmp_path / "mine"
    ok(cli("traces", "export", "--format", "replay", str(out)))
    results = tmp_path / "eval.json"
    proc = podium("eval", "replay", str(out), "--json-out", str(results), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report = json.loads(results.read_text())["results"][0]
    assert report["dataset"]["name"] == "mine" and report["dataset"]["items"] == 40 and report["dataset"]["models"] == 2
    score = {m["method"]: m["score"] for m in report["methods"]}
    assert score["learned"] > score["best_single"] and score["oracle"] == 1.0

    head = tmp_path / "head.npz"
    ok(cli("train", "replay", str(out), "--out", str(head), "--generations", "30", "--quiet"))
    pool = write_pool(tmp_path)
    for question, expert in [("[code] a brand new question", "code-us"), ("[math] another new one", "math-eu")]:
        run = json.loads(ok(cli("ask", "--pool", str(pool), "--coordinator", f"learned:{head}", "--json", question)))
        assert run["status"] == "accepted" and [t["model"] for t in run["turns"] if t["role"] == "worker"] == [expert]
