#!/usr/bin/env python3
"""What an idle oxccl rank costs the others: rank 0 works (a fixed busy loop, timed) while the
other ranks wait for it in an all-reduce; prints the busy loop's wall time and the CPU time each
waiting rank used while it waited.

Usage: python bench/scripts/idle_cpu.py [--ranks N] [--work-s S] [--repeats R]
Run it once per build (each venv's python) to compare: less waiter CPU and a shorter busy loop
are better. The load of the machine matters: quote it (uptime) with the numbers.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def worker(rank, size, addr, work_s, repeats):
    import numpy as np
    import oxccl

    comm = oxccl.Communicator.init(rank, size, addr, b"idle-cpu-secret", timeout=120)
    x = np.ones(1024, dtype=np.float32)
    comm.all_reduce(x)  # warm up: every link made
    # Calibrate the busy loop to about work_s on an idle machine (rank 0 only), then agree.
    n = np.array([0], dtype=np.int64)
    if rank == 0:
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.2:
            busy(2000)
            k += 1
        n[0] = int(k * work_s / 0.2)
    comm.broadcast(n, 0)
    out = []
    for _ in range(repeats):
        comm.barrier()
        if rank == 0:
            t0 = time.perf_counter()
            for _ in range(int(n[0])):
                busy(2000)
            busy_s = time.perf_counter() - t0
            comm.all_reduce(x)
            out.append({"busy_s": busy_s})
        else:
            c0, t0 = time.process_time(), time.perf_counter()
            comm.all_reduce(x)
            out.append({"wait_cpu_s": time.process_time() - c0,
                        "wait_s": time.perf_counter() - t0})
    print(json.dumps({"rank": rank, "runs": out}), flush=True)


def busy(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--work-s", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        rank, size, addr = int(a.worker[0]), int(a.worker[1]), a.worker[2]
        worker(rank, size, addr, a.work_s, a.repeats)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--work-s", str(a.work_s), "--repeats", str(a.repeats),
         "--worker", str(r), str(a.ranks), addr],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        for r in range(a.ranks)]
    res = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    busy_s = sorted(r["busy_s"] for r in res[0]["runs"])
    cpu = sorted(r["wait_cpu_s"] for w in res[1:] for r in w["runs"])
    wait = sorted(r["wait_s"] for w in res[1:] for r in w["runs"])
    med = lambda v: v[len(v) // 2]
    print(f"ranks={a.ranks} work_s={a.work_s} x{a.repeats}: busy total {sum(busy_s):.3f} s "
          f"(median {med(busy_s) * 1e3:.2f} ms) | waiters' cpu {sum(cpu):.3f} s of "
          f"{sum(wait):.3f} s waited (cpu/wait {sum(cpu) / max(sum(wait), 1e-9):.2f})")


if __name__ == "__main__":
    main()
