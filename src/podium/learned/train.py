"""Train a learned coordinator head on a replay dataset with sep-CMA-ES (ask/tell, resumable).

Objective (maximised): mean score − λ · mean cost, with cost in units of the dataset's mean
cost per call (so one λ means the same on every dataset).

- ``single`` mode: the head picks one model per item; reward = its recorded score − λ·cost.
- ``cascade`` mode: up to ``turns`` calls per item. Each turn the head picks a model not yet
  tried, seeing which models already failed (the transcript); the recorded score stands in for an
  executable verifier (score ≥ 0.5 passes and ends the item). Reward = the last answer's score
  − λ · the summed cost.

With kNN features (the default, ``knn_ks``), the head's model logit is tied:
``γ · ridge_m(z) + Σ_j a_j · knn_j,m + c_m`` (+ failed-model weights in cascade mode), where
``ridge`` is a per-model ridge fit of the score on the projected encoding and ``knn_j,m`` model m's
leave-one-out success rate among the ``ks[j]`` nearest training items. sep-CMA-ES optimises
``(γ, a, c[, W_fail])`` directly on the routing objective, starting from the blend γ the held-out
slice prefers. Without kNN features, the CMA-ES mean starts from the ridge fit shrunk towards the
best-single prior and optimises every weight. Either way the iterate kept is the one with the best
objective on the held-out slice of the training split.
All randomness is seeded. The optimiser's full state is checkpointed every few generations and a
run resumes from it.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import UsageError
from .encoders import get_encoder
from .head import ROLE_NAMES, Head
from .lazy_cma import load_cma
from .prepared import Prepared as Prepared
from .prepared import embed as embed
from .prepared import prepare as prepare
from .rewards import Problem as Problem
from .rewards import cascade_rewards as cascade_rewards
from .rewards import cascade_rollout as cascade_rollout
from .rewards import fit_projection as fit_projection
from .rewards import ridge_warm_start as ridge_warm_start
from .rewards import single_rewards as single_rewards
from .simulated_verifier import PASS_SCORE, Verifier
from .tied import TiedParts, tied_cascade_rewards, tied_single_rewards

SHRINK = (0.0, 0.25, 0.5, 0.75, 1.0)  # warm start: share of the ridge fit vs the best-single prior (or kNN)
KNN_SCALE = 0.25  # CMA-ES step scale of the tied parameters (kNN weights are ~1/n_knn)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are used unchanged on every dataset."""

    mode: str = "single"  # single | cascade
    lam: float = 0.0  # cost weight λ, per mean call cost
    turns: int = 3  # cascade: most calls per item
    k: int = 64  # projected encoding size
    generations: int = 60
    popsize: int | None = None  # None: CMA-ES default 4 + 3 ln(n)
    sigma0: float = 0.2  # initial step, relative to the ridge fit's weight scale
    ridge: float = 1.0
    val_frac: float = 0.2
    seed: int = 0
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "hashed"})
    knn_ks: tuple[int, ...] = (5, 20, 100)  # kNN feature neighbourhoods; () for none
    knn_dim: int = 256  # PCA dimensions of the kNN memory
    knn_smooth: float = 1.0  # pseudo-count towards the model's mean score
    verifier_fa: float = 0.0  # cascade: simulated verifier's false-accept rate (0 = the recorded score decides)
    verifier_fr: float = 0.0  # cascade: simulated verifier's false-reject rate

    def __post_init__(self) -> None:
        if self.mode not in ("single", "cascade"):
            raise UsageError(f"unknown training mode '{self.mode}'; use single or cascade")
        if self.turns < 1 or self.k < 1 or self.generations < 0:
            raise UsageError("turns and k must be at least 1, generations at least 0")


@dataclass
class TrainState:
    """Everything needed to resume: the optimiser, how far it got, and the best iterate so far."""

    config: TrainConfig
    es: Any  # a cma.CMAEvolutionStrategy (cma is untyped)
    generation: int
    best_theta: np.ndarray
    best_val: float
    history: list[dict[str, Any]] = field(default_factory=list)


