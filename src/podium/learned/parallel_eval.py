"""Run ``podium eval replay`` over several datasets in parallel processes, one BLAS thread each.

Datasets are independent (every method is fitted on the dataset's own train split with its own
seeded randomness), so evaluating them in separate processes gives the same numbers as evaluating
them one after the other. Each evaluation runs with **one BLAS thread**: on a shared 2-core machine
OpenBLAS's worker threads spin while waiting for a core (a profile of the old run under load spent
over half its CPU in QR, SVD and small matrix products), and a fixed thread count also keeps
floating-point reductions in one order, so a fixed seed reproduces every digit. The cores are used
by processes instead: the largest dataset starts first.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..cores import usable_cores
from .replay import ReplayDataset, load_replay
from .simulated_verifier import Verifier
from .train import TrainConfig

BLAS_THREADS = 1


def blas_threads(n: int = BLAS_THREADS) -> AbstractContextManager[Any]:
    """Limit BLAS to ``n`` threads inside the block (threadpoolctl; a no-op when it is missing)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    limits: AbstractContextManager[Any] = threadpool_limits(limits=n, user_api="blas")
    return limits


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's malloc keep freed blocks up to ``limit`` bytes instead of returning each to the kernel.

    Training allocates and frees arrays of tens of MB per CMA-ES generation; by default glibc maps
    each one afresh (``mmap``) and unmaps it on free, so every generation page-faults the memory in
    again (41 of 290 CPU-s went to the kernel on mmlu_pro). Numbers are unaffected. False where there is
    no glibc ``mallopt`` (other platforms run as before)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))
    except (OSError, AttributeError):
        return False


def default_jobs(n_datasets: int) -> int:
    """One process per dataset, at most one per available core."""
    return max(1, min(n_datasets, usable_cores()))


def evaluate_one(
    ds: ReplayDataset, config: TrainConfig, turns: int, verifier: Verifier, folds: int, quiet: bool
) -> dict[str, Any]:
    """One dataset's results (``evaluate_dataset``), with one BLAS thread; picklable (no ``_routers``)."""
    from .evaluate import evaluate_dataset
    from .train import stderr_progress

    keep_freed_memory()
    with blas_threads():
        result = evaluate_dataset(
            ds,
            config,
            cascade_turns=turns,
            verifier=verifier,
            folds=folds,
            progress=None if quiet else stderr_progress,
        )
    result.pop("_routers", None)
    return result


def warm_up() -> None:
    """Import what evaluating needs (a worker does this while the parent loads the datasets)."""
    from .evaluate import evaluate_dataset  # noqa: F401
    from .lazy_cma import load_cma

    load_cma()


def evaluate_paths(
    paths: list[str],
    config: TrainConfig,
    turns: int,
    verifier: Verifier,
    folds: int,
    quiet: bool,
    jobs: int | None = None,
) -> list[dict[str, Any]]:
    """Results of every dataset folder, in the order given, evaluated in ``jobs`` processes.

    Every folder is loaded and checked here before any training starts (a bad one fails first); the
    worker processes start and import meanwhile, then receive the loaded datasets, the largest (by
    recorded cells) first."""
    jobs = default_jobs(len(paths)) if jobs is None else jobs
    if jobs <= 1 or len(paths) <= 1:
        datasets = [load_replay(p) for p in paths]
        return [evaluate_one(ds, config, turns, verifier, folds, quiet) for ds in datasets]
    context = multiprocessing.get_context("spawn")  # no fork of a process whose BLAS threads are running
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for _ in range(jobs):  # one submit starts one worker
            pool.submit(warm_up)
        datasets = [load_replay(p) for p in paths]
        order = sorted(range(len(datasets)), key=lambda i: -datasets[i].scores.size)
        futures = {i: pool.submit(evaluate_one, datasets[i], config, turns, verifier, folds, quiet) for i in order}
        return [futures[i].result() for i in range(len(datasets))]
