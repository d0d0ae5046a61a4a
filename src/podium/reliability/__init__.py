"""How one model call survives a misbehaving provider, as layers of backends that wrap backends.

From the outside in, one logical call (:class:`ModelCall`) goes through::

    FallbackBackend          each model of the chain in turn            fallback.py
      RetryBackend           backoff + jitter, Retry-After, deadline    retry.py
        GuardBackend         circuit breaker + total timeout            guard.py, breaker.py
          SpliceBackend      a broken stream continues, never repeats   splice.py
            raw backend      openai / local / scripted / check          podium.backends

Every layer is itself a :class:`~podium.backends.Backend` (``complete``, ``stream``, ``aclose``), so a
stack can be used anywhere a backend can. :class:`Layers` builds each model's stack once (its
retry policy and random generator included); the layers of one call share a :class:`CallContext`
(failed attempts, retries, the stream splice, the deadline). See docs/reliability.md.
"""

from .breaker import (
    BREAKER_FILE_ENV,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    breaker_file,
    default_breakers,
    endpoint_key,
)
from .call import Layers, ModelCall, Served, TextSink
from .context import CallContext, call_scope, current_call
from .deployments import DeploymentsBackend, DeploymentsBusy, DeploymentStates, busy_wait, states_for
from .fallback import AllModelsFailed, FallbackBackend, Prepare
from .guard import GuardBackend, protected, within
from .retry import CallReport, RetryBackend, RetryPolicy, with_retries
from .splice import CONTINUE_PROMPT, SpliceBackend, StreamSplice

__all__ = [
    "BREAKER_FILE_ENV",
    "CONTINUE_PROMPT",
    "AllModelsFailed",
    "BreakerRegistry",
    "BreakerState",
    "CallContext",
    "CallReport",
    "CircuitBreaker",
    "CircuitOpen",
    "DeploymentStates",
    "DeploymentsBackend",
    "DeploymentsBusy",
    "FallbackBackend",
    "GuardBackend",
    "Layers",
    "ModelCall",
    "Prepare",
    "RetryBackend",
    "RetryPolicy",
    "Served",
    "SpliceBackend",
    "StreamSplice",
    "TextSink",
    "breaker_file",
    "busy_wait",
    "call_scope",
    "current_call",
    "default_breakers",
    "endpoint_key",
    "protected",
    "states_for",
    "with_retries",
    "within",
]
