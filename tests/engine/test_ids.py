"""Random ids drawn in batches: unique, hexadecimal, and never shared by a forked child."""

from __future__ import annotations

import os
import re

from podium.ids import random_hex
from podium.types import new_run_id


def test_ids_are_unique_hex_of_the_length_asked() -> None:
    ids = [random_hex(24) for _ in range(5000)]  # ≈ 20 batches
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert re.fullmatch(r"run_[0-9a-f]+_[0-9a-f]{8}", new_run_id())


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    random_hex()  # the parent now holds a batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids go back to the parent
        os.write(write, " ".join(random_hex() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    child = set(os.read(read, 1 << 16).decode().split())
    os.waitpid(pid, 0)
    parent = {random_hex() for _ in range(300)}
    assert len(child) == 10 and not child & parent
