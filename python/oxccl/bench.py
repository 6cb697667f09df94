"""`python -m oxccl.bench`: torch.distributed all_reduce through "gloo" and "oxccl", side by
side in one job, plus the DDP example's step time on both.

    python -m oxccl.bench --nproc 2 4            # sweep 8 B .. 256 MiB, then DDP
    python -m oxccl.bench --nproc 2 --no-ddp --max-bytes 16M

Each job (torchrun, N local ranks) makes a gloo default group and an oxccl group over the
same ranks, and for every size times `all_reduce(float32, SUM)` on one, then the other, then
again (--repeats rounds, interleaved, so both see the same machine load). A round is
--samples timed loops of the same iteration count per backend (sized so that gloo's take
--target seconds in all); a sample is the slowest rank's mean time per call over its loop.
The table shows each backend's median sample (a loaded machine preempts ranks for
milliseconds at a time; the median keeps the spikes of either backend out), in nccl-tests'
columns (algbw = bytes / time, busbw = algbw * 2 (N-1) / N), and the ratio of oxccl's busbw
to gloo's: the median over the rounds of each round's ratio (the two backends ran back to
back in a round), with the smallest and largest. --csv writes the table, --json every sample.
The DDP part runs python/examples/train_ddp.py under torchrun for each backend, --repeats
times interleaved, and shows the medians of step_ms, comm_ms (the communication a step waits
for once every rank's backward is done), skew_ms (the wait for the slowest rank's backward),
wait_ms (launch to completion, what a hook-side timer sees), fwdbwd_ms and compute_ms, each
averaged over the ranks, with the median of the runs' oxccl/gloo ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = [8, 64, 512, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20,
         64 << 20, 256 << 20]


def _parse_size(s: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper().rstrip("B").rstrip("I")
    return int(float(s[:-1]) * mult[s[-1]]) if s and s[-1] in mult else int(s)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, argv: list[str], timeout: float, result: str | None = None) -> str:
    """Runs argv under torchrun; `result`: the file the job writes its numbers to, which makes
    a job that wrote it and then failed (Gloo aborts in its teardown now and then, after the
    example's last barrier: "terminate called without an active exception") a success."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        if result is None or not os.path.exists(result):
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}")
        print(f"note: {' '.join(argv[:3])} exited {r.returncode} after writing {result}",
              file=sys.stderr)
    return r.stdout


# ----- one rank of the sweep -----------------------------------------------------------------

def _worker(args):
    import torch
    import torch.distributed as dist

    import oxccl.torch  # noqa: F401

    dist.init_process_group("gloo")
    groups = {"gloo": dist.group.WORLD, "oxccl": dist.new_group(backend="oxccl")}
    rank, p = dist.get_rank(), dist.get_world_size()
    results = {}
    for size in args.sizes:
        n = max(size // 4, 1)
        t = torch.full((n,), float(rank + 1))
        samples = {b: [] for b in groups}
        iters = None
        for rnd in range(args.repeats):
            order = list(groups) if rnd % 2 == 0 else list(groups)[::-1]
            for b in order:
                g = groups[b]
                dist.all_reduce(t, group=g)  # warm-up
                if iters is None:
                    # Iterations for a sample of ~target/samples seconds on gloo (the slower).
                    t0 = time.perf_counter()
                    dist.all_reduce(t, group=g)
                    one = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
                    dist.all_reduce(one, op=dist.ReduceOp.MAX, group=groups["gloo"])
                    per = args.target / args.samples
                    iters = int(min(args.max_iters, max(1, per / max(one.item(), 1e-6))))
                got = []
                for _ in range(args.samples):
                    dist.barrier(group=groups["gloo"])
                    t0 = time.perf_counter()
                    for _ in range(iters):
                        dist.all_reduce(t, group=g)
                    el = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64)
                    dist.all_reduce(el, op=dist.ReduceOp.MAX, group=groups["gloo"])
                    got.append(el.item())
                samples[b].append(got)
        # The result is still right (a fresh call: the timed ones compound).
        for b, g in groups.items():
            c = torch.full((n,), float(rank + 1))
            dist.all_reduce(c, group=g)
            if not torch.all(c == p * (p + 1) / 2):
                raise SystemExit(f"{b}: wrong all_reduce result at {size} bytes")
        results[size] = {b: statistics.median(x for rnd in v for x in rnd)
                         for b, v in samples.items()}
        # Each round's ratio (gloo time / oxccl time of the round's median samples): both
        # backends ran back to back in it, under the same load.
        results[size]["round_ratios"] = [
            statistics.median(g) / statistics.median(o)
            for g, o in zip(samples["gloo"], samples["oxccl"])]
        results[size]["samples"] = samples
        results[size]["iters"] = iters
        if rank == 0:
            print(f"  {size} B done", file=sys.stderr, flush=True)
    if rank == 0:
        with open(args.worker_out, "w") as f:
            json.dump({"world": p, "results": results, "iters_target_s": args.target}, f)
    dist.destroy_process_group()


