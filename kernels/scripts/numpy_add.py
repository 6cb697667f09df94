#!/usr/bin/env python3
"""numpy.add(a, b, out=c) on the sizes `oxccl-bench kernels` uses, for comparison.

GB/s = 3 * bytes / time (two buffers read, one written), median of 5 batches that last at
least --min-ms in all, like the Rust bench. Usage:
    /usr/bin/python3 kernels/scripts/numpy_add.py [--dtype float32,float16,float64] [--min-bytes 4K]
        [--max-bytes 256M] [--factor 4] [--min-ms 100] [--json]
"""
import argparse
import json
import statistics
import time

import numpy as np


def measure(fn, min_ms):
    t0 = time.perf_counter()
    fn()  # warm-up: faults the pages in
    once = max(time.perf_counter() - t0, 1e-7)
    iters = max(1, int(min_ms / 5 / 1000 / once + 0.999))
    batches = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        batches.append((time.perf_counter() - t) / iters)
    return statistics.median(batches)


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32,float16,float64")
    p.add_argument("--min-bytes", type=parse_size, default=4096)
    p.add_argument("--max-bytes", type=parse_size, default=256 << 20)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--min-ms", type=float, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rng = np.random.default_rng(1)
    if not args.json:
        print(f"# numpy {np.__version__}: np.add(a, b, out=c), GB/s = 3 * bytes / time")
        print(f"{'type':>8} {'bytes':>11} {'time(us)':>11} {'GB/s':>8}")
    for name in args.dtype.split(","):
        dt = np.dtype(name)
        size = args.min_bytes
        while size <= args.max_bytes:
            n = size // dt.itemsize
            a = rng.uniform(0.5, 2.0, n).astype(dt)
            b = rng.uniform(0.5, 2.0, n).astype(dt)
            c = np.empty_like(a)
            secs = measure(lambda: np.add(a, b, out=c), args.min_ms)
            gbps = 3 * n * dt.itemsize / secs / 1e9
            if args.json:
                print(json.dumps({"backend": "numpy", "dtype": name, "op": "sum", "inputs": 2,
                                  "bytes": n * dt.itemsize, "threads": 1, "time_us": secs * 1e6,
                                  "gbps": gbps}))
            else:
                print(f"{name:>8} {n * dt.itemsize:>11} {secs * 1e6:>11.1f} {gbps:>8.2f}")
            del a, b, c
            size *= args.factor


if __name__ == "__main__":
    main()
