"""The per-request cost knob: ``cost_weight`` in [0, 1] moves a head continuously from quality to cost.

A head's model logits are predicted scores. At cost weight ``w`` the decision maximises
``logit_m − λ(w) · cost_m (+ bonus if m is the fallback)``, with ``cost_m`` the model's mean train
cost in mean-call units. ``w = 0`` is the head as selected (its gate: the safe router); ``w = 1``
the cheapest operating point. For ``0 < w``, models dearer than the fallback are left out, and the
fallback keeps a bonus (the gate's margin, or :data:`BONUS` when the gate never deviates), so the
head leaves it only for a cheaper model whose predicted loss is small enough for the cost saved.
Each item switches at its own λ (its own predicted margin), so the share of calls to the dear model
falls gradually, not from "always" to "never" at one λ.

``λ(w)`` is calibrated on the held-out slice of train: for a grid of λ (:data:`LAMBDA_GRID`) the
mean cost there is recorded; ``w`` asks for the cost ``c(0) − w · (c(0) − c_min)`` and λ is
interpolated (in log λ) between the two grid points around it. The table lives in the head file
(``meta["knob"]``), so one file holds the whole sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from .head import Head
    from .train import Prepared

BONUS = 0.2  # score units: the largest gate margin tried by cross-validation
LAMBDA_GRID = tuple(float(x) for x in np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 57)]))


def check_cost_weight(value: float) -> float:
    """``value`` as a float in [0, 1], else a one-line error."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"cost_weight must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= w <= 1.0 or w != w:
        raise UsageError(f"cost_weight must be in [0, 1], got {value!r}")
    return w


def knob_logits(
    logits: np.ndarray, available: np.ndarray, order: np.ndarray, margin: float, costs: np.ndarray, lam: float
) -> np.ndarray:
    """Adjusted (n, M) logits at cost weight λ > 0 (see the module docstring); ``order``: fallback ranking."""
    avail = np.asarray(available, dtype=bool)
    fallback = order[np.argmax(avail[:, order], axis=1)]
    rows = np.arange(len(logits))
    bonus = margin if np.isfinite(margin) else BONUS
    out = logits - lam * costs[None, :]
    out[rows, fallback] += bonus
    dearer = costs[None, :] > costs[fallback][:, None] * (1 + 1e-9)
    return np.where(avail & ~dearer, out, -np.inf)


def calibrate(
    choose_at: Callable[[float], np.ndarray], val_costs: np.ndarray, val_scores: np.ndarray
) -> dict[str, Any]:
    """The knob table: mean validation cost and score at each λ of :data:`LAMBDA_GRID`.

    ``choose_at(lam)`` returns the chosen model per validation row at that λ (λ = 0: the gated head).
    """
    rows = np.arange(len(val_costs))
    points = []
    for lam in LAMBDA_GRID:
        choice = choose_at(lam)
        points.append(
            {
                "lambda": lam,
                "cost": float(val_costs[rows, choice].mean()),
                "score": float(val_scores[rows, choice].mean()),
            }
        )
    return {"points": points, "bonus": BONUS}


def lambda_for(table: dict[str, Any], cost_weight: float) -> float:
    """λ for ``cost_weight`` from a calibration table (see the module docstring)."""
    w = check_cost_weight(cost_weight)
    if w == 0:
        return 0.0
    lams = np.array([p["lambda"] for p in table["points"]])
    costs = np.minimum.accumulate(np.array([p["cost"] for p in table["points"]]))  # non-increasing in λ
    target = costs[0] - w * (costs[0] - costs[-1])
    if costs[0] - costs[-1] <= 0:
        return float(lams[-1]) if w == 1 else float(lams[1])
    i = int(np.searchsorted(-costs, -target, side="left"))  # first grid point at or below the target cost
    i = min(max(i, 1), len(lams) - 1)
    c_hi, c_lo = costs[i - 1], costs[i]
    frac = 1.0 if c_hi == c_lo else (c_hi - target) / (c_hi - c_lo)
    lo, hi = max(lams[i - 1], lams[1] / 10), lams[i]
    return float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))


def attach_knob(head: Head, prep: Prepared, cost_by_model: np.ndarray) -> Head:
    """Calibrate the knob of ``head`` on ``prep``'s held-out slice and record it in ``head.meta["knob"]``.

    ``cost_by_model``: mean train cost per model in mean-call units (unknown: a large number).
    """
    ds, val = prep.ds, prep.val_rows
    costs = np.where(np.isfinite(cost_by_model), cost_by_model, 1e9)
    head.meta = {**head.meta, "knob": {"model_cost": [float(c) for c in costs]}}
    logits = head.logits(prep.emb[val], None, prep.self_rows(val))[:, : head.n_models]
    known = ds.known[val]
    table = calibrate(
        lambda lam: head.pick(logits, known, lam=lam), ds.costs[val] / prep.cost_unit, np.nan_to_num(ds.scores[val])
    )
    head.meta["knob"].update(table)
    return head