def stderr_progress(message: str) -> None:
    """Default progress sink: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


class Trainer:
    """sep-CMA-ES over the head's model weights, as explicit ask/tell steps.

    ``n_knn`` kNN feature groups (of M columns each) follow ``[z, 1]`` in the features; with any,
    the parameters are the tied ``(γ, a, c[, W_fail])`` of the module docstring, else every weight.
    """

    def __init__(self, config: TrainConfig, fit: Problem, val: Problem, ridge: np.ndarray, n_knn: int = 0) -> None:
        self.config, self.fit, self.val, self.ridge, self.n_knn = config, fit, val, ridge, n_knn
        n_models = ridge.shape[1]
        self.n_fail = n_models if config.mode == "cascade" else 0
        self.shape = (ridge.shape[0] + n_knn * n_models + self.n_fail, n_models)
        self.scale = KNN_SCALE if n_knn else (float(np.std(ridge)) or 1.0)
        self._parts: dict[int, TiedParts] = {}
        self.x0 = self.tied_start() if n_knn else self.warm_start(ridge)

    def mean_cost(self) -> np.ndarray:
        counts = self.fit.available.sum(axis=0).clip(min=1)
        return cast(np.ndarray, (self.fit.cost * self.fit.available).sum(axis=0) / counts)

    def tied_start(self) -> np.ndarray:
        """``a = (1 − γ)/n_knn``, ``c = −λ·mean cost``, at the γ of :data:`SHRINK` the held-out slice prefers."""
        n_models = self.ridge.shape[1]
        bias = -self.config.lam * self.mean_cost()
        bias[self.fit.available.sum(axis=0) == 0] = -10.0
        candidates = []
        for gamma in SHRINK:
            theta = np.zeros(1 + self.n_knn + n_models + self.n_fail * n_models)
            theta[0], theta[1 : 1 + self.n_knn] = gamma, (1 - gamma) / self.n_knn
            theta[1 + self.n_knn : 1 + self.n_knn + n_models] = bias
            candidates.append(theta)
        values = self.rewards(np.stack(candidates), self.val)
        return candidates[int(np.argmax(values))]

    def expand(self, thetas: np.ndarray) -> np.ndarray:
        """(P, *shape) weight matrices of P parameter vectors."""
        if not self.n_knn:
            return thetas.reshape(len(thetas), *self.shape)
        n_z, n_models, n_knn = self.ridge.shape[0], self.ridge.shape[1], self.n_knn
        w = np.zeros((len(thetas), *self.shape))
        w[:, :n_z] = thetas[:, 0, None, None] * self.ridge[None]
        w[:, n_z - 1] += thetas[:, 1 + n_knn : 1 + n_knn + n_models]
        diag = np.arange(n_models)
        for j in range(n_knn):
            w[:, n_z + j * n_models + diag, diag] = thetas[:, 1 + j, None]
        if self.n_fail:
            w[:, n_z + n_knn * n_models :] = thetas[:, 1 + n_knn + n_models :].reshape(len(thetas), n_models, n_models)
        return w

    def warm_start(self, ridge: np.ndarray) -> np.ndarray:
        """The ridge fit shrunk towards the best-single prior (per-model mean score), as val prefers.

        Where the encoding says little about which model wins, routing on noisy predictions
        loses to always picking the best model; the shrinkage level picked on the held-out slice
        starts CMA-ES from whichever of the two (or a blend) generalises.
        """
        prior = np.zeros_like(ridge)
        counts = self.fit.available.sum(axis=0).clip(min=1)
        prior[-1] = (self.fit.scores * self.fit.available).sum(axis=0) / counts
        prior[-1] -= self.config.lam * (self.fit.cost * self.fit.available).sum(axis=0) / counts
        prior[-1, self.fit.available.sum(axis=0) == 0] = -10.0
        candidates = np.stack([self.pad(a * ridge + (1 - a) * prior) for a in SHRINK])
        values = self.rewards(candidates.reshape(len(SHRINK), -1), self.val)
        return cast(np.ndarray, candidates[int(np.argmax(values))])

    def pad(self, w: np.ndarray) -> np.ndarray:
        """Append zero failed-model rows (cascade mode)."""
        return np.vstack([w, np.zeros((self.shape[0] - w.shape[0], w.shape[1]))])

    def rewards(self, thetas: np.ndarray, p: Problem) -> np.ndarray:
        if self.n_knn:
            return self.tied_rewards(thetas, p)
        weights = self.expand(thetas)
        if self.config.mode == "single":
            return single_rewards(weights, p, self.config.lam)
        return cascade_rewards(weights, p, self.config.lam, self.config.turns)

    def parts(self, p: Problem) -> TiedParts:
        """``ridge(z)``, the kNN rates and the unknown cells of ``p``, computed once per problem."""
        key = id(p)
        if key not in self._parts:
            self._parts[key] = TiedParts.of(p, self.ridge, self.n_knn)
        return self._parts[key]

    def tied_rewards(self, thetas: np.ndarray, p: Problem) -> np.ndarray:
        """Same as expanding the tied parameters into weights, at a fraction of the cost (:mod:`.tied`)."""
        if self.config.mode == "single":
            return tied_single_rewards(thetas, self.parts(p), p, self.config.lam)
        return tied_cascade_rewards(thetas, self.parts(p), p, self.config.lam, self.config.turns)

    def new_state(self) -> TrainState:
        cma = load_cma()
        c = self.config
        scale = self.scale
        opts = {"CMA_diagonal": True, "seed": c.seed + 1, "verbose": -9, "maxiter": max(c.generations, 1)}
        if c.popsize:
            opts["popsize"] = c.popsize
        es = cma.CMAEvolutionStrategy(self.x0.ravel(), c.sigma0 * scale, opts)
        val0 = float(self.rewards(self.x0.ravel()[None], self.val)[0])
        return TrainState(c, es, 0, self.x0.ravel().copy(), val0, [{"generation": 0, "val": val0}])

    def step(self, state: TrainState) -> dict[str, Any]:
        """One generation: ask, evaluate on the fit rows, tell; then score the mean on validation."""
        thetas = np.asarray(state.es.ask())
        fit_rewards = self.rewards(thetas, self.fit)
        state.es.tell(list(thetas), list(-fit_rewards))
        mean = np.asarray(state.es.mean)
        val = float(self.rewards(mean[None], self.val)[0])
        state.generation += 1
        if val > state.best_val:
            state.best_val, state.best_theta = val, mean.copy()
        record = {
            "generation": state.generation,
            "fit_best": float(fit_rewards.max()),
            "fit_mean": float(fit_rewards.mean()),
            "val": val,
        }
        state.history.append(record)
        return record


def save_checkpoint(state: TrainState, path: Path) -> None:
    """Atomically pickle the training state (only load checkpoints you wrote yourself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(state))
    tmp.replace(path)


