#!/usr/bin/env python3
"""8-byte all-reduce through the Python binding (numpy): wall and CPU microseconds per call,
median of 5 batches, slowest rank. Run once per build's venv to compare builds side by side.
Usage: python bench/scripts/tiny_latency.py [--ranks N] [--iters K]
"""
import argparse, json, os, socket, subprocess, sys, time


def worker(rank, size, addr, iters):
    import numpy as np
    import oxccl
    comm = oxccl.Communicator.init(rank, size, addr, b"tiny-latency-secret", timeout=120)
    x = np.ones(2, dtype=np.float32)
    for _ in range(2000):
        comm.all_reduce(x)
    walls, cpus = [], []
    for _ in range(5):
        comm.barrier()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(iters):
            comm.all_reduce(x)
        walls.append((time.perf_counter() - t0) / iters * 1e6)
        cpus.append((time.process_time() - c0) / iters * 1e6)
    print(json.dumps({"wall_us": sorted(walls)[2], "cpu_us": sorted(cpus)[2]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(int(a.worker[0]), int(a.worker[1]), a.worker[2], a.iters)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [subprocess.Popen([sys.executable, __file__, "--iters", str(a.iters), "--worker",
                               str(r), str(a.ranks), addr], stdout=subprocess.PIPE, text=True)
             for r in range(a.ranks)]
    res = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    print(f"ranks={a.ranks} 8 B all_reduce (numpy): wall {max(r['wall_us'] for r in res):.2f} us/call,"
          f" cpu {max(r['cpu_us'] for r in res):.2f} us/call (slowest rank)")


if __name__ == "__main__":
    main()
