"""simonw's ``llm`` (CLI and library) against a live ``podium serve``, with podium's models declared
as OpenAI-compatible ones in a temporary ``LLM_USER_PATH`` (``extra-openai-models.yaml``): prompts
streamed and not, ``--schema`` structured output, tools run by ``llm`` itself (``--functions`` and
``model.chain``), on pool models and tiers; and no retry of a failed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from compat_live import Live, serve
from compat_upstream import REPLY

llm = pytest.importorskip("llm", reason="llm is in the 'test' extra")

from click.testing import CliRunner  # noqa: E402
from llm.cli import cli as llm_cli  # noqa: E402

ASK = "What is the weather in Paris?"
LLM_CLI = Path(sys.executable).with_name("llm")
FUNCTIONS = 'def get_weather(city: str) -> str:\n    "Weather of a city."\n    return "18C"\n'


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve(tmp_path_factory)


@pytest.fixture
def llm_home(tmp_path: Path, live: Live, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``llm`` user directory that knows the server's models (``podium-NAME``) and nothing else."""
    models = [
        {"model_id": f"podium-{m}", "model_name": m, "api_base": live.base, "api_key_name": "podium"}
        | {"supports_schema": True, "supports_tools": True}
        for m in ("gpt-up", "team", "down")
    ]
    (tmp_path / "extra-openai-models.yaml").write_text(yaml.safe_dump(models))
    (tmp_path / "keys.json").write_text(json.dumps({"podium": "sk-unused"}))
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return tmp_path


class Ran:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode, self.output = returncode, output


def run_llm(*args: str) -> Ran:
    """The ``llm`` command, in this process (its Click entry point: a subprocess costs seconds each)."""
    result = CliRunner().invoke(llm_cli, list(args))
    return Ran(result.exit_code, result.output)


def test_installed_cli_in_a_subprocess(llm_home: Path) -> None:
    env = {**os.environ, "LLM_USER_PATH": str(llm_home)}
    out = subprocess.run([str(LLM_CLI), "-m", "podium-team", ASK], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == REPLY


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_cli_prompt_streamed_and_not(llm_home: Path, model: str) -> None:
    for flags in ([], ["--no-stream"]):
        out = run_llm("-m", f"podium-{model}", *flags, ASK)
        assert out.returncode == 0, out.output
        assert out.output.strip() == REPLY


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_cli_schema(llm_home: Path, live: Live, model: str) -> None:
    out = run_llm("-m", f"podium-{model}", "--schema", "name, age int", ASK)
    assert out.returncode == 0, out.output
    assert json.loads(out.output) == {"name": "Ada", "age": 36}
    sent = live.upstream.last("plain" if model == "gpt-up" else "tier-worker")
    assert sent["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_cli_functions_run_the_tool_and_answer(llm_home: Path, model: str) -> None:
    out = run_llm("-m", f"podium-{model}", "--functions", FUNCTIONS, ASK)
    assert out.returncode == 0, out.output
    assert out.output.strip() == "It is 18C there."


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_library_chain_with_tools(llm_home: Path, model: str) -> None:
    calls: list[str] = []

    def get_weather(city: str) -> str:
        """Weather of a city."""
        calls.append(city)
        return "18C"

    chain = llm.get_model(f"podium-{model}").chain(ASK, tools=[get_weather])
    assert chain.text() == "It is 18C there." and calls == ["Paris"]


@pytest.mark.parametrize("flags, says", [([], "the run failed"), (["--no-stream"], "502")])
def test_failed_run_is_not_retried(llm_home: Path, live: Live, flags: list[str], says: str) -> None:
    """Streamed, the failure is an error event in a 200 stream; not streamed, a 502 the SDK does not retry."""
    runs, calls = len(live.server.runs()), live.upstream.counts["fail"]
    out = run_llm("-m", "podium-down", *flags, ASK)
    assert out.returncode != 0 and says in out.output, out.output
    assert len(live.server.runs()) == runs + 1
    assert live.upstream.counts["fail"] - calls == 2  # one run: a call and podium's own single retry
