""" "Did you mean ...?" hints for names the user typed (commands, pools, coordinators, models)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option most like ``word`` (case-insensitive), or None when nothing is close."""
    choices = list(options)
    lowered = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    if found:
        return lowered[found[0]]
    prefixed = [c for c in choices if c.lower().startswith(word.lower()) or word.lower().startswith(c.lower())]
    return prefixed[0] if len(prefixed) == 1 and word else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest option, else ``""`` (append it to an error message)."""
    match = closest(word, options)
    return f" (did you mean '{match}'?)" if match and match != word else ""
