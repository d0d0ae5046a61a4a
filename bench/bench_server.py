"""Throughput and latency of `podium serve` against LiteLLM's proxy, both in front of the same stub.

Everything runs on 127.0.0.1, each server in its own process:

- a stub OpenAI-compatible model server (a bare ASGI app under uvicorn, fixed reply, optional delay);
- ``podium serve`` with a one-model pool on the stub, API keys on, traces stored (and once with
  ``PODIUM_TRACES=off``), requests to the pool model (pass-through) and to the ``podium`` tier;
- ``litellm --config`` (LiteLLM proxy) routing the same model name to the stub, master key on;
- the stub itself, called directly: the ceiling any proxy can reach on this machine.

For each target and each concurrency (50 and 200 clients) a fixed number of non-streaming
requests is sent by an asyncio load generator, in ``--rounds`` rounds (every target in each round,
order rotated): ``--requests`` to each pass-through, ten times as many to the stub (``--stub-scale``)
and a quarter as many to the slow targets (the tier, LiteLLM), so each measurement lasts about as
long and none is only its start-up and tail. Ratios (podium / LiteLLM, podium / stub) are computed within a round, then reported
as min/median/max over rounds, with the machine's load. Writes bench/results/server.{json,md}.

The stub is measured again right before each podium pass-through target (``--stub-beside``, the
default), and a target's share of the stub is taken against the stub measured just before it: the
shared machine's speed drifts by up to twofold within a round of half a minute or more, which moved
a share measured against one stub run per round between 6% and 18% (session 14).

    .venv/bin/python bench/bench_server.py [--requests 1000] [--litellm /path/to/litellm] [--without-peer]

A missing or failing LiteLLM is an error (exit 2), never a silent omission; ``--without-peer``
measures podium against the stub only and says so in the results.

``--render FILE.json`` measures nothing: it computes a saved report's ratios again from its rounds'
rows (e.g. a ratio added since it was measured) and rewrites the file and its ``.md``.

LiteLLM is not a podium dependency: install it anywhere (``pip install 'litellm[proxy]'``) and
pass its ``litellm`` executable (default: ``litellm`` on PATH or next to this Python).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MODEL = "stub-model"
REPLY = "ACCEPT: the answer is 391."
PODIUM_KEY = "pk-bench-key"
LITELLM_KEY = "sk-bench-0123456789abcdef0123456789abcdef"


# --- the stub model server -------------------------------------------------------------------


def stub_app(delay_s: float):
    """A minimal OpenAI-compatible chat endpoint: a fixed reply, usage included, SSE if asked."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if delay_s:
            await asyncio.sleep(delay_s)
        data = json.loads(body or b"{}")
        usage = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
        if data.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": {"content": REPLY}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
            ]
            payload = "".join(
                f"data: {json.dumps({'id': 'x', 'object': 'chat.completion.chunk', 'created': 0, 'model': MODEL, **c})}\n\n"
                for c in chunks
            )
            out, ctype = (payload + "data: [DONE]\n\n").encode(), b"text/event-stream"
        else:
            out = json.dumps(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": 0,
                    "model": MODEL,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                }
            ).encode()
            ctype = b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})

    return app


def run_stub(port: int, delay_s: float) -> None:
    import uvicorn

    uvicorn.run(stub_app(delay_s), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float, headers: dict | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0, headers=headers).status_code < 500:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


def spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def write_configs(work: Path, stub_url: str) -> dict[str, Path]:
    import yaml

    sys.path.insert(0, str(REPO / "src"))
    from podium.server.auth import hash_key

    pool = {
        "name": "bench",
        "models": [
            {
                "name": MODEL,
                "backend": "openai",
                "base_url": stub_url,
                "model": MODEL,
                "max_tokens": 64,
                "max_retries": 0,
            }
        ],
    }
    keys = {
        "keys": [{"name": "bench", "sha256": hash_key(PODIUM_KEY), "rate_limit": {"requests_per_minute": 10_000_000}}]
    }
    litellm = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": stub_url, "api_key": "sk-none"},
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    paths = {"pool": work / "pool.yaml", "keys": work / "keys.yaml", "litellm": work / "litellm.yaml"}
    for name, data in (("pool", pool), ("keys", keys), ("litellm", litellm)):
        paths[name].write_text(yaml.safe_dump(data))
    return paths


