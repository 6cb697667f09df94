"""Runs ddp_timeline.py (same arguments) and, at exit, writes this rank's threads' CPU time.

    OXCCL_THREAD_CPU=dir torchrun --nproc-per-node 4 bench/results/issue15/thread_cpu.py --backend oxccl

Each rank writes dir/rank<R>-<backend>.txt: one line per thread, `name utime_ms stime_ms
voluntary nonvoluntary` (from /proc/self/task: which threads of a rank took CPU, and how
often they were switched out), so a thread that spins beside the compute shows. With OXCCL_PIN_RANKS=1, each rank first pins
itself (every thread it will start) to CPU LOCAL_RANK mod the CPUs it may use, whichever the
backend: ranks 0 and 2 share a CPU, 1 and 3 the other, and the scheduler moves none of them.
"""

import atexit
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def dump():
    out = os.environ.get("OXCCL_THREAD_CPU", ".")
    backend = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "oxccl"
    rows = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            with open(f"{base}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")].replace(" ", "_")
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]) * TICK_MS, int(fields[12]) * TICK_MS
        rows.append(f"{name} {utime:.0f} {stime:.0f} {status['voluntary_ctxt_switches'].strip()} "
                    f"{status['nonvoluntary_ctxt_switches'].strip()}")
    with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}-{backend}.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")


if os.environ.get("OXCCL_PIN_RANKS") == "1":
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[int(os.environ.get("LOCAL_RANK", "0")) % len(cpus)]})
atexit.register(dump)
sys.argv[0] = os.path.join(HERE, "ddp_timeline.py")
runpy.run_path(sys.argv[0], run_name="__main__")
