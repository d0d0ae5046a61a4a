"""Simulated verifiers for replay cascades: a cascade stops when its verifier accepts an answer.

A recorded answer is *correct* when its score is at least :data:`PASS_SCORE`. A live verifier (an
LLM judge) is wrong sometimes: it accepts a wrong answer with the **false-accept rate** and rejects
a right one with the **false-reject rate**. :func:`accept_matrix` draws, once per (item, model) and
seeded, whether the verifier accepts that model's answer on that item, so every method evaluated on
the same rows sees the same verifier (common random numbers).

:data:`PERFECT` (both rates 0) reads the recorded score and is an *upper bound*: no live verifier
is that good. :data:`REALISTIC` is the default used in headline rows. Its rates are conservative
assumptions, not measurements of one judge: LLM judges of answer correctness are far from
perfect on hard items (JudgeBench, Tan et al. 2024, arXiv:2410.12784, reports strong judges such as
GPT-4o close to chance on challenging response pairs; Huang et al. 2024, "Large Language Models
Cannot Self-Correct Reasoning Yet", ICLR, finds self-verification often rejects right answers and
accepts wrong ones). See docs/learned-coordinator.md ("Verifiers").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASS_SCORE = 0.5


@dataclass(frozen=True)
class Verifier:
    """Error rates of a simulated verifier and the seed of its draws."""

    false_accept: float = 0.0
    false_reject: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("false_accept", "false_reject"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"verifier {name} must be in [0, 1]")

    @property
    def perfect(self) -> bool:
        return self.false_accept == 0.0 and self.false_reject == 0.0

    @property
    def label(self) -> str:
        if self.perfect:
            return "perfect verifier (upper bound)"
        return f"verifier FA={self.false_accept:g} FR={self.false_reject:g}"

    @property
    def accuracy(self) -> float:
        """Balanced accuracy: the mean of the true-accept and true-reject rates."""
        return 1.0 - (self.false_accept + self.false_reject) / 2


PERFECT = Verifier()
# From published judge agreement, not one measured judge: ~85% agreement with humans for GPT-4 on
# MT-Bench (Zheng et al. 2023) and a lean towards leniency (Thakur et al. 2024); docs/learned-coordinator.md.
REALISTIC = Verifier(false_accept=0.2, false_reject=0.1)


def accept_matrix(scores: np.ndarray, verifier: Verifier, rows: np.ndarray | None = None) -> np.ndarray:
    """(n, M) bool: does ``verifier`` accept model m's recorded answer on item i?

    ``rows`` (dataset row numbers of the n items) seed the draws per item, so the same item gets the
    same verdicts whichever subset it is evaluated in.
    """
    correct = np.asarray(scores) >= PASS_SCORE
    if verifier.perfect:
        return correct
    n, m = correct.shape
    ids = np.arange(n) if rows is None else np.asarray(rows)
    u = _uniforms(verifier.seed, m, ids)
    return np.where(correct, u >= verifier.false_reject, u < verifier.false_accept)


_DRAWS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (seed, M) -> (drawn mask, draws) by row


def _uniforms(seed: int, m: int, ids: np.ndarray) -> np.ndarray:
    """(n, m) uniform draws, one seeded stream per item row (stable across subsets and orders).

    Each row's stream is drawn once per process and kept: replay evaluation asks for the same rows'
    verdicts at many error rates and in every fold, and creating a generator per row dominated."""
    ids = ids.astype(np.int64, copy=False)
    if len(ids) == 0:
        return np.empty((0, m))
    drawn, draws = _DRAWS.get((seed, m), (np.zeros(0, dtype=bool), np.empty((0, m))))
    top = int(ids.max()) + 1
    if top > len(drawn) or int(ids.min()) < 0:
        if int(ids.min()) < 0:  # negative ids: no cache (never the case for dataset rows)
            return np.stack([np.random.default_rng((seed, int(r))).random(m) for r in ids])
        drawn = np.concatenate([drawn, np.zeros(top - len(drawn), dtype=bool)])
        draws = np.concatenate([draws, np.empty((top - len(draws), m))])
    for row in np.unique(ids[~drawn[ids]]):
        draws[row] = np.random.default_rng((seed, int(row))).random(m)
        drawn[row] = True
    _DRAWS[(seed, m)] = (drawn, draws)
    out: np.ndarray = draws[ids]
    return out
