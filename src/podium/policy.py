"""Policy: which models of a pool a run may use (per API key or per request): names, providers and
regions (data residency). ``pool.restrict(policy)`` applies one; :meth:`Policy.narrow` intersects two."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .pool import ModelSpec


class Policy(BaseModel):
    """Restrictions on which models a run may use (per API key or per request)."""

    model_config = ConfigDict(extra="forbid")
    allowed_models: list[str] | None = None
    exclude_models: list[str] = Field(default_factory=list)
    allowed_providers: list[str] | None = None
    allowed_regions: list[str] | None = None

    def allows(self, spec: ModelSpec) -> bool:
        """Whether this policy lets a run send data to ``spec`` (with deployments: to one of them)."""
        if self.allowed_models is not None and spec.name not in self.allowed_models:
            return False
        if spec.name in self.exclude_models:
            return False
        if spec.deployments:
            return any(self.allows_place(d) for d in spec.deployment_specs())
        return self.allows_place(spec)

    def allows_place(self, spec: ModelSpec) -> bool:
        """Whether the provider and region of ``spec`` are allowed (names aside)."""
        if self.allowed_providers is not None and spec.provider_name not in self.allowed_providers:
            return False
        return self.allowed_regions is None or spec.region in self.allowed_regions

    def narrow(self, other: Policy) -> Policy:
        """The intersection of two policies: ``other`` can only restrict ``self`` further. ``self``
        itself when ``other`` restricts nothing and ``self`` is already in the intersection's form
        (most requests: no ``podium.policy`` of their own)."""
        if other.unrestricted() and self.exclude_models == sorted(set(self.exclude_models)):
            return self

        def meet(a: list[str] | None, b: list[str] | None) -> list[str] | None:
            if a is None:
                return b
            return a if b is None else [x for x in a if x in b]

        return Policy(
            allowed_models=meet(self.allowed_models, other.allowed_models),
            exclude_models=sorted(set(self.exclude_models) | set(other.exclude_models)),
            allowed_providers=meet(self.allowed_providers, other.allowed_providers),
            allowed_regions=meet(self.allowed_regions, other.allowed_regions),
        )

    def unrestricted(self) -> bool:
        """Whether this policy restricts nothing."""
        return not self.exclude_models and all(
            v is None for v in (self.allowed_models, self.allowed_providers, self.allowed_regions)
        )

    def describe(self) -> dict[str, Any]:
        """Only the fields that restrict something."""
        if self.unrestricted():
            return {}  # every field at its default: what the dump would give, without it (each run)
        return self.model_dump(exclude_defaults=True)
