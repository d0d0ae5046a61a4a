"""The learned coordinator: a trained TRINITY head picks the next model and role (``learned:PATH``).

Per decision it encodes the query (with the encoder the head file names), adds the transcript
(which models already failed: an error, or an answer a verifier rejected), and reads the head's
logits:

- **model**: the highest model logit among the head's models that the pool allows for the chosen
  role right now; models missing from the pool, excluded by policy, or that already failed are
  masked out (no retraining). Head model names must be pool model names: a head trained on a
  replay dataset drives a pool whose models carry the dataset's model names (see
  docs/learned-coordinator.md). If the head has no allowed model for a role, the pool's default
  for that role is used and the reason says so.
- **role**: the head's 3 role logits plus a transcript prior (check a fresh answer, answer again
  after REVISE). A verifier is never chosen before an answer exists and a thinker never on the
  last turn (the engine also turns an early verifier into a worker).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..errors import UsageError, missing_extra

try:
    import numpy as np
except ImportError:  # the learned coordinator needs the train extra
    raise missing_extra("numpy", "train") from None

from ..learned.encoders import get_encoder
from ..learned.head import ROLE_NAMES, Head
from ..roles import forbidden_role
from ..types import Decision, Role, Verdict
from .base import RunState

if TYPE_CHECKING:
    from ..learned.decision_cache import DecisionCache

STATE_PRIOR = 2.0  # added to the role the transcript calls for (checking an answer, re-answering)


class LearnedCoordinator:
    """Decides with a trained head; see the module docstring."""

    def __init__(
        self, head: Head, source: str = "", cost_weight: float = 0.0, decision_cache: DecisionCache | None = None
    ) -> None:
        from ..learned.knob import check_cost_weight

        self.head = head
        self.encoder = get_encoder(head.encoder)
        self.cost_weight = check_cost_weight(cost_weight)
        if self.cost_weight and "knob" not in head.meta:
            raise UsageError(
                f"head {source or 'learned'} has no cost knob table; retrain it with podium train replay to use cost_weight"
            )
        self.name = f"learned:{source}" if source else "learned"
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.decisions = decision_cache

    @classmethod
    def load(cls, path: str | Path, cost_weight: float = 0.0) -> LearnedCoordinator:
        """Load a head file written by ``podium train replay``; ``cost_weight`` in [0, 1] (see :mod:`podium.learned.knob`)."""
        return cls(Head.load(path), str(path), cost_weight)

    def with_cost_weight(self, cost_weight: float) -> LearnedCoordinator:
        """The same head (and caches) at another cost weight: one head file serves every request's knob."""
        other = LearnedCoordinator(self.head, self.name.partition(":")[2], cost_weight, self.decisions)
        other._cache = self._cache
        return other

    def encode(self, query: str) -> np.ndarray:
        """The query's encoding (kept for the run's later turns)."""
        vec = self._cache.get(query)
        if vec is None:
            vec = self.encoder.encode([query])
            self._cache[query] = vec
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return vec

    def logits(self, emb: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """The head's logits, reused from the decision cache for a similar query in the same context."""
        if self.decisions is None:
            return cast(np.ndarray, self.head.logits(emb, failed)[0])
        context = failed.tobytes()
        cached = self.decisions.get(emb, context)
        if cached is None:
            cached = self.head.logits(emb, failed)[0]
            self.decisions.put(emb, cached, context)
        return cast(np.ndarray, cached)

    def failed_mask(self, state: RunState) -> np.ndarray:
        """1 for each head model that already failed in this run."""
        failed = state.failed_models()
        return np.array([[1.0 if m in failed else 0.0 for m in self.head.models]])

    async def decide(self, state: RunState) -> Decision:
        logits = self.logits(self.encode(state.query), self.failed_mask(state))
        role = self.choose_role(state, logits[self.head.n_models :])
        model, reason = self.choose_model(state, role, logits[: self.head.n_models])
        return Decision(role=role, model=model, reason=reason)

    def choose_role(self, state: RunState, role_logits: np.ndarray) -> Role:
        """Role logits plus the transcript prior, with impossible roles masked."""
        scores = dict(zip(ROLE_NAMES, role_logits.astype(float)))
        last = state.last
        if last is not None and last.error is None and last.role == Role.WORKER:
            scores["verifier"] += STATE_PRIOR
        if last is not None and last.role == Role.VERIFIER and last.verdict == Verdict.REVISE:
            scores["worker"] += STATE_PRIOR
        for name in ROLE_NAMES:
            if forbidden_role(Role(name), state.has_answer, state.turns_left):
                scores[name] = -np.inf
        if last is not None and last.role == Role.THINKER:
            scores["thinker"] = -np.inf
        return Role(max(scores, key=scores.__getitem__))

    def allowed_mask(self, state: RunState, role: Role) -> np.ndarray:
        """Which head models may act as ``role`` now: in the pool and policy, not a worker that
        already failed (a verifier: not the worker it judges), unless that leaves none."""
        allowed = set(state.pool.candidates(role))
        if not allowed & set(self.head.models) and not set(state.pool.models) & set(self.head.models):
            raise UsageError(
                f"head {self.name} was trained for models {self.head.models}; none is in pool "
                f"'{state.pool.name}': train a head on data recorded with this pool's models"
            )
        skip = state.failed_models() if role == Role.WORKER else set()
        last_worker = state.last_of(Role.WORKER) if role == Role.VERIFIER else None
        if last_worker is not None:
            skip = {last_worker.model}
        in_pool = np.array([m in allowed for m in self.head.models])
        open_ = in_pool & np.array([m not in skip for m in self.head.models])
        return open_ if open_.any() else in_pool

    def choose_model(self, state: RunState, role: Role, model_logits: np.ndarray) -> tuple[str, str]:
        """Best allowed head model for ``role``; the pool default when the head has none."""
        mask = self.allowed_mask(state, role)
        if mask.any():
            if role == Role.WORKER:  # the gate and the cost knob pick the worker; other roles: the best logit
                idx = int(self.head.pick(model_logits[None], mask[None], self.cost_weight)[0])
            else:
                idx = int(np.argmax(np.where(mask, model_logits, -np.inf)))
            name = self.head.models[idx]
            knob = f", cost_weight {self.cost_weight:g}" if self.cost_weight else ""
            return name, f"learned head: {role.value} {name} (logit {model_logits[idx]:.3f}{knob})"
        fallback = state.pool.pick(role)
        return fallback, f"learned head has no allowed model for {role.value}; pool default {fallback}"
