"""Random hex ids (run, request and completion ids) from the operating system's random source,
drawn 256 at a time: ``uuid.uuid4().hex`` makes a system call and a UUID object for each, ≈ 6 µs,
and a served request needs three or four of them.

A forked child starts with an empty supply, so no two processes hand out the same id.
"""

from __future__ import annotations

import os

_BATCH = 256
_supply: list[str] = []  # 32 hex digits each; list.pop and list.extend are atomic under the GIL


def random_hex(digits: int = 32) -> str:
    """``digits`` (at most 32) random hexadecimal digits, as unpredictable as ``uuid.uuid4()``'s."""
    try:
        return _supply.pop()[:digits]
    except IndexError:
        block = os.urandom(16 * _BATCH).hex()
        _supply.extend(block[i : i + 32] for i in range(0, len(block), 32))
        return _supply.pop()[:digits]


os.register_at_fork(after_in_child=_supply.clear)
