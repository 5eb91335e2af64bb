"""Why the store pre-faults its memory-mapped entry file (``store._populate``).

Copies the tiles of a 5,000 x 5,000 float64 Gram (the engine's own tile plan) into a
fresh, preallocated, shared file mapping in four ways and prints the seconds of each:

* inline: each tile, then its transposed mirror, as the tiles arrive;
* uppers first, then all mirrors;
* pre-fault: ``madvise(MADV_POPULATE_WRITE)`` over the mapping, then inline;
* anonymous memory, inline (what ``gram`` itself does), for scale.

Usage: ``python scripts/bench_mmap_order.py [--dir DIR] [--reps 3]`` (Linux; needs
~200 MB free in DIR, default: a temporary directory).
"""

import argparse
import mmap
import os
import tempfile
import time

import numpy as np

from rntk_numba import RNTK, pack
from rntk_numba.engine import prepare

POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n", type=int, default=5000)
    args = p.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    X = pack(rng.standard_normal((n, 10)))
    plan = prepare(X, None, RNTK()).plan(None, 2)
    blocks = {t.index: rng.standard_normal(t.shape) for t in plan}
    nbytes = 8 * n * n

    def inline(v):
        for t in plan:
            b = blocks[t.index]
            v[t.r0:t.r1, t.c0:t.c1] = b
            if not t.diagonal:
                v[t.c0:t.c1, t.r0:t.r1] = b.T

    def uppers_first(v):
        for t in plan:
            v[t.r0:t.r1, t.c0:t.c1] = blocks[t.index]
        for t in plan:
            if not t.diagonal:
                v[t.c0:t.c1, t.r0:t.r1] = blocks[t.index].T

    def timed_mapping(fill, populate=False):
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            path = os.path.join(d, "m.bin")
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            os.posix_fallocate(fd, 0, nbytes)
            mm = mmap.mmap(fd, nbytes)
            os.close(fd)
            v = np.frombuffer(mm, dtype=np.float64).reshape(n, n)
            t0 = time.perf_counter()
            if populate:
                mm.madvise(POPULATE_WRITE)
            fill(v)
            dt = time.perf_counter() - t0
            del v
            mm.close()
        return dt

    for _ in range(args.reps):
        a = timed_mapping(inline)
        b = timed_mapping(uppers_first)
        c = timed_mapping(inline, populate=True)
        t0 = time.perf_counter()
        inline(np.empty((n, n)))
        d = time.perf_counter() - t0
        print(f"mapped file: inline {a:.3f} s, uppers first {b:.3f} s, pre-fault + inline "
              f"{c:.3f} s; anonymous memory, inline {d:.3f} s")


if __name__ == "__main__":
    main()
