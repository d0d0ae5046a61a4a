"""``podium train live --ray ADDRESS`` on the session's real Ray head (127.0.0.1): each generation's
candidate rollouts run as Ray tasks, with the same head as the local run for a fixed seed, on the
scripted pool with a known optimum; stopped mid-run, it resumes from its checkpoint to that same head."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench_fakes import arith_tasks, write_arith_pool

REPO = Path(__file__).resolve().parents[2]
LAM = 0.1
OPTIMUM = 1 - LAM * 2.5  # see test_train_live.py
GENERATIONS = "8"


def train(tmp_path: Path, out: str, *extra: str) -> list[str]:
    pool = write_arith_pool(tmp_path)
    tasks = tmp_path / "arith.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in arith_tasks(3)))
    args = ["train", "live", str(tasks), "--pool", pool, "--out", str(tmp_path / out), "--generations", GENERATIONS]
    return [sys.executable, "-m", "podium", *args, "--popsize", "8", "--seed", "2", "--lam", str(LAM), *extra]


def env() -> dict[str, str]:
    paths = [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "meta"}


def test_train_live_on_ray_equals_local_and_resumes(ray_head: str, tmp_path: Path) -> None:
    local = subprocess.run(train(tmp_path, "local.npz"), env=env(), capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-2000:]
    expected = json.loads(local.stdout)
    assert expected["trained"]["reward"] == pytest.approx(OPTIMUM)  # the known optimum, found locally

    ckpt = tmp_path / "live.ckpt"
    args = train(tmp_path, "ray.npz", "--ray", ray_head, "--checkpoint", str(ckpt))
    stopped = subprocess.Popen(args, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    assert stopped.stderr is not None
    for line in stopped.stderr:
        seen.append(line)
        if line.startswith(f"[live] gen 3/{GENERATIONS}"):  # generations 1-2 are checkpointed (3 maybe)
            stopped.send_signal(signal.SIGKILL)  # the driver dies mid-run
            break
    stopped.wait(timeout=60)
    assert stopped.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    assert any("rollouts back from Ray" in s for s in seen)  # progress came back from the workers
    assert ckpt.is_file()

    resumed = subprocess.run([*args, "--resume"], env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[live] gen 1/" not in resumed.stderr and f"[live] gen {GENERATIONS}/" in resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["trained"] == expected["trained"] and got["rules"] == expected["rules"]
    mine, theirs = weights(tmp_path / "ray.npz"), weights(tmp_path / "local.npz")
    assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine)
