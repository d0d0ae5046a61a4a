"""``podium.__all__`` is the public API: pinned here so adding or dropping a name is a deliberate change."""

from __future__ import annotations

import types
from importlib import resources

import podium

PUBLIC = [
    "Budget",
    "Completion",
    "CompletionRequest",
    "Decision",
    "Engine",
    "ModelSpec",
    "Policy",
    "Pool",
    "Role",
    "RunResult",
    "RunStatus",
    "Turn",
    "Verdict",
    "aask",
    "ask",
    "load_pool",
]


def test_all_is_pinned_and_sorted() -> None:
    assert podium.__all__ == PUBLIC
    assert podium.__all__ == sorted(podium.__all__, key=lambda n: (n[0].islower(), n))


def test_every_public_non_module_attribute_is_exported_and_resolves() -> None:
    for name in podium.__all__:  # imported on first use
        assert getattr(podium, name).__module__.startswith("podium."), name
    public = {
        name
        for name, value in vars(podium).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(podium.__all__)
    assert set(podium.__all__) <= set(dir(podium))


def test_importing_podium_does_not_import_the_engine() -> None:
    import subprocess
    import sys

    script = (
        "import sys, podium; print('podium.engine' in sys.modules); podium.ask; print('podium.engine' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "True"], proc.stderr


def test_the_package_ships_its_type_marker() -> None:
    assert (resources.files("podium") / "py.typed").is_file()
