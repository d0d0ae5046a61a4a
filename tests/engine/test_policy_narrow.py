"""Policy.narrow: the intersection of two policies, and ``self`` itself when the other restricts nothing
(the server narrows every key's policy by the request's, which most requests do not set)."""

from __future__ import annotations

from podium.policy import Policy


def test_narrowing_intersects_every_field() -> None:
    key = Policy(allowed_models=["a", "b", "c"], exclude_models=["x"], allowed_regions=["eu", "us"])
    request = Policy(allowed_models=["b", "c", "d"], exclude_models=["a"], allowed_regions=["eu"])
    assert key.narrow(request) == Policy(
        allowed_models=["b", "c"], exclude_models=["a", "x"], allowed_regions=["eu"], allowed_providers=None
    )


def test_narrowing_by_nothing_keeps_the_policy() -> None:
    key = Policy(allowed_models=["a"], exclude_models=["x", "y"], allowed_providers=["p"])
    assert Policy().unrestricted() and not key.unrestricted()
    assert key.narrow(Policy()) is key
    assert Policy(exclude_models=["m"]).narrow(Policy()) == Policy(exclude_models=["m"])


def test_narrowing_by_nothing_still_gives_the_intersections_form() -> None:
    """An exclusion list out of order (or repeated) comes back sorted and once, as any intersection does."""
    key = Policy(exclude_models=["y", "x", "y"])
    narrowed = key.narrow(Policy())
    assert narrowed is not key and narrowed.exclude_models == ["x", "y"]
    assert narrowed.describe() == key.narrow(Policy(exclude_models=["x"])).describe()


def test_describe_names_only_what_restricts() -> None:
    open_policy = Policy()
    assert open_policy.describe() == {}
    first = open_policy.describe()
    first["allowed_models"] = ["x"]  # a run's copy: changing it changes no other run's
    assert open_policy.describe() == {}
    assert Policy(exclude_models=["a"]).describe() == {"exclude_models": ["a"]}
    assert Policy(allowed_regions=["eu"], allowed_models=["m"]).describe() == {
        "allowed_models": ["m"],
        "allowed_regions": ["eu"],
    }
