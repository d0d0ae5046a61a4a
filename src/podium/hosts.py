"""The ``Host`` check of podium's keyless HTTP servers (``podium serve`` without keys, ``podium ui``).

A server without authentication trusts whoever can reach it: local processes. A web page the user
opens can reach it too, under the attacker's own domain name re-pointed at 127.0.0.1 (DNS
rebinding); the browser then lets that page read the answers. Such a request carries the attacker's
name in ``Host``, so these servers answer only requests whose ``Host`` is a loopback name, an IP
address literal (rebinding needs a name), or a name the operator allowed.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "[::1]"})


def host_name(value: str) -> str:
    """A ``Host`` header's name, lower-cased, without the port (``[::1]:8765`` -> ``[::1]``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.split(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(value: str | None, names: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a request with this ``Host`` header may be answered by a keyless server."""
    name = host_name(value or "")
    if not name:
        return False  # HTTP/1.1 requires Host; a browser always sends one
    if name in LOOPBACK_NAMES or name in names:
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False
