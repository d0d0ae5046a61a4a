"""Backend and coordinator registries: config errors name the key and the fix, unknown names list the
known ones, and plugin entry points that are broken or clash with a built-in cannot break podium."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from podium.backends import BACKENDS, BackendOptions, BackendSet, BackendType, build_backend, check_backend
from podium.backends.base import make_completion
from podium.backends.registry import ScriptedOptions
from podium.coordinators import COORDINATOR_TYPES, COORDINATORS, get_coordinator
from podium.errors import ConfigError, UsageError
from podium.pool import ModelSpec, parse_pool
from podium.registry import PluginWarning, Registry
from podium.types import ChatMessage, Completion, CompletionRequest, StreamDelta


def pool_error(models: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_pool(f"name: p\nmodels:\n{models}", "my-pool.yaml")
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_key_of_another_backend_is_an_error_naming_file_key_and_fix() -> None:
    message = pool_error("  - name: gpt\n    backend: openai\n    base_url: http://127.0.0.1:9/v1\n    replies: [hi]\n")
    assert message.startswith("my-pool.yaml: invalid pool config: models.0.replies: not a key of backend 'openai'")
    assert "it belongs to backend scripted" in message and "remove it" in message


def test_an_unknown_backend_lists_the_known_ones() -> None:
    message = pool_error("  - name: gpt\n    backend: opneai\n    base_url: http://127.0.0.1:9/v1\n")
    assert "models.0.backend: unknown backend 'opneai' (did you mean 'openai'?)" in message
    assert "known backends: openai, local, scripted, check" in message
    assert "base_url" not in message  # the unknown kind is the one problem reported, not its keys


def test_a_missing_backend_key_and_a_common_key_error_are_reported_together() -> None:
    message = pool_error("  - name: gpt\n    backend: openai\n    max_tokens: 0\n")
    assert "models.0.base_url: backend 'openai' needs this key" in message
    assert "models.0.max_tokens:" in message


def test_backend_keys_are_validated_into_the_kinds_options_model() -> None:
    spec = ModelSpec(name="s", backend="scripted", replies=["a", "b"])
    assert isinstance(spec.options, ScriptedOptions) and spec.options.replies == ["a", "b"]
    assert spec.replies == ["a", "b"]
    assert ModelSpec.model_validate(spec.model_dump()) == spec  # a dumped spec validates again


def test_check_backend_takes_only_the_verifier_role() -> None:
    check = "    backend: check\n    check: {type: regex, pattern: '4'}\n"
    assert parse_pool(f"name: p\nmodels:\n  - name: c\n{check}", "f").config.models[0].roles == ["verifier"]
    assert "can only take the roles verifier" in pool_error(f"  - name: c\n{check}    roles: [worker]\n")


def test_building_a_backend_of_an_unregistered_kind_fails_clearly() -> None:
    spec = ModelSpec(name="s", backend="scripted").model_copy(update={"backend": "gone"})
    with pytest.raises(ConfigError, match="unknown backend 'gone'; known backends: openai"):
        build_backend(spec)
    with pytest.raises(ConfigError, match="unknown backend 'gone'"):
        BackendSet().get(spec)


def test_builtins_are_registered_like_plugins() -> None:
    assert BACKENDS.names()[:4] == ["openai", "local", "scripted", "check"]
    assert all(isinstance(t, BackendType) for t in BACKENDS.entries())
    assert COORDINATOR_TYPES.names()[:7] == [
        "rules",
        "prompted",
        "fixed",
        "learned",
        "conductor",
        "topology",
        "workflow",
    ]
    assert get_coordinator("fixed:m").name == "fixed:m"


def test_an_unknown_coordinator_lists_every_registered_one() -> None:
    with pytest.raises(UsageError) as err:
        get_coordinator("rulez")
    assert "unknown coordinator 'rulez' (did you mean 'rules'?)" in str(err.value)
    assert all(usage in str(err.value) for usage in COORDINATORS)


def write_dist(site: Path, group: str, entries: dict[str, str], module: str) -> None:
    """An installed distribution, as pip leaves it: a module and a .dist-info with entry points."""
    (site / "podium_fake_plugin.py").write_text(module)
    info = site / "podium_fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: podium-fake-plugin\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")


def test_broken_or_clashing_plugins_warn_and_the_builtins_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = (
        "from podium.backends import BackendType\n"
        "from podium.backends.registry import _scripted\n"
        "CLASH = BackendType('openai', _scripted)\n"
        "EXTRA = BackendType('extra', _scripted)\n"
        "NOT_A_TYPE = 42\n"
    )
    group = "podium.test-registry"
    entries = {
        "openai": "podium_fake_plugin:CLASH",
        "extra": "podium_fake_plugin:EXTRA",
        "broken": "podium_fake_plugin_missing:X",
        "wrong": "podium_fake_plugin:NOT_A_TYPE",
    }
    write_dist(tmp_path, group, entries, module)
    monkeypatch.syspath_prepend(str(tmp_path))
    builtin = BackendType("openai", lambda spec, client: build_backend(spec, client))
    registry: Registry[BackendType] = Registry(group, BackendType, lambda r: r.register(builtin))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert registry.names() == ["openai", "extra"]
    assert registry.get("openai") is builtin
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, PluginWarning))
    assert len(messages) == 3
    assert any("'openai' is already registered" in m for m in messages)
    assert any("plugin 'broken'" in m and "cannot be loaded" in m for m in messages)
    assert any("must be a BackendType, got int" in m for m in messages)


class EchoOptions(BackendOptions):
    greeting: str = "hello"


class EchoBackend:
    """A third-party-style backend registered through the public API (no podium internals)."""

    def __init__(self, spec: ModelSpec, client: object) -> None:
        self.spec = spec
        assert isinstance(spec.options, EchoOptions)
        self.greeting = spec.options.greeting

    async def complete(self, request: CompletionRequest) -> Completion:
        return make_completion(self.spec, request, self.greeting, time.perf_counter())

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        yield StreamDelta(completion=await self.complete(request))

    async def check(self) -> str | None:
        return None if self.greeting else "empty greeting"

    async def aclose(self) -> None:
        return None


@pytest.fixture
def echo_kind() -> Iterator[None]:
    BACKENDS.register(BackendType("echo-test", EchoBackend, EchoOptions))
    yield
    BACKENDS.reset()  # back to the built-ins and installed plugins


async def test_a_registered_kind_validates_dumps_builds_and_checks(echo_kind: None) -> None:
    pool = parse_pool("name: p\nmodels:\n  - name: e\n    backend: echo-test\n    greeting: hi\n", "f.yaml")
    spec = pool.get("e")
    assert spec.options == EchoOptions(greeting="hi") and spec.replies is None
    dumped = spec.model_dump(exclude_none=True)
    assert dumped["greeting"] == "hi" and "options" not in dumped  # written flat, as in the pool file
    assert ModelSpec.model_validate(dumped) == spec
    backends = BackendSet()
    backend = backends.get(spec)  # the plugin's backend, inside the response-cache layer every model gets
    assert isinstance(getattr(backend, "inner", backend), EchoBackend) and await check_backend(backend) is None
    request = CompletionRequest(messages=[ChatMessage(role="user", content="x")], max_tokens=8)
    assert (await backend.complete(request)).text == "hi"
    await backends.aclose()
    assert "models.0.replies: not a key of backend 'echo-test'" in pool_error(
        "  - name: e\n    backend: echo-test\n    replies: [x]\n"
    )


async def test_a_backend_without_check_has_nothing_to_check() -> None:
    backend = BackendSet().get(ModelSpec(name="s", backend="scripted"))
    assert await check_backend(backend) is None
