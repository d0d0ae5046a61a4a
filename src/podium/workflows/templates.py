"""Fixed topologies as workflow templates: the named baselines a conductor is compared against.

- ``chain``: plan -> work -> verify (the ``rules`` recipe as a graph).
- ``moa``: ``n`` proposers (distinct worker models where the pool has them) in parallel -> an
  aggregator that writes one answer from all proposals (Mixture-of-Agents).
- ``best-of-n``: the default worker answers ``n`` times in parallel -> a judge picks the best.
- ``debate``: two workers answer, then for ``rounds - 1`` more rounds each sees both previous
  answers and answers again -> a judge writes the final answer.

Each builder takes a (policy-restricted) pool and returns a :class:`Workflow` that uses only its
allowed models in roles they may take.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from ..pool import Pool
from .types import QUERY, Step, Workflow

TOPOLOGIES = ("chain", "moa", "best-of-n", "debate")


def _workers(pool: Pool, n: int) -> list[str]:
    """``n`` worker models, distinct while the pool has enough, the default worker first."""
    first = pool.default_for("worker")
    others = [m for m in pool.candidates("worker") if m != first]
    ordered = [first, *others]
    return [ordered[i % len(ordered)] for i in range(n)]


def _judge(pool: Pool) -> str:
    """The model that writes the final answer from several: the default verifier if it may write, else the worker."""
    verifier = pool.pick("verifier")
    return verifier if verifier and "worker" in pool.models[verifier].roles else pool.default_for("worker")


def chain(pool: Pool, **_: int) -> Workflow:
    """plan -> work -> verify; steps fall back to a worker when no model may plan or verify."""
    steps = []
    if pool.candidates("thinker"):
        steps.append(
            Step(
                id="plan",
                model=pool.default_for("thinker"),
                role="thinker",
                access=[QUERY],
                instruction="Do not solve the task. Write a short numbered plan (at most 4 steps) that a worker can follow.",
            )
        )
    steps.append(
        Step(
            id="work",
            model=pool.default_for("worker"),
            role="worker",
            access=[QUERY, *[s.id for s in steps]],
            instruction="Answer the task. Be correct and concise; give the final answer clearly.",
        )
    )
    if pool.candidates("verifier"):
        steps.append(
            Step(
                id="verify",
                model=pool.default_for("verifier"),
                role="verifier",
                access=[QUERY, "work"],
                instruction="Check the answer to the task.",
            )
        )
    return Workflow(steps=steps, reason="fixed topology: chain (plan, work, verify)")


def moa(pool: Pool, n: int = 3, **_: int) -> Workflow:
    """``n`` proposers in parallel, then one aggregator."""
    proposers = [
        Step(
            id=f"p{i + 1}",
            model=m,
            role="worker",
            access=[QUERY],
            instruction="Answer the task. Be correct and concise; give the final answer clearly.",
        )
        for i, m in enumerate(_workers(pool, n))
    ]
    aggregate = Step(
        id="aggregate",
        model=pool.default_for("worker"),
        role="worker",
        access=[QUERY, *[p.id for p in proposers]],
        instruction="Several models answered the task below. Combine their answers into one best answer: "
        "keep what is correct, fix what is wrong. Give the final answer clearly.",
    )
    return Workflow(
        steps=[*proposers, aggregate], reason=f"fixed topology: mixture of agents ({n} proposers, 1 aggregator)"
    )


def best_of_n(pool: Pool, n: int = 3, **_: int) -> Workflow:
    """The default worker answers ``n`` times, then a judge picks the best answer."""
    worker = pool.default_for("worker")
    samples = [
        Step(
            id=f"a{i + 1}",
            model=worker,
            role="worker",
            access=[QUERY],
            instruction="Answer the task. Be correct and concise; give the final answer clearly.",
        )
        for i in range(n)
    ]
    pick = Step(
        id="pick",
        model=_judge(pool),
        role="worker",
        access=[QUERY, *[s.id for s in samples]],
        instruction="Several candidate answers to the task follow. Pick the best (correct) one and repeat it in full as your reply.",
    )
    return Workflow(
        steps=[*samples, pick], reason=f"fixed topology: best of {n} (one worker sampled {n} times, a judge picks)"
    )


def debate(pool: Pool, rounds: int = 2, **_: int) -> Workflow:
    """Two workers, ``rounds`` rounds seeing each other's previous answer, then a judge."""
    a, b = _workers(pool, 2)
    steps = [
        Step(id="a1", model=a, access=[QUERY], instruction="Answer the task; give the final answer clearly."),
        Step(id="b1", model=b, access=[QUERY], instruction="Answer the task; give the final answer clearly."),
    ]
    for r in range(2, rounds + 1):
        seen = [f"a{r - 1}", f"b{r - 1}"]
        for who, model in (("a", a), ("b", b)):
            steps.append(
                Step(
                    id=f"{who}{r}",
                    model=model,
                    access=[QUERY, *seen],
                    instruction="You and another model answered the task (both answers below). Point out any error "
                    "in either answer, then give your own corrected final answer.",
                )
            )
    last = [f"a{rounds}", f"b{rounds}"]
    steps.append(
        Step(
            id="judge",
            model=_judge(pool),
            role="worker",
            access=[QUERY, *last],
            instruction="Two models debated the task; their final answers follow. Decide which is right and "
            "reply with the correct final answer in full.",
        )
    )
    return Workflow(steps=steps, reason=f"fixed topology: debate (2 workers, {rounds} rounds, a judge)")


BUILDERS: dict[str, Callable[..., Workflow]] = {"chain": chain, "moa": moa, "best-of-n": best_of_n, "debate": debate}


def build(kind: str, pool: Pool, **params: int) -> Workflow:
    """The ``kind`` topology over ``pool``; UsageError for an unknown kind."""
    if kind not in BUILDERS:
        raise UsageError(f"unknown topology '{kind}'; choose one of: {', '.join(TOPOLOGIES)}")
    return BUILDERS[kind](pool, **params)
