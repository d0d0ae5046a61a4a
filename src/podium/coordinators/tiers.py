"""Complexity tiers on a learned head (``tiers:PATH[@COST_WEIGHT]``).

The seed's complexity tiers: per role a **cheap** and a **strong** model, the strong one only for
queries predicted to be hard. Both come from the pool, per decision, among the head's models that
the pool allows for the role (minus models that already failed): *strong* is the first of them in
the head's fallback ranking (the best single model on train), *cheap* the one with the lowest mean
train cost (recorded in the head's cost-knob table).

**Predicted difficulty** of a query is the head's predicted score gain of the strong model over
the cheap one, ``d = logit_strong − logit_cheap`` (the head's model logits are predicted scores):
a query is hard when the cheap model is predicted to do worse. The query goes to the strong model
when ``d ≥ t(w)``, with the threshold taken from the cost knob (:mod:`podium.learned.knob`) at the
cost weight ``w`` in [0, 1]::

    t(w) = λ(w) · (cost_strong − cost_cheap) − bonus        (w > 0)

``λ(w)`` is the knob's calibrated λ and ``bonus`` the gate margin (or :data:`~podium.learned.knob.BONUS`
when the gate never deviates); this is exactly the knob's decision restricted to the two tiers. At
``w = 0`` the safe head's gate decides (strong unless the gate trusts the cheap model by its
margin; always strong when the gate kept the fallback). ``λ(w)`` grows with ``w``, so the share of
strong calls can only fall as ``w`` grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..learned.head import Head
from ..learned.knob import BONUS, lambda_for
from ..types import Role
from .base import RunState
from .learned import LearnedCoordinator


@dataclass(frozen=True)
class TierChoice:
    """One tiered decision: the two tiers, the query's predicted difficulty and the threshold."""

    cheap: int
    strong: int
    difficulty: float
    threshold: float

    @property
    def model(self) -> int:
        return self.strong if self.difficulty >= self.threshold else self.cheap


def tier_threshold(head: Head, cost_weight: float, cheap: int, strong: int) -> float:
    """``t(w)`` of the module docstring for the pair (``-inf``: always the strong model)."""
    if head.gate is None or "knob" not in head.meta:
        raise UsageError(
            "the tiers coordinator needs a head with a gate and a cost knob: train it with podium train replay"
        )
    costs = np.asarray(head.meta["knob"]["model_cost"], dtype=float)
    margin = float(head.gate.margin)
    if cost_weight == 0:
        return -margin  # the gate: cheap only where its logit beats the strong one's by the margin (inf: never)
    bonus = margin if np.isfinite(margin) else BONUS
    return float(lambda_for(head.meta["knob"], cost_weight) * (costs[strong] - costs[cheap]) - bonus)


def tier_pair(head: Head, allowed: np.ndarray) -> tuple[int, int]:
    """(cheap, strong) head model indices among ``allowed`` (a bool mask over the head's models)."""
    assert head.gate is not None  # checked by tier_threshold's callers
    order = [int(m) for m in head.gate.order if allowed[int(m)]]
    strong = order[0]
    costs = np.asarray(head.meta["knob"]["model_cost"], dtype=float)
    cheap = min(order, key=lambda m: (costs[m], order.index(m)))  # ties: the better-ranked one
    return cheap, strong


def tier_choice(head: Head, model_logits: np.ndarray, allowed: np.ndarray, cost_weight: float) -> TierChoice:
    """The tiered decision on one query's model logits."""
    cheap, strong = tier_pair(head, allowed)
    threshold = tier_threshold(head, cost_weight, cheap, strong)
    return TierChoice(cheap, strong, float(model_logits[strong] - model_logits[cheap]), threshold)


class TiersCoordinator(LearnedCoordinator):
    """A cheap and a strong model per role, switched on the head's predicted difficulty (module docstring)."""

    def __init__(self, head: Head, source: str = "", cost_weight: float = 0.0) -> None:
        super().__init__(head, source, cost_weight)
        if head.gate is None or "knob" not in head.meta:
            raise UsageError(
                f"head {source or 'tiers'} has no gate or cost knob table; train it with podium train replay"
            )
        self.name = f"tiers:{source}" if source else "tiers"

    @classmethod
    def load(cls, path: str | Path, cost_weight: float = 0.0) -> TiersCoordinator:
        """Load a head file written by ``podium train replay``; ``cost_weight`` in [0, 1]."""
        return cls(Head.load(path), str(path), cost_weight)

    def with_cost_weight(self, cost_weight: float) -> TiersCoordinator:
        """The same head and caches at another cost weight (the server's ``TIER@W`` and ``cost_weight``)."""
        other = TiersCoordinator(self.head, self.name.partition(":")[2], cost_weight)
        other._cache, other.decisions = self._cache, self.decisions
        return other

    def choose_model(self, state: RunState, role: Role, model_logits: np.ndarray) -> tuple[str, str]:
        """The role's strong model for a hard query, its cheap model otherwise."""
        mask = self.allowed_mask(state, role)
        if not mask.any():
            fallback = state.pool.pick(role)
            return fallback, f"tiers: the head has no allowed model for {role.value}; pool default {fallback}"
        choice = tier_choice(self.head, model_logits, mask, self.cost_weight)
        name = self.head.models[choice.model]
        tier = "strong" if choice.model == choice.strong and choice.strong != choice.cheap else "cheap"
        return name, (
            f"tiers: {role.value} {name} ({tier}; predicted difficulty {choice.difficulty:.3f}, "
            f"threshold {choice.threshold:.3f}, cost_weight {self.cost_weight:g})"
        )
