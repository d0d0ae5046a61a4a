"""One podium home: every file podium keeps lands under the same ``$PODIUM_HOME``, ``~`` expanded."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.learned import encoders
from podium.paths import env_path, podium_home
from podium.reliability.breaker import breaker_file
from podium.traces import store


def test_tilde_in_podium_home_expands_the_same_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PODIUM_HOME", "~/ph")
    expected = tmp_path / "ph"
    assert podium_home() == expected
    assert store.default_path() == expected / "podium.db"
    assert encoders.podium_home() == expected
    monkeypatch.delenv("PODIUM_BREAKER_FILE", raising=False)
    assert breaker_file() == expected / "breakers.json"


def test_without_podium_home_the_user_data_dir_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_data_dir

    monkeypatch.delenv("PODIUM_HOME", raising=False)
    assert podium_home() == Path(user_data_dir("podium"))
    assert store.default_path() == Path(user_data_dir("podium")) / "podium.db"
    monkeypatch.setenv("PODIUM_HOME", "")  # empty counts as unset
    assert podium_home() == Path(user_data_dir("podium"))


def test_env_path_is_none_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODIUM_SOMETHING", raising=False)
    assert env_path("PODIUM_SOMETHING") is None
