"""OpenRouter's routing fields: a per-request ``models`` fallback list and ``provider`` preferences.

Both only narrow what the API key (and the request's ``podium`` policy) allows; they never widen it.

- ``models: [A, B]`` (pass-through): after the requested model, try A then B, instead of the pool's
  configured ``fallbacks``. A name the key may not use is a 404, worded as for an unknown model.
- ``provider``:

  | field | effect |
  |---|---|
  | ``only: [p]`` | only models of these providers (``allowed_providers``) |
  | ``ignore: [p]`` | never models of these providers |
  | ``order: [p]`` | pass-through: the fallback chain tries these providers first, in this order |
  | ``allow_fallbacks: false`` | pass-through: the requested model only, no fallback |
  | ``max_price: {prompt, completion}`` | USD per million tokens, as OpenRouter: pricier models are excluded |
  | ``data_collection: deny`` | only models tagged ``no-data-collection`` and models run in-process (local, scripted) |
  | ``sort``, ``require_parameters``, ``quantizations``, ``zdr`` | accepted, ignored |

  On a tier these restrict which models may take each role (excluded models, allowed providers);
  ``order`` and ``allow_fallbacks`` apply to pass-through chains only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..pool import ModelSpec, Policy, Pool
from .errors import bad_request

IN_PROCESS_BACKENDS = ("local", "scripted", "check")
NO_DATA_COLLECTION_TAG = "no-data-collection"


class MaxPrice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: float | None = Field(default=None, ge=0)
    completion: float | None = Field(default=None, ge=0)
    request: float | None = Field(default=None, ge=0)  # accepted; podium prices tokens only
    image: float | None = Field(default=None, ge=0)


class ProviderPreferences(BaseModel):
    """OpenRouter's ``provider`` object."""

    model_config = ConfigDict(extra="forbid")
    order: list[str] | None = Field(default=None, max_length=64)
    only: list[str] | None = Field(default=None, max_length=64)
    ignore: list[str] | None = Field(default=None, max_length=64)
    allow_fallbacks: bool = True
    max_price: MaxPrice | None = None
    data_collection: Literal["allow", "deny"] = "allow"
    sort: str | None = None
    require_parameters: bool | None = None
    quantizations: list[str] | None = None
    zdr: bool | None = None

    def excludes(self, spec: ModelSpec) -> bool:
        """Whether these preferences rule ``spec`` out."""
        if self.ignore and spec.provider_name in self.ignore:
            return True
        price = self.max_price
        if price and price.prompt is not None and spec.input_usd_per_mtok > price.prompt:
            return True
        if price and price.completion is not None and spec.output_usd_per_mtok > price.completion:
            return True
        private = spec.backend in IN_PROCESS_BACKENDS or NO_DATA_COLLECTION_TAG in spec.tags
        return self.data_collection == "deny" and not private

    def policy(self, pool: Pool) -> Policy:
        """The preferences as a policy over ``pool`` (to narrow the key's)."""
        excluded = [m.name for m in pool.config.models if self.excludes(m)]
        return Policy(allowed_providers=self.only, exclude_models=excluded)


def fallback_chain(
    requested: str,
    chain: list[str],
    models: list[str] | None,
    prefs: ProviderPreferences | None,
    pool: Pool,
    allowed: Policy,
) -> list[str]:
    """The pass-through's chain after ``models`` and ``provider``: the requested model first, then the
    fallbacks the policy ``allowed`` permits, in the order the request asks."""
    specs = {m.name: m for m in pool.config.models}
    if models is not None:
        unknown = [n for n in models if n not in specs or not allowed.allows(specs[n])]
        if unknown:
            raise bad_request(
                f"models: '{unknown[0]}' does not exist or is not allowed for this request; "
                "GET /v1/models lists the models served",
                param="models",
                code="model_not_found",
            )
        chain = [requested, *[n for n in models if n != requested]]
    chain = list(dict.fromkeys(chain))
    if prefs is None:
        return chain
    if not prefs.allow_fallbacks:
        return chain[:1]
    if prefs.order:
        rank = {p: i for i, p in enumerate(prefs.order)}
        rest = sorted(chain[1:], key=lambda n: rank.get(specs[n].provider_name, len(rank)))
        chain = [chain[0], *rest]
    return chain
