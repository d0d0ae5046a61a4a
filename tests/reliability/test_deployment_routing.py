"""Several deployments behind one model name, against real upstreams on 127.0.0.1 (the fault server:
each deployment's ``model`` is the fault spec it serves, so the server's log says which one answered)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from faults.server import FaultServer
from podium.backends import BackendSet
from podium.engine import Engine
from podium.pool import Policy, Pool, parse_pool
from podium.reliability import BreakerRegistry, DeploymentsBusy, Layers, ModelCall, states_for
from podium.types import Budget, ChatMessage, CompletionRequest, RunStatus

ASK = CompletionRequest(messages=[ChatMessage(role="user", content="What is 6 * 7?")], max_tokens=32)


def pool(url: str, deployments: list[dict[str, Any]], routing: str = "simple-shuffle", **extra: Any) -> Pool:
    entry = {"name": "gpt", "backend": "openai", "base_url": url, "max_retries": 0, "routing": routing}
    entry |= {"breaker_threshold": 0, "timeout_s": 5, "deployments": deployments, **extra}
    backup = {"name": "backup", "backend": "openai", "base_url": url, "model": "ok/backup", "max_retries": 0}
    config = {"name": "dep", "models": [entry, backup], "defaults": {"worker": "gpt"}}
    return parse_pool(yaml.safe_dump(config), "deployments pool")


def dep(name: str, fault: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": f"{fault}/{name}", **extra}


class Caller:
    """Logical calls of one model through podium's one call path (a fresh BackendSet per test)."""

    def __init__(self, p: Pool) -> None:
        self.pool = p
        self.backends = BackendSet()
        self.layers = Layers(self.backends, BreakerRegistry())

    async def call(self, names: tuple[str, ...] = ("gpt",), stream: bool = False, view: Pool | None = None) -> str:
        specs = [(view or self.pool).get(n) for n in names]
        sink = (lambda spec, text: None) if stream else None
        served = await ModelCall(self.layers, specs, ASK).run(sink)
        assert served is not None
        return served.spec.name

    async def aclose(self) -> None:
        await self.backends.aclose()


def served_by(server: FaultServer, names: list[str], fault: str = "ok") -> dict[str, int]:
    return {n: server.requests_for(f"{fault}/{n}") for n in names}


async def test_simple_shuffle_follows_weights_and_its_seed(fault_server: FaultServer) -> None:
    deps = [dep("a", "ok", weight=1), dep("b", "ok", weight=1), dep("c", "ok", weight=2)]
    caller = Caller(pool(fault_server.url, deps, routing_seed=11))
    before = served_by(fault_server, ["a", "b", "c"])
    for _ in range(120):
        await caller.call()
    after = served_by(fault_server, ["a", "b", "c"])
    counts = {n: after[n] - before[n] for n in after}
    assert sum(counts.values()) == 120
    assert 18 <= counts["a"] <= 42 and 18 <= counts["b"] <= 42 and 45 <= counts["c"] <= 75, counts
    # the seed fixes the order: two routers with the same seed pick the same deployments
    again = Caller(pool(fault_server.url, deps, routing_seed=11))
    orders = [again.layers.get(again.pool.get("gpt")).order(ASK) for _ in range(20)]  # type: ignore[attr-defined]
    other = Caller(pool(fault_server.url, deps, routing_seed=11))
    assert orders == [other.layers.get(other.pool.get("gpt")).order(ASK) for _ in range(20)]  # type: ignore[attr-defined]
    await caller.aclose()