def find_litellm(given: str | None) -> str | None:
    if given:
        return given if Path(given).exists() else None
    beside = Path(sys.executable).parent / "litellm"
    return str(beside) if beside.exists() else shutil.which("litellm")


# --- load generation -------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection: a lean client, so the load generator is not the bottleneck."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()  # type: ignore[union-attr]
        if not status_line:
            raise ConnectionError("connection closed")
        fields: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):  # type: ignore[union-attr]
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        data = await self._body(fields)
        if fields.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split()[1]), data

    async def _body(self, fields: dict[str, str]) -> bytes:
        reader = self.reader
        assert reader is not None
        if "content-length" in fields:
            return await reader.readexactly(int(fields["content-length"]))
        parts = []
        while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
            parts.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, model: str, key: str, concurrency: int, total: int) -> dict:
    """``total`` requests from ``concurrency`` concurrent keep-alive clients; each latency, wall time."""
    target = httpx.URL(url)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 32}
    ).encode()
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    left = [total]

    async def worker() -> None:
        conn = Conn(target.host, target.port or 80)
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            try:
                status, data = await conn.post(target.path, body, headers)
                ok = status == 200 and json.loads(data)["choices"][0]["message"]["content"]
            except (OSError, ValueError, KeyError, IndexError, asyncio.IncompleteReadError) as exc:
                conn.close()
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if not ok:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    pct = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None  # noqa: E731
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2) if latencies else None,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process and of every live process below it (Linux /proc):
    a server whose trace writer runs in a child process is charged that child's CPU too."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                return float("nan")
            continue  # a child that has just exited
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in children.read_text().split()]
    return total


def measure(name: str, url: str, model: str, key: str, concurrencies: list[int], total: int, pid: int) -> list[dict]:
    """Warm up, then one load run per concurrency; also the server's CPU time per request (less
    sensitive than throughput to other load on the machine)."""
    asyncio.run(load(url, model, key, min(20, total), min(100, total)))  # warm-up: connections, caches
    rows = []
    for c in concurrencies:
        cpu = cpu_seconds(pid)
        row = {"target": name, "model": model, **asyncio.run(load(url, model, key, c, total))}
        row["server_cpu_ms_per_request"] = round(1000 * (cpu_seconds(pid) - cpu) / max(1, row["ok"]), 3)
        print(
            f"  {name:<34} c={c:<4} {row['rps']:>8.1f} req/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
            f"cpu {row['server_cpu_ms_per_request']} ms/req  errors {row['errors'] or 0}",
            flush=True,
        )
        rows.append(row)
    return rows


# --- the run ---------------------------------------------------------------------------------