def load_checkpoint(path: Path, config: Any, kind: type[Any] = TrainState) -> Any:
    """A checkpoint written by :func:`save_checkpoint` for the same configuration (a ``kind``: TrainState,
    or another state with a ``config``, e.g. live training's)."""
    try:
        state = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise UsageError(f"{path}: cannot read checkpoint ({exc}); delete it to start over") from None
    if not isinstance(state, kind) or state.config != config:
        raise UsageError(f"{path}: checkpoint was made with other settings; delete it or use the same options")
    return state


def train_head(
    prep: Prepared,
    config: TrainConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Progress | None = stderr_progress,
    every: int = 10,
) -> Head:
    """Train a head on ``prep`` (see module docstring); checkpoint every ``every`` generations."""
    started = time.perf_counter()
    ds = prep.ds
    mean, proj = prep.projection(config.k)
    memory = prep.memory(config)
    head = Head(ds.models, get_encoder(config.encoder).spec(), mean, proj, np.zeros((0, 0)), memory=memory)
    verifier = Verifier(config.verifier_fa, config.verifier_fr, config.seed)
    fit = Problem.build(prep.projected(head, config, "fit"), ds, prep.fit_rows, prep.cost_unit, verifier)
    val = Problem.build(prep.projected(head, config, "val"), ds, prep.val_rows, prep.cost_unit, verifier)
    n_z = proj.shape[1] + 1
    z_only = Problem(fit.z[:, :n_z], fit.scores, fit.available, fit.cost)
    ridge = ridge_warm_start(z_only, config.ridge, 0.0 if memory else config.lam)
    trainer = Trainer(config, fit, val, ridge, len(config.knn_ks) if memory else 0)
    state = (
        load_checkpoint(checkpoint, config) if resume and checkpoint and checkpoint.exists() else trainer.new_state()
    )
    while state.generation < config.generations:
        record = trainer.step(state)
        if checkpoint and (state.generation % every == 0 or state.generation == config.generations):
            save_checkpoint(state, checkpoint)
        if progress and (state.generation % every == 0 or state.generation == config.generations):
            progress(
                f"[{ds.name} {config.mode} λ={config.lam:g}] gen {state.generation}/{config.generations} "
                f"fit best {record['fit_best']:.4f} val {record['val']:.4f} (best val {state.best_val:.4f})"
            )
    head.weights = assemble_weights(
        trainer.expand(state.best_theta[None])[0], len(ds.models), proj.shape[1], head.n_knn
    )
    head.meta = training_meta(prep, config, state, time.perf_counter() - started)
    return head


def assemble_weights(model_w: np.ndarray, n_models: int, k_eff: int, n_knn: int = 0) -> np.ndarray:
    """Full (k + 1 + M, M + 3) weights: trained model columns, role columns with a worker prior.

    Replay data records no role outcomes, so the role logits are not trained: they hold a bias
    that prefers the worker; the coordinator adds the transcript's state on top (see
    :mod:`podium.coordinators.learned`).
    """
    n_in = Head.n_inputs(k_eff, n_models, n_knn)
    weights = np.zeros((n_in, n_models + len(ROLE_NAMES)))
    weights[: model_w.shape[0], :n_models] = model_w
    weights[k_eff, n_models + ROLE_NAMES.index("worker")] = 1.0
    return weights


def training_meta(prep: Prepared, config: TrainConfig, state: TrainState, seconds: float) -> dict[str, Any]:
    """What a head file records about how it was trained."""
    return {
        "training_data": {**prep.ds.describe(), "fit_items": len(prep.fit_rows), "val_items": len(prep.val_rows)},
        "objective": {
            "formula": "mean score - lambda * mean cost (cost in mean-call units)",
            "lambda": config.lam,
            "mode": config.mode,
            "turns": config.turns if config.mode == "cascade" else 1,
            "pass_score": PASS_SCORE,
            "cost_unit": prep.cost_unit,
            "verifier": {"false_accept": config.verifier_fa, "false_reject": config.verifier_fr},
        },
        "optimizer": {
            "name": "sep-CMA-ES",
            "generations": state.generation,
            "best_val": state.best_val,
            "popsize": int(state.es.popsize),
        },
        "config": asdict(config),
        "seed": config.seed,
        "train_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