async def test_least_busy_spreads_concurrent_calls(fault_server: FaultServer) -> None:
    deps = [dep("lb1", "ok:0.3"), dep("lb2", "ok:0.3"), dep("lb3", "ok:0.3")]
    caller = Caller(pool(fault_server.url, deps, routing="least-busy"))
    await asyncio.gather(*(caller.call() for _ in range(9)))
    counts = served_by(fault_server, ["lb1", "lb2", "lb3"], "ok:0.3")
    assert counts == {"lb1": 3, "lb2": 3, "lb3": 3}
    # a slow deployment stays busy, so a stream of calls goes mostly to the fast one
    deps = [dep("slow", "ok:0.4"), dep("fast", "ok:0.02")]
    caller = Caller(pool(fault_server.url, deps, routing="least-busy"))

    async def later(i: int) -> str:
        await asyncio.sleep(0.05 * i)
        return await caller.call()

    await asyncio.gather(*(later(i) for i in range(12)))
    slow, fast = fault_server.requests_for("ok:0.4/slow"), fault_server.requests_for("ok:0.02/fast")
    assert slow + fast == 12 and fast >= 9, (slow, fast)
    await caller.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_latency_prefers_the_faster_upstream(fault_server: FaultServer, stream: bool) -> None:
    slow_fault, fast_fault = f"slow_first_byte:0.2/{stream}", f"ok/{stream}"
    deps = [dep("lat-slow", slow_fault), dep("lat-fast", fast_fault)]
    caller = Caller(pool(fault_server.url, deps, routing="latency"))
    for _ in range(10):
        await caller.call(stream=stream)
    slow = fault_server.requests_for(f"{slow_fault}/lat-slow")
    fast = fault_server.requests_for(f"{fast_fault}/lat-fast")
    assert (slow, fast) == (1, 9)  # each measured once, then only the faster one
    await caller.aclose()


async def test_cost_picks_the_cheapest_deployment(fault_server: FaultServer) -> None:
    deps = [dep("dear", "ok", input_usd_per_mtok=5.0), dep("cheap", "ok", input_usd_per_mtok=0.5)]
    caller = Caller(pool(fault_server.url, deps, routing="cost"))
    for _ in range(4):
        await caller.call()
    assert served_by(fault_server, ["dear", "cheap"]) == {"dear": 0, "cheap": 4}
    await caller.aclose()


async def test_rpm_and_tpm_limits_skip_a_deployment(fault_server: FaultServer) -> None:
    deps = [dep("rpm-a", "ok", rpm=2), dep("rpm-b", "ok", input_usd_per_mtok=1.0)]
    caller = Caller(pool(fault_server.url, deps, routing="cost"))
    for _ in range(5):
        await caller.call()
    assert served_by(fault_server, ["rpm-a", "rpm-b"]) == {"rpm-a": 2, "rpm-b": 3}
    deps = [dep("tpm-a", "ok", tpm=10), dep("tpm-b", "ok", input_usd_per_mtok=1.0)]
    caller2 = Caller(pool(fault_server.url, deps, routing="cost"))
    for _ in range(3):
        await caller2.call()
    assert served_by(fault_server, ["tpm-a", "tpm-b"]) == {"tpm-a": 1, "tpm-b": 2}  # one call uses > 10 tokens
    await caller.aclose()
    await caller2.aclose()


async def test_all_deployments_over_limit_falls_to_the_next_model(fault_server: FaultServer) -> None:
    deps = [dep("full-a", "ok", rpm=1), dep("full-b", "ok", rpm=1)]
    p = pool(fault_server.url, deps, routing="cost", fallbacks=["backup"])
    caller = Caller(p)
    assert [await caller.call(("gpt", "backup")) for _ in range(3)] == ["gpt", "gpt", "backup"]
    spec = p.get("gpt")
    with pytest.raises(DeploymentsBusy) as busy:
        await caller.layers.get(spec).complete(ASK)
    assert busy.value.status == 429 and 55 < (busy.value.retry_after or 0) <= 60
    # advancing the clock past the window frees them
    states = states_for(caller.backends)
    states.clock = lambda: 1e9
    assert await caller.call(("gpt", "backup")) == "gpt"
    # and in the engine: the run's worker falls back to the next model and the trace says so
    engine = Engine(p, "fixed:gpt", backends=caller.backends, breakers=BreakerRegistry())
    states.clock = lambda: 1e9 + 1  # both deployments used once within this minute again
    await caller.call()
    result = await engine.run("What is 6 * 7?", budget=Budget(max_turns=1))
    assert result.status == RunStatus.ANSWERED, result.reason
    assert result.turns[0].model == "backup" and result.turns[0].fallback_from == "gpt"
    assert any("over its rpm/tpm limit" in a for a in result.turns[0].attempts), result.turns[0].attempts
    await caller.aclose()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_failing_deployment_falls_to_another(fault_server: FaultServer, stream: bool) -> None:
    deps = [dep(f"bad{stream}", "http:500"), dep(f"good{stream}", "ok", input_usd_per_mtok=1.0)]
    caller = Caller(pool(fault_server.url, deps, routing="cost"))
    for _ in range(3):
        assert await caller.call(stream=stream) == "gpt"
    assert fault_server.requests_for(f"http:500/bad{stream}") == 3
    assert fault_server.requests_for(f"ok/good{stream}") == 3
    await caller.aclose()


