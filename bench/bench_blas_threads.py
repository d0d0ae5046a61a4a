"""CPU and wall time of eval replay's small BLAS operations with 2 BLAS threads vs 1, interleaved.

The operations: 200 single-query projections (1 x 2048) @ (2048 x 256) (KnnMemory.embed per
decision) and 3 x (QR of a 600 x 272 matrix + a 2048 x 600 x 272 product) (the randomized PCA).
Prints one line per round and the load; on a busy shared machine OpenBLAS's extra thread spins.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(rounds: int = 3) -> None:
    q = np.random.default_rng(0).random((1, 2048)).astype(np.float32)
    b = np.random.default_rng(1).random((2048, 256)).astype(np.float32)
    x = np.random.default_rng(2).random((600, 2048)).astype(np.float32)
    y = np.random.default_rng(3).random((600, 272)).astype(np.float32)
    print("load", os.getloadavg(), flush=True)
    for rnd in range(rounds):
        for n in (2, 1):
            with threadpool_limits(n, "blas"):
                c, t = cpu(), time.perf_counter()
                for _ in range(200):
                    q @ b
                for _ in range(3):
                    np.linalg.qr(y)
                    x.T @ y
                print(
                    f"round {rnd} threads {n}: cpu {cpu() - c:.3f} s wall {time.perf_counter() - t:.3f} s", flush=True
                )
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
