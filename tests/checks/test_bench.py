"""``podium bench run`` end to end on scripted models, the report's statistics, --record, grades in the store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench_fakes import code_tasks, write_code_pool
from podium.benchmark.report import build_report
from podium.benchmark.stats import mcnemar_exact, percentile, wilson
from podium.traces.store import Store


def test_wilson_mcnemar_percentile_known_values() -> None:
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64) and mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, i) for i in range(3)) / 2**12)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5 and percentile([], 50) is None


def test_report_pairs_only_items_both_graded() -> None:
    def row(task: str, coord: str, passed: bool) -> dict:
        return {
            "task": task,
            "coordinator": coord,
            "passed": passed,
            "score": float(passed),
            "cost_usd": 0.1,
            "tokens": 10,
            "latency_s": 1.0,
            "calls": 1,
            "status": "answered",
            "family": None,
        }

    rows = [
        row("a", "fixed:m", False),
        row("b", "fixed:m", True),
        row("a", "rules", True),
        row("b", "rules", True),
        row("c", "rules", True),
        row("a", "rules", False),
    ]  # the later row for (a, rules) wins
    report = build_report(rows, ["rules", "fixed:m"])
    rules = report["coordinators"][0]
    assert report["best_single"] == "fixed:m"
    assert rules["items"] == 3 and rules["passed"] == 2
    assert rules["vs_best_single"] == {"items": 2, "wins": 0, "losses": 0, "p_value": 1.0}


def write_tasks(folder: Path, n: int) -> Path:
    path = folder / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in code_tasks(n)))
    return path


def test_bench_run_grounded_report_resume_record_and_grades(cli, tmp_path: Path) -> None:
    pool, tasks, out, rec = write_code_pool(tmp_path), write_tasks(tmp_path, 6), tmp_path / "out", tmp_path / "rec"
    code, stdout, stderr = cli(
        "bench",
        "run",
        str(tasks),
        "--pool",
        pool,
        "--coordinators",
        "rules",
        "--out",
        str(out),
        "--concurrency",
        "3",
        "--record",
        str(rec),
    )
    assert code == 0, stderr
    assert "[bench] 6 tasks x 3 coordinators: 18 runs to do" in stderr and "ETA" in stderr
    report = json.loads((out / "report.json").read_text())
    acc = {s["coordinator"]: s for s in report["coordinators"]}
    assert list(acc) == ["rules", "fixed:coder", "fixed:lazy"]
    # the coder fixes its code only when the check's failing assert comes back as the diagnosis
    assert (
        acc["rules"]["accuracy"] == 1.0
        and acc["fixed:coder"]["accuracy"] == 0.0
        and acc["fixed:lazy"]["accuracy"] == 0.0
    )
    assert acc["rules"]["calls_per_item"] == 3.0 and acc["fixed:coder"]["calls_per_item"] == 1.0  # plan, answer, fix
    assert acc["rules"]["vs_best_single"] == {"items": 6, "wins": 6, "losses": 0, "p_value": pytest.approx(2 / 64)}
    assert acc["rules"]["cost_usd_per_item"] > acc["fixed:coder"]["cost_usd_per_item"] > 0
    assert "| `rules` | 6 | 1.000 |" in (out / "report.md").read_text() and "p=0.0312" in stdout
    assert (out / "cost_accuracy.png").stat().st_size > 1000

    # resume: nothing graded is run again; a larger sample runs only the new items
    code, _, stderr = cli("bench", "run", str(tasks), "--pool", pool, "--coordinators", "rules", "--out", str(out))
    assert code == 0 and "0 runs to do" in stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 18

    # grades are stored with the traces
    store = Store.open()
    runs = list(store.iter_runs())
    assert len(runs) == 18 and "0002_run_grades" in store.migrations()
    graded = {(r["coordinator"], r["task_id"]): r for r in runs}
    assert (
        graded[("rules", "code/0")]["grade_score"] == 1.0
        and graded[("rules", "code/0")]["grade_source"] == "check:python_tests"
    )
    assert graded[("fixed:lazy", "code/0")]["grade_score"] == 0.0

    # --record: each pool model's graded single answer, in the replay format
    from podium.learned.replay import load_replay

    ds = load_replay(rec)
    assert ds.models == ["coder", "lazy"] and len(ds.item_ids) == 6 and (ds.scores == 0).all()
    assert json.loads((rec / "meta.json").read_text())["score_source"] == "graded"
    assert json.loads((rec / "models.json").read_text())["lazy"] == {
        "input_usd_per_mtok": 0.5,
        "output_usd_per_mtok": 0.5,
    }

    # traces export uses the grades, and says so
    code, stdout, _ = cli("traces", "export", "--format", "replay", str(tmp_path / "exp"))
    assert code == 0 and "scores: mixed" in stdout
    meta = json.loads((tmp_path / "exp" / "meta.json").read_text())
    assert meta["outcomes_by_source"] == {"graded": 18, "check": 6}  # + the rules runs' first, rejected answers


def test_bench_settings_are_pinned_and_errors_are_one_line(cli, tmp_path: Path) -> None:
    pool, tasks, out = write_code_pool(tmp_path), write_tasks(tmp_path, 2), tmp_path / "out"
    assert (
        cli("bench", "run", str(tasks), "--pool", pool, "--coordinators", "fixed", "--out", str(out), "--no-plot")[0]
        == 0
    )
    code, _, err = cli(
        "bench", "run", str(tasks), "--pool", pool, "--coordinators", "fixed", "--out", str(out), "--max-turns", "2"
    )
    assert code == 2 and "other settings (budget)" in err and "Traceback" not in err
    code, _, err = cli(
        "bench", "run", str(tasks), "--pool", pool, "--coordinators", "nonsense", "--out", str(tmp_path / "o2")
    )
    assert code == 2 and "unknown coordinator 'nonsense'" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    code, _, err = cli("bench", "run", str(bad), "--pool", pool, "--out", str(tmp_path / "o3"))
    assert code == 2 and f"{bad}:1: unknown record format" in err
    code, stdout, _ = cli("bench", "report", str(out), "--no-plot")
    assert code == 0 and "| `fixed` | 2 |" in stdout


def test_shards_split_one_out_folder_between_processes(cli, tmp_path: Path) -> None:
    pool, tasks, out = write_code_pool(tmp_path), write_tasks(tmp_path, 5), tmp_path / "out"
    base = (
        "bench",
        "run",
        str(tasks),
        "--pool",
        pool,
        "--coordinators",
        "fixed:coder",
        "--no-baselines",
        "--out",
        str(out),
        "--no-plot",
    )
    code, _, err = cli(*base, "--shard", "1/2")
    assert code == 0 and "2 tasks x 1 coordinators" in err
    code, stdout, err = cli(*base, "--shard", "0/2")
    assert code == 0 and "3 tasks x 1 coordinators" in err
    assert "| `fixed:coder` | 5 |" in stdout  # the report covers both shards
    assert sorted(json.loads(line)["task"] for line in (out / "results.jsonl").read_text().splitlines()) == [
        f"code/{i}" for i in range(5)
    ]
    code, _, err = cli(*base, "--shard", "2/2")
    assert code == 2 and "--shard 2/2: expected K/N" in err


def test_workflow_coordinators_are_benched_with_the_check_as_their_verifier(cli, tmp_path: Path) -> None:
    """In a grounded bench a workflow's verifier steps are the task's check (turns that are no model call)."""
    pool, tasks, out = write_code_pool(tmp_path), write_tasks(tmp_path, 2), tmp_path / "out"
    code, _, stderr = cli(
        "bench",
        "run",
        str(tasks),
        "--pool",
        pool,
        "--coordinators",
        "topology:chain",
        "--out",
        str(out),
        "--no-baselines",
        "--no-plot",
    )
    assert code == 0, stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["coordinator"] for r in rows] == ["topology:chain", "topology:chain"]
    assert all(r["status"] != "failed" and "error" not in r for r in rows), rows
    assert all(r["turns"] > r["calls"] for r in rows), rows  # the verify steps ran the check, not the planner


def test_shards_never_read_a_half_written_bench_json(tmp_path: Path) -> None:
    """Shards starting together on one --out read and rewrite bench.json; a reader must never see it empty."""
    import threading

    from podium.cli.bench import _settings

    settings = {"tasks": "t.jsonl", "pool": "p", "coordinators": ["rules"], "pad": "x" * 200_000}
    _settings(tmp_path, dict(settings))
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                json.loads((tmp_path / "bench.json").read_text())
            except Exception as exc:  # a half-written file, as the second shard saw it
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(200):
        _settings(tmp_path, dict(settings))
    stop.set()
    reader.join()
    assert errors == [] and [p.name for p in tmp_path.iterdir()] == ["bench.json"]