async def test_policy_excluding_a_region_excludes_its_deployment(fault_server: FaultServer) -> None:
    deps = [dep("pol-us", "ok", region="us"), dep("pol-eu", "ok", region="eu")]
    p = pool(fault_server.url, deps, routing="simple-shuffle", routing_seed=3)
    caller = Caller(p)
    eu = p.restrict(Policy(allowed_regions=["eu"]))
    assert [d.name for d in eu.get("gpt").deployment_specs()] == ["gpt@pol-eu"]
    assert eu.get("gpt") is p.restrict(Policy(allowed_regions=["eu"])).get("gpt")  # one view, one stack
    for _ in range(8):
        await caller.call(view=eu)
    assert served_by(fault_server, ["pol-us", "pol-eu"]) == {"pol-us": 0, "pol-eu": 8}
    for _ in range(8):
        await caller.call()
    assert fault_server.requests_for("ok/pol-us") > 0  # unrestricted, both serve
    assert "gpt" not in p.restrict(Policy(allowed_regions=["cn"])).models
    assert "gpt" not in p.restrict(Policy(allowed_providers=["nobody"])).models
    await caller.aclose()


def test_deployment_errors_name_the_model_and_deployment() -> None:
    from podium.errors import ConfigError

    bad = {"name": "p", "models": [{"name": "m", "backend": "openai", "deployments": [{"name": "x"}]}]}
    with pytest.raises(ConfigError, match="base_url"):
        parse_pool(yaml.safe_dump(bad), "p.yaml")
    bad["models"][0]["deployments"] = [{"base_url": "http://127.0.0.1:1/v1", "rpm": 0}]
    with pytest.raises(ConfigError, match="rpm"):
        parse_pool(yaml.safe_dump(bad), "p.yaml")
    bad["models"][0]["routing"] = "fastest"
    with pytest.raises(ConfigError, match="routing"):
        parse_pool(yaml.safe_dump(bad), "p.yaml")
    two = [
        {"name": "a", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "KEY_A"},
        {"name": "b", "base_url": "http://127.0.0.1:2/v1"},
    ]
    ok = parse_pool(
        yaml.safe_dump({"name": "p", "models": [{"name": "m", "backend": "openai", "deployments": two}]}), "p"
    )
    a, b = ok.get("m").deployment_specs()
    assert (a.api_key_env, b.api_key_env) == ("KEY_A", None)  # the first deployment's keys never leak to another
    assert b.base_url == "http://127.0.0.1:2/v1"


async def test_pool_check_probes_every_deployment() -> None:
    import socket

    from podium.cli.pool import probe_all

    ports = []
    for _ in range(2):
        with socket.socket() as s:  # bound then closed: nobody listens there
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    deps = [{"name": f"d{i}", "base_url": f"http://127.0.0.1:{p}/v1"} for i, p in enumerate(ports)]
    config = {"name": "p", "models": [{"name": "m", "backend": "openai", "deployments": deps}]}
    problems = await probe_all(parse_pool(yaml.safe_dump(config), "p"))
    assert "m@d0: cannot reach" in (problems["m"] or "") and "m@d1: cannot reach" in (problems["m"] or "")