def start_podium(
    paths: dict[str, Path],
    work: Path,
    traces: str,
    transport: str = "lean",
    parser: str = "httptools",
    src: str | None = None,
    writer: str | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """``podium serve`` on the stub; ``src``: run the podium package of another source tree (a before);
    ``writer``: ``PODIUM_TRACE_WRITER`` (``process``: the trace writer in a child process); ``extra_env``
    is added to the server's environment (``src`` still comes first on its ``PYTHONPATH``)."""
    port = free_port()
    tag = f"{traces}-{transport}-{parser}" + ("-before" if src else "") + (f"-{writer}" if writer else "")
    tag += f"-{workers}w" if workers > 1 else ""
    env = {
        **os.environ,
        **({"PODIUM_TRACE_WRITER": writer} if writer else {}),
        "PODIUM_HOME": str(work / f"home-{tag}"),
        "PODIUM_TRACES": traces,
        "PODIUM_HTTP_TRANSPORT": transport,
        "PODIUM_HTTP_PARSER": parser,
        **(extra_env or {}),
    }
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [
        sys.executable,
        "-m",
        "podium",
        "serve",
        "--pool",
        str(paths["pool"]),
        "--keys",
        str(paths["keys"]),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    proc = spawn(cmd, env, work / f"podium-{tag}.log")
    wait_up(f"http://127.0.0.1:{port}/healthz", proc, 300)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


PEER_STARTUP_S = 1500  # LiteLLM's proxy imports for minutes on a loaded 2-core machine (10+ at load 25)


def start_litellm(exe: str, paths: dict[str, Path], work: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    proc = spawn(
        [exe, "--config", str(paths["litellm"]), "--host", "127.0.0.1", "--port", str(port)], env, work / "litellm.log"
    )
    startup = wait_up(f"http://127.0.0.1:{port}/health/liveliness", proc, PEER_STARTUP_S)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions", startup


class PeerMissing(SystemExit):
    """The peer could not be measured: the benchmark stops (exit 2) instead of reporting podium alone."""


def run(args: argparse.Namespace) -> dict:
    """Start every server, then measure every target in each of ``--rounds`` rounds (order rotated
    per round); ratios are computed within a round, then summarized as min/median/max over rounds."""
    exe = None if args.without_peer else find_litellm(args.litellm)
    if exe is None and not args.without_peer:  # before anything starts: fail fast
        start_peer(None, False, {}, Path("."), [], [])
    work = Path(tempfile.mkdtemp(prefix="podium-bench-"))
    stub_port = free_port()
    load_start = uptime()
    procs = [
        spawn(
            [sys.executable, __file__, "--stub", str(stub_port), "--stub-delay", str(args.stub_delay)],
            dict(os.environ),
            work / "stub.log",
        )
    ]
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    notes: list[str] = []
    try:
        wait_up(f"{stub_url}/models", procs[0], 300)
        paths = write_configs(work, stub_url)
        # each target's share of --requests, so that every measurement lasts about as long: the stub answers
        # ten times faster than podium (1000 requests were 70 ms of it: start and tail, not throughput)
        targets = [(STUB, f"{stub_url}/chat/completions", MODEL, "none", args.stub_scale, procs[0].pid)]
        targets += start_peer(exe, args.without_peer, paths, work, procs, notes)
        for traces in ("full", "off"):
            proc, url = start_podium(paths, work, traces)
            procs.append(proc)
            targets.append((f"podium pass-through (traces {traces})", url, MODEL, PODIUM_KEY, 1, proc.pid))
            if traces == "full":
                targets.append(("podium tier 'podium'", url, "podium", PODIUM_KEY, SLOW_SCALE, proc.pid))
        notes.append(f"`podium serve`'s own trace writer on this machine (the default targets): {default_writer()}.")
        for writer, wanted, name in (
            ("process", args.writer_process, WRITER_PROCESS),
            ("thread", args.writer_thread, WRITER_THREAD),
        ):
            if wanted:  # the trace writer chosen explicitly; a child process's CPU is counted (cpu_seconds)
                proc, url = start_podium(paths, work, "full", writer=writer)
                procs.append(proc)
                targets.append((name, url, MODEL, PODIUM_KEY, 1, proc.pid))
        if args.workers > 1:  # `podium serve --workers N`: N processes, every one's CPU counted (cpu_seconds)
            proc, url = start_podium(paths, work, "full", workers=args.workers)
            procs.append(proc)
            targets.append((f"{WORKERS_PREFIX}{args.workers} workers)", url, MODEL, PODIUM_KEY, 1, proc.pid))
        if args.before:  # the same server on uvicorn's h11 parser (issue 17's second pass): before/after in one run
            proc, url = start_podium(paths, work, "off", parser="h11")
            procs.append(proc)
            targets.append(
                ("podium pass-through (traces off, h11 parser: before)", url, MODEL, PODIUM_KEY, 1, proc.pid)
            )
        if args.before_src:  # the previous code, same machine and rounds: before/after in one run
            proc, url = start_podium(paths, work, "full", src=args.before_src)
            procs.append(proc)
            targets.append((f"{BEFORE_PREFIX}{args.before_label}", url, MODEL, PODIUM_KEY, 1, proc.pid))
        rounds = []
        for i in range(args.rounds):
            order = targets[i % len(targets) :] + targets[: i % len(targets)]  # rotate: no target always first
            if args.stub_beside:
                order = beside_stub(order, targets[0])
            print(f"round {i + 1}/{args.rounds}", flush=True)
            rows = [
                {**row, "round": i + 1}
                for name, url, model, key, scale, pid in order
                for row in measure(name, url, model, key, args.concurrency, max(50, int(args.requests * scale)), pid)
            ]
            rounds.append(rows)
    finally:
        for proc in procs:
            stop(proc)
    per_round = [ratios(rows) for rows in rounds]
    return {
        "rows": spread(rounds),
        "ratios": spread_ratios(per_round),
        "rounds": rounds,
        "ratios_per_round": per_round,
        "notes": notes,
        "load": {"start": load_start, "end": uptime()},
        "config": config(args, exe),
    }


def rerender(report: dict) -> dict:
    """A saved report with its ratios computed again from its rounds' rows (what a newer version of
    :func:`ratios` takes from the same measurements)."""
    per_round = [ratios(rows) for rows in report["rounds"]]
    return {**report, "ratios": spread_ratios(per_round), "ratios_per_round": per_round}


STUB = "stub (direct)"
SLOW_SCALE = 0.25  # the share of --requests the slow targets get (the tier, LiteLLM: 4-10+ times slower)
PASS_THROUGH = "podium pass-through"  # the targets the stub is measured beside
BEFORE_PREFIX = "podium pass-through (traces full): "  # the --before-src target's name starts so
WRITER_PROCESS = "podium pass-through (traces full, writer process; its CPU counted)"
WRITER_THREAD = "podium pass-through (traces full, thread writer)"
WORKERS_PREFIX = "podium pass-through (traces full, "
PEER = "litellm proxy"


def default_writer() -> str:
    """The trace writer ``podium serve`` (one worker) picks here: ``podium.server.traces.server_writer``."""
    sys.path.insert(0, str(REPO / "src"))
    from podium.server.traces import server_writer

    return server_writer(1)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_peer(
    exe: str | None, without: bool, paths: dict[str, Path], work: Path, procs: list, notes: list[str]
) -> list[tuple]:
    """The LiteLLM proxy target. Missing or failing, it stops the benchmark (PeerMissing), unless
    ``--without-peer`` was given: then the results say so and podium is compared with the stub only."""
    if without:
        notes.append(
            "PEER UNAVAILABLE: run with --without-peer (LiteLLM proxy not measured); "
            "podium is compared with the stub (the floor) only."
        )
        return []
    if exe is None:
        raise PeerMissing(
            "error: LiteLLM proxy not found: install it (make bench-peers, or pip install 'podium[bench]') or pass "
            "--litellm PATH; to measure podium against the stub only, pass --without-peer"
        )
    try:
        proc, url, startup = start_litellm(exe, paths, work)
    except RuntimeError as exc:
        raise PeerMissing(
            f"error: LiteLLM proxy could not start: {exc}; see {work / 'litellm.log'}{missing_module(work)} "
            "(or pass --without-peer)"
        ) from None
    procs.append(proc)
    notes.append(
        f"LiteLLM proxy started in {startup:.1f}s, offline (LITELLM_LOCAL_MODEL_COST_MAP=True), master key set, 1 worker."
    )
    return [(PEER, url, MODEL, LITELLM_KEY, SLOW_SCALE, proc.pid)]


def missing_module(work: Path) -> str:
    """``: <the import error>; install ...`` when the proxy died importing a module its extras did not
    bring (litellm itself installed without ``[proxy]``), else nothing."""
    log = work / "litellm.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if line.startswith(("ImportError", "ModuleNotFoundError"))]
    return (
        f": {errors[-1]}; install the proxy's extras: make bench-peers (pip install 'podium[bench]')" if errors else ""
    )


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}


def spread3(values: list[float]) -> dict[str, float]:
    """min, median and max, each to three decimals (bench_server_loop, bench_upstream_client)."""
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def load_lines(load: list[str]) -> list[str]:
    """A results table's first lines: ``uptime`` at the start and at the end."""
    return [f"Load at start: `{load[0]}`  ", f"Load at end: `{load[1]}`", ""]


def spread(rounds: list[list[dict]]) -> list[dict]:
    """Per target and concurrency: min/median/max over rounds of throughput, latency and server CPU."""
    groups: dict[tuple, list[dict]] = {}
    for rows in rounds:
        for row in rows:
            groups.setdefault((row["target"], row["concurrency"]), []).append(row)
    out = []
    for (target, conc), rows in groups.items():
        summary: dict = {"target": target, "concurrency": conc, "rounds": len(rows)}
        summary["ok"] = sum(r["ok"] for r in rows)
        summary["requests"] = sum(r["requests"] for r in rows)
        summary["errors"] = sum(sum(r["errors"].values()) for r in rows)
        for field in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request"):
            values = [r[field] for r in rows if r[field] is not None]
            summary[field] = _stats(values) if values else None
        out.append(summary)
    return out


def beside_stub(order: list[tuple], stub: tuple) -> list[tuple]:
    """A round's targets with the stub measured right before each podium pass-through (and not
    otherwise): the share of each is then taken against a stub measured seconds, not a round, apart."""
    out: list[tuple] = []
    for target in order:
        if target is stub:
            continue
        if target[0].startswith(PASS_THROUGH):
            out.append(stub)
        out.append(target)
    return out


def ratios(rows: list[dict]) -> list[dict]:
    """Within one round: each podium target against LiteLLM (if measured) and against the stub (the
    floor): the stub measured last before it in the round, else the round's only stub measurement."""
    by = {(r["target"], r["concurrency"]): r for r in rows}
    last_stub: dict[int, dict] = {}
    out = []
    for row in rows:
        if row["target"] == STUB:
            last_stub[row["concurrency"]] = row
        if not row["target"].startswith("podium") or not row["rps"]:
            continue
        conc = row["concurrency"]
        stub, peer = last_stub.get(conc) or by.get((STUB, conc)), by.get((PEER, conc))
        before = next((r for (t, c), r in by.items() if c == conc and t.startswith(BEFORE_PREFIX)), None)
        ratio = {"target": row["target"], "concurrency": conc, "round": row.get("round")}
        if before and before is not row and before["server_cpu_ms_per_request"]:
            ratio["server_cpu_x_before"] = round(
                row["server_cpu_ms_per_request"] / before["server_cpu_ms_per_request"], 3
            )
        if before and before is not row and before["rps"]:
            ratio["throughput_x_before"] = round(row["rps"] / before["rps"], 3)
        if stub and stub["rps"]:
            ratio["fraction_of_stub_throughput"] = round(row["rps"] / stub["rps"], 4)
        if peer and peer["rps"] and row["p50_ms"] and peer["p50_ms"]:
            ratio["throughput_x_litellm"] = round(row["rps"] / peer["rps"], 3)
            ratio["p50_latency_x_litellm"] = round(row["p50_ms"] / peer["p50_ms"], 3)
            ratio["p99_latency_x_litellm"] = round(row["p99_ms"] / peer["p99_ms"], 3)
            ratio["server_cpu_x_litellm"] = round(
                row["server_cpu_ms_per_request"] / max(1e-9, peer["server_cpu_ms_per_request"]), 3
            )
        out.append(ratio)
    return out


def spread_ratios(per_round: list[list[dict]]) -> list[dict]:
    """Ratios computed within each round, then min/median/max over rounds (never mixing rounds in a ratio)."""
    groups: dict[tuple, list[dict]] = {}
    for rows in per_round:
        for r in rows:
            groups.setdefault((r["target"], r["concurrency"]), []).append(r)
    out = []
    for (target, conc), rows in groups.items():
        summary: dict = {"target": target, "concurrency": conc}
        for field in sorted({k for r in rows for k in r} - {"target", "concurrency", "round"}):
            summary[field] = _stats([r[field] for r in rows if field in r])
        out.append(summary)
    return out


def config(args: argparse.Namespace, exe: str | None) -> dict:
    version = None
    if exe:
        try:
            out = subprocess.run(
                [str(Path(exe).parent / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            version = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "requests_per_case": args.requests,
        "requests_scale": {
            "stub": args.stub_scale,
            "litellm proxy": SLOW_SCALE,
            "podium tier": SLOW_SCALE,
            "podium pass-through": 1,
        },
        "concurrency": args.concurrency,
        "stub_delay_s": args.stub_delay,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "litellm": version,
        "rounds": args.rounds,
        "stub_beside": args.stub_beside,
        "before_src": args.before_src,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_generator": "one asyncio process, one raw keep-alive HTTP/1.1 connection per client, non-streaming requests",
        "same_machine": "stub, proxy and load generator share the machine's CPUs",
    }


def _fmt(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['median']} ({stats['min']}–{stats['max']})"


def table(report: dict) -> str:
    lines = [
        f"Load at start: `{report['load']['start']}`  ",
        f"Load at end: `{report['load']['end']}`",
        "",
        "Median over rounds (min–max).",
        "",
        "| target | clients | rounds | ok | req/s | p50 ms | p99 ms | server CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['rounds']} | {r['ok']}/{r['requests']} | {_fmt(r['rps'])} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['server_cpu_ms_per_request'])} | {r['errors']} |"
        )
    fields = [
        ("fraction_of_stub_throughput", "of stub req/s"),
        ("throughput_x_litellm", "req/s × LiteLLM"),
        ("p50_latency_x_litellm", "p50 × LiteLLM"),
        ("server_cpu_x_litellm", "CPU/req × LiteLLM"),
        ("server_cpu_x_before", "CPU/req × before (same round)"),
        ("throughput_x_before", "req/s × before (same round)"),
    ]
    present = [(f, h) for f, h in fields if any(f in r for r in report["ratios"])]
    if present:
        lines += [
            "",
            "Ratios computed within each round, then median (min–max) over rounds.",
            "",
            "| podium target | clients | " + " | ".join(h for _, h in present) + " |",
            "|---|---:|" + "---:|" * len(present),
        ]
        for r in report["ratios"]:
            cells = " | ".join(_fmt(r.get(f)) for f, _ in present)
            lines.append(f"| {r['target']} | {r['concurrency']} | {cells} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in report["notes"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="requests per pass-through target and concurrency (the stub: --stub-scale times as many)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--litellm", default=None, help="path to the litellm executable (LiteLLM proxy)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each reports every target (min/median/max)")
    parser.add_argument(
        "--stub-beside",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the stub right before each podium pass-through and take its share against that "
        "(default); --no-stub-beside: once per round",
    )
    parser.add_argument(
        "--without-peer",
        action="store_true",
        help="measure without LiteLLM (the results say so); by default a missing LiteLLM is an error (exit 2)",
    )
    parser.add_argument(
        "--before", action="store_true", help="also measure podium on uvicorn's h11 parser (PODIUM_HTTP_PARSER=h11)"
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="also measure the pass-through of the podium package under this source dir (e.g. a git archive of "
        "an earlier commit's src/): before and after in the same rounds",
    )
    parser.add_argument(
        "--writer-process",
        action="store_true",
        help="also measure the pass-through with PODIUM_TRACE_WRITER=process (the child's CPU counted)",
    )
    parser.add_argument(
        "--writer-thread",
        action="store_true",
        help="also measure the pass-through with PODIUM_TRACE_WRITER=thread (the default before session 10)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure the pass-through on `podium serve --workers N` (N > 1; every process's CPU counted)",
    )
    parser.add_argument("--before-label", default="before", help="how the --before-src target is named")
    parser.add_argument(
        "--stub-scale",
        type=float,
        default=10.0,
        help="the stub gets this many times --requests (it is ~10x faster: a window as long as podium's)",
    )
    parser.add_argument("--stub-delay", type=float, default=0.0, help="seconds the stub waits before answering")
    parser.add_argument("--stub", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "server.json"))
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: recompute the ratios of a saved report from its rounds, rewrite it and its .md",
    )
    args = parser.parse_args()
    if args.stub is not None:
        return run_stub(args.stub, args.stub_delay)
    if args.render:
        args.out = args.render
        report = rerender(json.loads(Path(args.render).read_text()))
    else:
        try:
            report = run(args)
        except PeerMissing as exc:
            print(exc.code, file=sys.stderr)
            raise SystemExit(2) from None
    text = table(report)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(f"# podium serve vs LiteLLM proxy (bench/bench_server.py)\n\n{text}\n")


if __name__ == "__main__":
    main()
