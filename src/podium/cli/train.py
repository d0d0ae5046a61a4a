"""``podium train replay`` and ``podium eval replay``: fit and benchmark learned coordinator heads.

Needs the ``train`` extra (numpy, cma, pyarrow, matplotlib); imported lazily so that the rest of
the CLI works without it.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import click

from ..errors import missing_extra
from .doctor import EXTRAS
from .options import SuggestingGroup


def _encoder_spec(value: str | None) -> dict[str, Any]:
    """``--encoder``: a name (``hashed``, ``minilm``, ``smollm2``) or a JSON spec (``{"name": "smollm2", "layers": 8}``)."""
    if value is None:
        return {"name": "hashed"}
    if value.lstrip().startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not a JSON object: {exc}", param_hint="--encoder") from None
        if not isinstance(spec, dict) or "name" not in spec:
            raise click.BadParameter('a JSON spec needs "name", e.g. {"name": "smollm2"}', param_hint="--encoder")
        return spec
    return {"name": value}


ENCODER_HELP = (
    "Text encoder of the head: hashed (default), minilm (extra 'minilm'), smollm2 (SmolLM2 hidden states, extra "
    '\'local\'), or a JSON spec such as \'{"name": "smollm2", "layers": 8}\'.'
)


TRAIN_MODULES = tuple(EXTRAS["train"][0])  # what the train extra provides (as podium doctor checks it)


def _require_train_extra() -> None:
    """Fail with an install hint when the train extra is missing (found, not imported: cma alone takes 2 s)."""
    for module in TRAIN_MODULES:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(module, "train")


@click.group(cls=SuggestingGroup)
def train() -> None:
    """Train learned coordinator heads (needs: pip install 'podium[train]').

    \b
    Examples:
      podium train replay example --out head.npz      # the dataset shipped with podium
      podium ask --pool replay-example --coordinator learned:head.npz "What is 12 * 7?"
    """


@train.command("replay")
@click.argument("dataset_dir")
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Head file to write (.npz)."
)
@click.option(
    "--mode",
    type=click.Choice(["single", "cascade"]),
    default="single",
    show_default=True,
    help="single: one model per query; cascade: up to --turns calls, the recorded score as verifier.",
)
@click.option(
    "--lam", type=click.FloatRange(0), default=0.0, show_default=True, help="Cost weight λ (per mean call cost)."
)
@click.option(
    "--turns", type=click.IntRange(1, 20), default=3, show_default=True, help="Cascade: most calls per query."
)
@click.option("--generations", type=click.IntRange(0), default=None, help="sep-CMA-ES generations [default: 60].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Save the optimiser state here."
)
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists.")
@click.option(
    "--folds",
    type=click.IntRange(0, 20),
    default=5,
    show_default=True,
    help="Single mode: cross-validation folds for the safe gate and the cost-knob table (0: the plain head, no gate).",
)
@click.option("--encoder", default=None, help=ENCODER_HELP)
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def train_replay(dataset_dir: str, **options: Any) -> None:
    """Train a head on the train split of a replay dataset and write it to --out.

    Single mode (default): the head is *safe*: it falls back to the best single model unless K-fold
    cross-validation on train shows a gain that survives a paired bootstrap, and it carries the
    calibrated cost knob (``learned:PATH@0.3``, or ``podium: {"cost_weight": 0.3}`` in the server).

    DATASET_DIR is a replay dataset folder, or `example` for the small synthetic one shipped with
    podium (300 questions in 5 tasks, outcomes of 4 models named as in the `replay-example` pool).

    \b
    Dataset format (a folder):
      items.parquet     one row per question: item_id (str, unique), task (str or null),
                        split (train | test | eval_only), text (the question)
      outcomes.parquet  one row per (item, model): item_id, model (a pool model name),
                        score (float in [0, 1], 1 = correct), optional cost_usd (float)
                        and output_chars (int); a missing pair is unknown, not 0
      models.json       optional prices per model: {"m": {"input_usd_per_mtok": 0.1,
                        "output_usd_per_mtok": 0.4}}, or {}
    `podium traces export --format replay DIR` writes one from your own runs. Training fits on
    the train split (at least 10 items) and validates on part of it.

    \b
    Examples:
      podium train replay example --out head.npz
      podium train replay my-runs/ --out head.npz --mode cascade --lam 0.5
      podium train replay data/ --out head.npz --checkpoint ckpt.npz --resume
    The head's model names must be pool model names to drive a pool:
      podium ask --pool replay-example --coordinator learned:head.npz "What is 12 * 7?"
    """
    _require_train_extra()
    _train_replay(dataset_dir, **options)  # the options, typed, are _train_replay's parameters


def _train_replay(
    dataset_dir: str,
    out: Path,
    mode: str,
    lam: float,
    turns: int,
    generations: int | None,
    seed: int,
    checkpoint: Path | None,
    resume: bool,
    folds: int,
    encoder: str | None,
    quiet: bool,
) -> None:
    """``podium train replay`` once its options are parsed: train, pick the safe head, write it."""
    from ..learned.replay import load_replay
    from ..learned.train import TrainConfig, prepare, stderr_progress, train_head

    ds = load_replay(dataset_dir)  # a folder or the name of a shipped dataset
    gens = TrainConfig.generations if generations is None else generations
    config = TrainConfig(mode=mode, lam=lam, turns=turns, seed=seed, generations=gens, encoder=_encoder_spec(encoder))
    progress = None if quiet else stderr_progress
    if progress:
        progress(f"[{ds.name}] {len(ds.texts)} items, {len(ds.models)} models; encoding")
    prep = prepare(ds, config, progress=progress)
    head = train_head(prep, config, checkpoint=checkpoint, resume=resume, progress=progress)
    if mode == "single" and folds >= 2:
        from ..learned.routers import Routers, selection_of
        from ..learned.simulated_verifier import PERFECT

        routers = Routers(prep, config, progress, folds)
        routers.heads[(lam, "single", PERFECT)] = head  # reuse the head just trained (and checkpointed)
        head = routers.safe_head((lam,), objective_lam=lam)
        if progress:
            progress(f"[{ds.name}] {selection_of(head)['reason']}")
    path = head.save(out)
    click.echo(
        f"wrote {path}: {len(head.models)} models, {mode}, λ={lam:g}, validation objective "
        f"{head.meta['optimizer']['best_val']:.4f}; use it with --coordinator learned:{path}"
    )


@click.group("eval", cls=SuggestingGroup)
def eval_group() -> None:
    """Benchmark coordinators offline (needs: pip install 'podium[train]').

    \b
    Examples:
      podium eval replay example --json-out results.json --plot curve.png
    """


@eval_group.command("replay")
@click.argument("dataset_dirs", nargs=-1, required=True)
@click.option(
    "--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write all results as JSON."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the cost–quality plot (PNG).",
)
@click.option(
    "--turns", type=click.IntRange(1, 20), default=3, show_default=True, help="Cascade: most calls per query."
)
@click.option("--generations", type=click.IntRange(0), default=None, help="sep-CMA-ES generations [default: 60].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--false-accept",
    type=click.FloatRange(0, 1),
    default=None,
    help="Simulated verifier of the cascades: false-accept rate [default: podium.learned.simulated_verifier.REALISTIC].",
)
@click.option(
    "--false-reject", type=click.FloatRange(0, 1), default=None, help="Simulated verifier: false-reject rate."
)
@click.option(
    "--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="Cross-validation folds on train."
)
@click.option("--encoder", default=None, help=ENCODER_HELP)
@click.option(
    "--jobs",
    type=click.IntRange(1),
    default=None,
    help="Datasets evaluated in parallel processes, one BLAS thread each [default: one per core, at most one per dataset].",
)
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def eval_replay(
    dataset_dirs: tuple[str, ...],
    json_out: Path | None,
    plot_path: Path | None,
    turns: int,
    generations: int | None,
    seed: int,
    false_accept: float | None,
    false_reject: float | None,
    folds: int,
    encoder: str | None,
    jobs: int | None,
    quiet: bool,
) -> None:
    """Train and compare the learned coordinator with the baselines on each dataset (same settings for all).

    Writes the cost–quality plot to --plot and the cascade gain vs verifier accuracy next to it
    (NAME_verifier.png). Each DATASET_DIR is a replay dataset folder (format: podium train replay --help) or `example`.

    \b
    Examples:
      podium eval replay example
      podium eval replay data/a data/b --turns 3 --json-out results.json --plot curve.png
    """
    _require_train_extra()
    from ..learned.encoders import get_encoder
    from ..learned.eval_report import format_table, write_json
    from ..learned.parallel_eval import evaluate_paths
    from ..learned.simulated_verifier import REALISTIC, Verifier
    from ..learned.train import TrainConfig

    gens = TrainConfig.generations if generations is None else generations
    config = TrainConfig(seed=seed, generations=gens, encoder=_encoder_spec(encoder))
    get_encoder(config.encoder)  # an unknown encoder or a missing extra fails now, before any training
    fa = REALISTIC.false_accept if false_accept is None else false_accept
    fr = REALISTIC.false_reject if false_reject is None else false_reject
    verifier = Verifier(fa, fr, seed)
    results = evaluate_paths(list(dataset_dirs), config, turns, verifier, folds, quiet, jobs)
    for result in results:
        click.echo(format_table(result) + "\n")
    if json_out:
        args = _eval_args(dataset_dirs, turns, seed, fa, fr, folds, generations, encoder)
        write_json(results, json_out, "podium eval replay " + " ".join(shlex.quote(a) for a in args))
        click.echo(f"wrote {json_out}")
    if plot_path:
        _plots(results, plot_path)


def _eval_args(
    dataset_dirs: tuple[str, ...],
    turns: int,
    seed: int,
    fa: float,
    fr: float,
    folds: int,
    generations: int | None,
    encoder: str | None,
) -> list[str]:
    """The ``podium eval replay`` arguments that reproduce this evaluation (recorded in --json-out)."""
    return [
        *map(str, dataset_dirs),
        "--turns",
        str(turns),
        "--seed",
        str(seed),
        "--false-accept",
        f"{fa:g}",
        "--false-reject",
        f"{fr:g}",
        "--folds",
        str(folds),
        *(["--generations", str(generations)] if generations is not None else []),
        *(["--encoder", encoder] if encoder is not None else []),
    ]


def _plots(results: list[Any], plot_path: Path) -> None:
    """The cost–quality plot at ``plot_path`` and the cascade gain vs verifier accuracy next to it."""
    from ..learned.eval_plot import plot_verifier_gain
    from ..learned.eval_report import plot

    plot(results, plot_path)
    verifier_path = plot_path.with_name(plot_path.stem + "_verifier" + (plot_path.suffix or ".png"))
    plot_verifier_gain(results, verifier_path)
    click.echo(f"wrote {plot_path} and {verifier_path}")


from .train_live import live  # noqa: E402  (``podium train live``; its heavy imports are lazy)

train.add_command(live)
