"""Tiers: virtual models (``podium``, ``podium-ultra``) defined as data, not code.

A tier names a coordinator, a turn limit, how models are preferred for each role, and whether
every answer must be verified. :func:`load_tiers` reads the shipped ``tiers.yaml`` or a file;
:meth:`Tier.pool_view` orders a pool's models by the tier's preference, and
:meth:`Tier.coordinator_for` wraps the coordinator so an ``always_verify`` tier ends on a check.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import parse_yaml, read_text_file
from ..coordinators import get_coordinator
from ..coordinators.base import Coordinator, RunState
from ..errors import ConfigError
from ..pool import ModelSpec, Pool, RoleDefaults, RoleName
from ..types import Decision, Role

Preference = Literal["defaults", "cheapest", "strongest"]


def _default_roles() -> list[RoleName]:
    return ["thinker", "worker", "verifier"]


class Tier(BaseModel):
    """One virtual model: an orchestration recipe over the server's pool."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:-]+$")
    description: str = ""
    coordinator: str = "rules"
    max_turns: int = Field(default=3, ge=1, le=100)
    prefer: Preference = "defaults"
    always_verify: bool = False
    roles: list[RoleName] = Field(default_factory=_default_roles)
    max_cost_usd: float | None = Field(default=None, ge=0)
    deadline_s: float | None = Field(default=None, gt=0)
    max_depth: int = Field(default=2, ge=0, le=5)  # workflow coordinators: nesting of 'self' steps
    max_parallel: int = Field(default=4, ge=1, le=64)  # workflow coordinators: concurrent model calls
    speculative: bool = False  # streams: send worker drafts at once, revisions after a marker (server/speculative.py)

    def pool_view(self, pool: Pool) -> Pool:
        """``pool`` with its models ordered (and defaults cleared) per ``prefer``."""
        if self.prefer == "defaults":
            return pool
        models = (
            sorted(pool.config.models, key=_price)
            if self.prefer == "cheapest"
            else sorted(pool.config.models, key=_strength)
        )
        config = pool.config.model_copy(update={"models": models, "defaults": RoleDefaults()})
        return Pool(config, pool.policy, pool.source)

    def coordinator_for(self) -> Coordinator:
        """The tier's coordinator, wrapped to verify last when ``always_verify`` is set.

        Workflow planners (conductor, topology:NAME) take ``max_depth`` / ``max_parallel``; their
        plans decide verification themselves, so ``always_verify`` does not wrap them."""
        inner = get_coordinator(self.coordinator)
        if getattr(inner, "plans_workflows", False):
            inner.max_depth, inner.max_parallel = self.max_depth, self.max_parallel  # type: ignore[attr-defined]
            return inner
        return VerifyLast(inner) if self.always_verify else inner


def _price(m: ModelSpec) -> float:
    return m.input_usd_per_mtok + m.output_usd_per_mtok


def _strength(m: ModelSpec) -> tuple[bool, float]:
    return ("strong" not in m.tags, -_price(m))


class VerifyLast:
    """Wraps a coordinator so a run never ends on an unverified answer: the last turn verifies."""

    def __init__(self, inner: Coordinator) -> None:
        self.inner = inner
        self.name = f"{inner.name}+verify"

    async def decide(self, state: RunState) -> Decision:
        decision = await self.inner.decide(state)
        if state.turns_left <= 1 and state.has_answer and decision.role != Role.VERIFIER:
            model = state.pool.default_for(Role.VERIFIER)
            return Decision(role=Role.VERIFIER, model=model, reason=f"{decision.reason} [tier: the last turn verifies]")
        return decision


class TierSet(BaseModel):
    """A tiers file."""

    model_config = ConfigDict(extra="forbid")
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TierSet:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tier names: {dupes}")
        return self

    def by_name(self) -> dict[str, Tier]:
        return {t.name: t for t in self.tiers}


def load_tiers(path: str | Path | None = None) -> TierSet:
    """The shipped tiers, or those of the YAML file at ``path``; ConfigError names file and key."""
    if path is None:
        source, text = "shipped tiers.yaml", (resources.files("podium.server") / "tiers.yaml").read_text()
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(f"{path}: tiers file not found; pass an existing YAML file to --tiers")
        source, text = str(file), read_text_file(file, "tiers")
    tiers = parse_yaml(text, source, TierSet, "tiers config")
    for tier in tiers.tiers:
        _check_coordinator(tier, source)
    return tiers


def _check_coordinator(tier: Tier, source: str) -> None:
    from ..coordinators import COORDINATOR_TYPES, coordinator_usages

    name = tier.coordinator.partition(":")[0]
    if COORDINATOR_TYPES.get(name) is None:
        raise ConfigError(
            f"{source}: tiers.{tier.name}.coordinator: unknown coordinator '{tier.coordinator}'; "
            f"use one of: {', '.join(coordinator_usages())}"
        )
