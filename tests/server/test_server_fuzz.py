"""Schemathesis fuzzes the server's OpenAPI schema in-process: no request may get a 5xx, and every
error is an OpenAI-style error object."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the 'test' extra")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error, status_code_conformance  # noqa: E402

from podium.server.app import create_app  # noqa: E402
from podium.server.traces import Traces  # noqa: E402

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")


def _app():
    """The app, built at collection time with its store and breaker file in a temp dir."""
    import os
    import tempfile

    home = tempfile.mkdtemp(prefix="podium-fuzz-")
    saved = os.environ.get("PODIUM_HOME")
    os.environ["PODIUM_HOME"] = home  # read once, by the app's breaker registry
    try:
        return create_app(POOL, traces=Traces(Path(home) / "podium.db"), hosts=("testserver",))  # schemathesis's Host
    finally:
        if saved is None:
            os.environ.pop("PODIUM_HOME", None)
        else:
            os.environ["PODIUM_HOME"] = saved


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


def error_object(ctx, response, case) -> None:
    """Every 4xx/5xx body is {"error": {"message", "type", "param", "code"}}."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"]


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
    error_object(None, response, case)
    assert response.status_code < 500