# ----- the driver --------------------------------------------------------------------------

def _human(n: int) -> str:
    for unit, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n} B"


def sweep_table(world: int, results: dict) -> str:
    bus = 2 * (world - 1) / world if world > 1 else 1.0
    lines = [
        f"all_reduce float32 sum, {world} ranks, median sample (a sample: slowest rank's mean)",
        f"{'size':>10} {'count':>10} | {'gloo us':>10} {'algbw':>7} {'busbw':>7} | "
        f"{'oxccl us':>10} {'algbw':>7} {'busbw':>7} | {'busbw x':>7} {'rounds x':>15}",
    ]
    for size, r in sorted(((int(k), v) for k, v in results.items())):
        cols = []
        for b in ("gloo", "oxccl"):
            t = r[b]
            alg = size / t / 1e9
            cols.append(f"{t * 1e6:10.1f} {alg:7.3f} {alg * bus:7.3f}")
        rr = r["round_ratios"]
        lines.append(f"{_human(size):>10} {max(size // 4, 1):>10} | {cols[0]} | {cols[1]} | "
                     f"{statistics.median(rr):7.2f} {min(rr):7.2f}-{max(rr):<7.2f}")
    lines.append("busbw x: median over the rounds of oxccl busbw / gloo busbw (= gloo time / "
                 "oxccl time) in the same round; rounds x: its smallest and largest")
    return "\n".join(lines)


