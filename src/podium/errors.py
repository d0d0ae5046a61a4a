"""Every exception podium raises on purpose.

Two families, kept apart so callers can tell "you used it wrong" from "the world failed"::

    PodiumError                      base of everything below
    ├── UsageError                   misuse: fix your input and retry (CLI exit code 2, HTTP 4xx)
    │   ├── ConfigError              a pool/config file is missing, malformed or inconsistent
    │   ├── PolicyError              no allowed model can take a role the run needs
    │   └── MissingDependencyError   an optional extra is not installed (message has the pip hint)
    └── RuntimeFailure               something failed while running (CLI exit code 1, HTTP 5xx/502)
        ├── BackendError             a model call failed (HTTP status, timeout, bad payload)
        │   ├── BackendTimeout       connect / first byte / total time ran out
        │   ├── EndpointUnavailable  connection refused, circuit open, endpoint gone
        │   └── ContextOverflow      the prompt does not fit the model's context window (call not made)
        └── BudgetExhausted          internal signal: a budget ran out (never escapes a run)

A run never raises a RuntimeFailure to its caller: the engine turns it into a status
(``failed`` / ``budget_exhausted``) on the result, with the trace kept.
"""

from __future__ import annotations


class PodiumError(Exception):
    """Base class of all podium errors."""


class UsageError(PodiumError):
    """The caller asked for something invalid; retrying unchanged will not help."""


class ConfigError(UsageError):
    """A configuration file or value is wrong. The message names the file, key and fix."""


class PolicyError(UsageError):
    """The pool policy leaves no model that may take a needed role."""


class MissingDependencyError(UsageError):
    """An optional dependency is missing; the message carries the install hint."""


class RuntimeFailure(PodiumError):
    """Something failed at run time (network, model, budget)."""


class BackendError(RuntimeFailure):
    """A model call failed.

    ``status`` is the HTTP status when there was one; ``retryable`` says whether the
    same call may succeed if repeated; ``retry_after`` is the server's hint in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        from .scrub import scrub

        super().__init__(scrub(message))  # provider text (error bodies) is scrubbed the moment it enters
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class BackendTimeout(BackendError):
    """A call ran out of time (connect, first byte or total)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class EndpointUnavailable(BackendError):
    """The endpoint cannot be reached (refused, reset, or its circuit breaker is open)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)


class ContextOverflow(BackendError):
    """The prompt cannot fit the model's ``context_window``: the call is not made (another model may fit)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class BudgetExhausted(RuntimeFailure):
    """A run budget ran out; ``budget`` names which one (turns, tokens, cost_usd, deadline_s)."""

    def __init__(self, budget: str, message: str = "") -> None:
        super().__init__(message or f"budget exhausted: {budget}")
        self.budget = budget


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """Build the error for an optional dependency that is not installed."""
    return MissingDependencyError(f"{package} is not installed; install it with: pip install 'podium[{extra}]'")
