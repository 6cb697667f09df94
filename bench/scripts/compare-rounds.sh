#!/usr/bin/env bash
# compare-rounds.sh - ../shared/peers/compare.sh, interleaved rounds, and the median ratio per size.
#
#   bash bench/scripts/compare-rounds.sh OUTDIR [ROUNDS] [WHAT...]
#   bash bench/scripts/compare-rounds.sh bench/results/issue10-latency 3 "all-reduce 2" "all-reduce 4" transport
#   PRIO="chrt -f 10" bash bench/scripts/compare-rounds.sh ...   # on a loaded machine (see below)
#
# Each round runs every WHAT once (Open MPI and oxccl side by side, as compare.sh does), so slow
# phases of a shared machine hit both libraries; OUTDIR gets each run's output
# (compare-<what>-run<i>.txt), the load average before and after each (load.txt) and
# medians.txt: per size, the median over the rounds of oxccl/Open MPI (busbw for collectives;
# latency and bandwidth for transport, the ratio as compare.sh prints it).
#
# PRIO runs everything (mpirun, both libraries' ranks) under that prefix. On a machine that other
# jobs load, `chrt -f 10` (SCHED_FIFO, as root) keeps them from preempting the ranks; the kernel
# still leaves 5% of each second to others (sched_rt_runtime_us), so a run is never starved.
set -euo pipefail
out=${1:?usage: compare-rounds.sh OUTDIR [ROUNDS] [WHAT...]}
rounds=${2:-3}
shift $(($# >= 2 ? 2 : 1))
[ $# -gt 0 ] || set -- "all-reduce 2" "all-reduce 4" transport
HERE=$(cd "$(dirname "$0")" && pwd)
COMPARE=${COMPARE:-$HERE/../../../shared/peers/compare.sh}
[ -f "$COMPARE" ] || COMPARE=/work/shared/peers/compare.sh
export OX=${OX:-target/release/oxccl-bench}
mkdir -p "$out"
: >"$out/load.txt"
# The machine's cross-core state (bench/RESULTS.md, "Session 8, big"): the probe's GB/s
# (each half second) before and after each run labels it (~11 fast, ~2 slow).
PROBE=${PROBE:-/tmp/oxccl-xcore-probe}
[ -x "$PROBE" ] || cc -O2 -o "$PROBE" "$HERE/xcore_probe.c" 2>/dev/null || PROBE=
state() { [ -n "$PROBE" ] && echo "probe GB/s:$("$PROBE" 1 | awk 'NR > 1 {printf " %s", $2}')" || true; }
for i in $(seq 1 "$rounds"); do
  for what in "$@"; do
    name=$(echo "$what" | tr ' ' '-')
    echo "$(date -u +%FT%TZ) before $name run$i: $(cut -d' ' -f1-3 /proc/loadavg) $(state)" >>"$out/load.txt"
    # shellcheck disable=SC2086 # PRIO and WHAT are word lists
    ${PRIO:-} bash "$COMPARE" $what >"$out/compare-$name-run$i.txt" 2>&1 ||
      echo "$(date -u +%FT%TZ) $name run$i FAILED (exit $?): see compare-$name-run$i.txt" | tee -a "$out/load.txt"
    echo "$(date -u +%FT%TZ) after  $name run$i: $(cut -d' ' -f1-3 /proc/loadavg) $(state)" >>"$out/load.txt"
  done
done
python3 - "$out" "$@" >"$out/medians.txt" <<'PY'
import glob, re, statistics, sys
out, whats = sys.argv[1], sys.argv[2:]
for what in whats:
    name = what.replace(" ", "-")
    runs = sorted(glob.glob(f"{out}/compare-{name}-run*.txt"))
    tables = {}  # (section, bytes) -> [(ox, peer, ratio)]
    for path in runs:
        section = what
        for line in open(path):
            p = line.split()
            if not p:
                continue
            if not p[0].isdigit():
                if re.match(r"(shm|tcp) (latency|bandwidth)", line):
                    section = " ".join(p[:2])
                continue
            if what == "transport":
                ox, peer, ratio = float(p[1]), float(p[2]), float(p[3])
            else:
                ox, peer, ratio = float(p[1]), float(p[2]), float(p[5])
            tables.setdefault((section, int(p[0])), []).append((ox, peer, ratio))
    print(f"\n{what}: median over {len(runs)} runs (ox and peer: time_us, or GB/s for transport bandwidth)")
    last = None
    for (section, b), rows in tables.items():
        if section != last:
            ratio = "busbw x" if what != "transport" else "ratio"
            print(f"\n{section}\n{'bytes':>12} {'ox':>10} {'peer':>10} {ratio:>8} {'min':>6} {'max':>6}")
            last = section
        ox = statistics.median(r[0] for r in rows)
        peer = statistics.median(r[1] for r in rows)
        rs = [r[2] for r in rows]
        print(f"{b:>12} {ox:>10.3f} {peer:>10.3f} {statistics.median(rs):>8.2f} {min(rs):>6.2f} {max(rs):>6.2f}")
PY
cat "$out/medians.txt"