def sweep_csv(world: int, results: dict) -> list[str]:
    bus = 2 * (world - 1) / world if world > 1 else 1.0
    rows = []
    for size, r in sorted(((int(k), v) for k, v in results.items())):
        rr = r["round_ratios"]
        rows.append(",".join(str(x) for x in (
            world, size, max(size // 4, 1), f"{r['gloo'] * 1e6:.3f}",
            f"{size / r['gloo'] / 1e9 * bus:.4f}", f"{r['oxccl'] * 1e6:.3f}",
            f"{size / r['oxccl'] / 1e9 * bus:.4f}", f"{statistics.median(rr):.3f}",
            f"{min(rr):.3f}", f"{max(rr):.3f}")))
    return rows


CSV_HEADER = ("ranks,bytes,count,gloo_us,gloo_busbw_GBps,oxccl_us,oxccl_busbw_GBps,"
              "busbw_ratio_median,busbw_ratio_min,busbw_ratio_max")


DDP_KEYS = ("step_ms", "comm_ms", "skew_ms", "wait_ms", "fwdbwd_ms", "compute_ms")


def ddp_table(world: int, runs: dict) -> str:
    lines = [f"DDP train_ddp.py --model {runs['model']}, {world} ranks, median of "
             f"{runs['repeats']} interleaved runs (each run: median over its steps)",
             f"{'backend':>8} " + " ".join(f"{k:>10}" for k in DDP_KEYS)]
    for b in ("gloo", "oxccl"):
        m = {k: statistics.median(r[k] for r in runs[b]) for k in DDP_KEYS}
        lines.append(f"{b:>8} " + " ".join(f"{m[k]:10.2f}" for k in DDP_KEYS))
    # Run i of each backend ran back to back: the median of their ratios.
    ratio = {k: statistics.median(o[k] / g[k] if g[k] else float("nan")
                                  for o, g in zip(runs["oxccl"], runs["gloo"]))
             for k in DDP_KEYS}
    lines.append(f"oxccl/gloo (median of the runs' ratios): step {ratio['step_ms']:.3f}, "
                 f"comm {ratio['comm_ms']:.3f}, wait {ratio['wait_ms']:.3f}, "
                 f"fwdbwd {ratio['fwdbwd_ms']:.3f}")
    lines.append("comm: from the slowest rank's last bucket launch (the end of every backward) "
                 "to the last bucket's completion; skew: the wait for that slowest rank; wait: "
                 "launch to completion; fwdbwd: forward+backward; each a mean over the ranks "
                 "(see train_ddp.py)")
    return "\n".join(lines)


def _find_example(given):
    here = os.path.dirname(os.path.abspath(__file__))
    for path in ([given] if given else [os.path.join(here, "..", "examples", "train_ddp.py"),
                                        os.path.join("python", "examples", "train_ddp.py"),
                                        os.path.join("examples", "train_ddp.py")]):
        if os.path.exists(path):
            return os.path.abspath(path)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m oxccl.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[2, 4], help="rank counts to run")
    ap.add_argument("--min-bytes", type=_parse_size, default=8)
    ap.add_argument("--max-bytes", type=_parse_size, default=256 << 20)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per size / DDP runs")
    ap.add_argument("--target", type=float, default=0.3, help="seconds per round and backend")
    ap.add_argument("--samples", type=int, default=5,
                    help="timed loops per round and backend (each gives one mean)")
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--no-ddp", action="store_true", help="skip the DDP step-time part")
    ap.add_argument("--ddp-model", choices=["cnn", "transformer"], default="cnn")
    ap.add_argument("--ddp-steps", type=int, default=12)
    ap.add_argument("--ddp-script", help="train_ddp.py (default: python/examples/ of this checkout)")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--csv", help="write the sweep's table here (one row per rank count and size)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)

    sizes = [s for s in SIZES if args.min_bytes <= s <= args.max_bytes]
    example = _find_example(args.ddp_script)
    if not args.no_ddp and example is None:
        ap.error("python/examples/train_ddp.py not found: run from the checkout, pass "
                 "--ddp-script, or --no-ddp")
    report = {}
    csv_rows = []
    for world in args.nproc:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "sweep.json")
            # As a module: run as a file, its folder (holding oxccl/torch) would shadow torch.
            _torchrun(world, ["--module", "oxccl.bench", "--worker", "--worker-out", out,
                              "--repeats", str(args.repeats), "--target", str(args.target),
                              "--samples", str(args.samples),
                              "--max-iters", str(args.max_iters), "--sizes", *map(str, sizes)],
                      timeout=3600)
            with open(out) as f:
                sweep = json.load(f)
            print(sweep_table(world, sweep["results"]), flush=True)
            csv_rows += sweep_csv(world, sweep["results"])
            entry = {"sweep": sweep["results"]}
            if not args.no_ddp:
                runs = {"model": args.ddp_model, "repeats": args.repeats, "gloo": [], "oxccl": []}
                for rnd in range(args.repeats):
                    for b in (["gloo", "oxccl"] if rnd % 2 == 0 else ["oxccl", "gloo"]):
                        js = os.path.join(tmp, f"ddp-{b}-{rnd}.json")
                        _torchrun(world, [example, "--backend", b, "--model",
                                          args.ddp_model, "--steps", str(args.ddp_steps), "--json", js],
                                  timeout=1800, result=js)
                        with open(js) as f:
                            runs[b].append(json.load(f)["median"])
                print(ddp_table(world, runs), flush=True)
                entry["ddp"] = runs
            print(flush=True)
            report[world] = entry
        if args.json:  # after each rank count, so a long run keeps what it has
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        if args.csv:
            with open(args.csv, "w") as f:
                f.write("\n".join([CSV_HEADER, *csv_rows]) + "\n")


if __name__ == "__main__":
    main()
