"""A/B of the DDP example's communication time: gloo and oxccl variants, interleaved.

    python bench/results/issue15/ddp_ab.py --nproc 4 --repeats 5 \
        --variant new= --variant yield200=OXCCL_YIELD_US=200

Each round runs python/examples/train_ddp.py once for gloo and once for every oxccl variant
(a name and the OXCCL_* settings it adds, `name=VAR=value,VAR=value`), one after another, so
they all see the same machine load. Prints each run's median step_ms, comm_ms, skew_ms,
wait_ms, fwdbwd_ms and compute_ms (train_ddp.py's), and cpu_s: the CPU time the whole job used (every
rank's user + system time, start-up included: what a waiting rank burns shows up here even on
a machine too loaded for the times to say much), then per variant the medians over the
rounds and the median of the rounds' ratios to gloo (the same round's gloo run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile

KEYS = ("step_ms", "comm_ms", "skew_ms", "wait_ms", "fwdbwd_ms", "compute_ms", "cpu_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc, backend, env_extra, args, out):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", args.script,
           "--backend", backend, "--model", args.model, "--steps", str(args.steps), "--json", out]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    if r.returncode != 0:
        if not os.path.exists(out):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}")
        # Gloo sometimes aborts in its teardown, after the example wrote its numbers.
        print(f"  ({backend} exited {r.returncode} after writing its numbers: "
              f"{r.stdout.strip().splitlines()[-1][:120] if r.stdout.strip() else ''})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    with open(out) as f:
        return dict(json.load(f)["median"], cpu_s=cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--script", default="python/examples/train_ddp.py")
    ap.add_argument("--variant", action="append", default=[],
                    help="name=VAR=value,VAR=value (an oxccl run with these settings)")
    args = ap.parse_args()
    variants = {}
    for v in args.variant or ["oxccl="]:
        name, _, settings = v.partition("=")
        variants[name] = dict(s.split("=", 1) for s in settings.split(",") if s)
    res = {"gloo": [], **{n: [] for n in variants}}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.repeats):
            order = [("gloo", {}), *variants.items()]
            # Rotated every round, so no variant always runs right after another.
            for name, env in order[rnd % len(order):] + order[:rnd % len(order)]:
                backend = "gloo" if name == "gloo" else "oxccl"
                m = run(args.nproc, backend, env, args, os.path.join(tmp, f"{name}-{rnd}.json"))
                res[name].append(m)
                print(f"round {rnd} {name:>10} " + " ".join(f"{k} {m.get(k, 0):8.2f}" for k in KEYS),
                      flush=True)
    print(f"{args.nproc} ranks, {args.model}, {args.repeats} rounds, {args.steps} steps a run")
    print(f"{'variant':>10} " + " ".join(f"{k:>12}" for k in KEYS) +
          "  comm/gloo, wait/gloo: median (range) over the rounds")
    for name, ms in res.items():
        med = {k: statistics.median(m[k] for m in ms) for k in KEYS}
        line = f"{name:>10} " + " ".join(f"{med[k]:12.2f}" for k in KEYS)
        for k in ("comm_ms", "wait_ms"):
            r = [m[k] / g[k] for m, g in zip(ms, res["gloo"]) if k in m and k in g]
            line += f"  {statistics.median(r):.3f} ({min(r):.2f}-{max(r):.2f})" if r else ""
        print(line)


if __name__ == "__main__":
    main()
