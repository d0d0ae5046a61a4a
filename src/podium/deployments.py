"""Several deployments behind one pool model name (LiteLLM's ``model_list`` convention): the specs.

A pool model with ``deployments:`` is one name to the engine, the server and the traces; each
deployment is a full :class:`~podium.pool.ModelSpec` of its own (``MODEL@DEPLOYMENT``), made from
the model's keys with the deployment's keys on top. Keys the model itself does not write come
from its first deployment for the model (so ``base_url`` need not be repeated), never from one
deployment to another. A policy that excludes a deployment's region or provider excludes that
deployment only (:func:`restricted`). Routing among them: :mod:`podium.reliability.deployments`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from .pool import ModelSpec, Policy


class DeploymentSpec(BaseModel):
    """One deployment of a pool model (LiteLLM's ``model_list`` entries sharing a name): where to reach
    it and its own limits. Keys it does not set come from the model (never from another deployment)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1)  # default: its position, 1-based
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] | None = None
    region: str | None = None
    provider: str | None = None
    input_usd_per_mtok: float | None = Field(default=None, ge=0)
    output_usd_per_mtok: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)  # requests started in any 60 s; over it the deployment is skipped
    tpm: int | None = Field(default=None, ge=1)  # tokens of calls finished in the last 60 s
    weight: float = Field(default=1.0, gt=0)  # simple-shuffle: relative share of the traffic


RoutingStrategy = Literal["simple-shuffle", "least-busy", "latency", "cost"]


# The keys a deployment may set that are also keys of the model.
DEPLOYMENT_KEYS = (
    "base_url",
    "model",
    "api_key_env",
    "headers",
    "region",
    "provider",
    "input_usd_per_mtok",
    "output_usd_per_mtok",
)
_NOT_INHERITED = {"name", "deployments", "routing", "routing_seed", "fallbacks"}


def _as_dict(item: Any) -> Any:
    return item.model_dump(exclude_unset=True) if isinstance(item, BaseModel) else item


def fill_from_first(data: Any) -> tuple[Any, frozenset[str] | None]:
    """``data`` with the first deployment's keys where the model sets none, and the keys the model
    wrote itself (None: no deployments, nothing to remember)."""
    if not isinstance(data, dict) or not data.get("deployments") or not isinstance(data["deployments"], list):
        return data, None
    first = _as_dict(data["deployments"][0])
    own = frozenset(k for k in data if k in DEPLOYMENT_KEYS)
    if not isinstance(first, dict):
        return data, own
    extra = {k: first[k] for k in DEPLOYMENT_KEYS if k in first and first[k] is not None and k not in data}
    return {**data, **extra}, own


def deployment_name(spec: ModelSpec, index: int) -> str:
    """The ``index``-th deployment's name (its own, else its 1-based position)."""
    return spec.deployments[index].name or str(index + 1)


def _build(spec: ModelSpec, index: int) -> ModelSpec:
    from .pool import ModelSpec

    own = spec._own_keys
    base = {
        k: v for k, v in spec.model_dump().items() if k not in _NOT_INHERITED and (k not in DEPLOYMENT_KEYS or k in own)
    }
    over = spec.deployments[index].model_dump(exclude_unset=True, exclude={"name", "rpm", "tpm", "weight"})
    name = deployment_name(spec, index)
    try:
        return ModelSpec.model_validate({**base, **over, "name": f"{spec.name}@{name}"})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'keys'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"model '{spec.name}': deployment '{name}': {problems}") from None


def deployment_specs(spec: ModelSpec) -> list[ModelSpec]:
    """One spec per deployment of ``spec``, each built once (the same objects for every view of it)."""
    out = []
    for index in range(len(spec.deployments)):
        key = ("deployment", deployment_name(spec, index))
        if key not in spec._memo:
            spec._memo[key] = _build(spec, index)
        out.append(spec._memo[key])
    return out


def check_deployments(spec: ModelSpec) -> None:
    """ValueError naming the model and deployment when a deployment is not a valid model."""
    names = [deployment_name(spec, i) for i in range(len(spec.deployments))]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"model '{spec.name}': duplicate deployment names {dupes}; give each a unique name")
    deployment_specs(spec)


def restricted(spec: ModelSpec, policy: Policy) -> ModelSpec | None:
    """``spec`` as ``policy`` may use it: None if excluded, else the model with only the allowed
    deployments (memoized per subset, so reliability layers built for it are reused)."""
    if not policy.allows(spec):
        return None
    if not spec.deployments:
        return spec
    specs = deployment_specs(spec)
    keep = [
        d.model_copy(update={"name": deployment_name(spec, i)})  # a subset keeps the deployments' names
        for i, d in enumerate(spec.deployments)
        if policy.allows_place(specs[i])
    ]
    if len(keep) == len(spec.deployments):
        return spec
    key = ("under", tuple(d.name for d in keep))
    if key not in spec._memo:
        spec._memo[key] = spec.model_copy(update={"deployments": keep})
    found: ModelSpec = spec._memo[key]
    return found
