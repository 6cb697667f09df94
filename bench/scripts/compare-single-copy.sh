#!/usr/bin/env bash
# compare-single-copy.sh - the single-copy path (OXCCL_SINGLE_COPY_MIN) against the ring path
# (OXCCL_SINGLE_COPY_MIN=0) and Open MPI, side by side, interleaved in every run:
#   all-to-all-v (mpi_alltoallv.c, uneven counts) and sendrecv around a ring (mpi_sendrecv.c).
#
#   bash bench/scripts/compare-single-copy.sh [runs=3] [ranks="2 4"] [min=64K] [max=16M]
#   ON=4096 bash bench/scripts/compare-single-copy.sh ...   # another threshold (default 256 KiB)
#
# Run from the project root after `cargo build --release -p oxccl-bench` (needs Open MPI).
# Printed per size: the median of each side over the runs, and the median per-run ratios
# (single copy / ring, single copy / Open MPI; > 1: the single-copy path is faster).
# Env: TESTS ("a2av sendrecv"), ON (the threshold under test, 262144), OUT (keep raw outputs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-/tmp/oxccl-single-copy-peers}
OX=${OX:-target/release/oxccl-bench}
RUNS=${1:-3}
RANKS=${2:-"2 4"}
MIN=${3:-65536}
MAX=${4:-16777216}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$BUILD"
[ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
command -v mpicc >/dev/null || { echo "install Open MPI: apt-get install -y openmpi-bin libopenmpi-dev" >&2; exit 2; }
for prog in mpi_alltoallv mpi_sendrecv; do
  [ -x "$BUILD/$prog" ] || mpicc -O3 -march=native -o "$BUILD/$prog" "$HERE/$prog.c"
done
TESTS=${TESTS:-"a2av sendrecv"}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
for run in $(seq 1 "$RUNS"); do
  for np in $RANKS; do
    for t in $TESTS; do
      if [ "$t" = a2av ]; then
        $MPIRUN -np "$np" "$BUILD/mpi_alltoallv" -b "$MIN" -e "$MAX" > "$OUT/a2av-mpi-$np-$run"
      else
        $MPIRUN -np "$np" "$BUILD/mpi_sendrecv" -b "$MIN" -e "$MAX" > "$OUT/sendrecv-mpi-$np-$run"
      fi
      for mode in ring single; do
        # The ring path is the single-copy path turned off; ON sets the threshold under test.
        min=0; [ "$mode" = single ] && min=${ON:-262144}
        if [ "$t" = a2av ]; then
          OXCCL_SINGLE_COPY_MIN=$min $MPIRUN -np "$np" "$OX" all-to-all-v -b "$MIN" -e "$MAX" -n 0 \
            -a 3 --trials 5 --json > "$OUT/a2av-$mode-$np-$run"
        else
          OXCCL_SINGLE_COPY_MIN=$min $MPIRUN -np "$np" "$OX" sendrecv -b "$MIN" -e "$MAX" --json \
            > "$OUT/sendrecv-$mode-$np-$run"
        fi
      done
    done
  done
done
echo "raw outputs: $OUT"
python3 - "$OUT" "$RUNS" "$RANKS" "$TESTS" <<'PY'
import json, statistics, sys
out, runs, ranks, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def mpi(path, col, check=None):
    d = {}
    for l in open(path):
        p = l.split()
        if p and p[0].isdigit():
            if check is not None:
                assert p[check] == "0", f"{path}: {p[check]} wrong at {p[0]}"
            d[int(p[0])] = float(p[col])
    return d
def ox(path, key):
    d = {}
    for l in open(path):
        if l.startswith("{"):
            r = json.loads(l)
            assert str(r.get("wrong", 0)) in ("0", "None", "N/A"), f"{path}: wrong values at {r['bytes']}"
            d[int(r["bytes"])] = float(r[key])
    return d
# (test, Open MPI column, oxccl key, unit, higher is better)
for test, col, key, unit, higher in (("a2av", 3, "time_us", "us per call", False),
                                     ("sendrecv", 3, "bibw_gbps", "bibw GB/s", True)):
    if test not in tests:
        continue
    for np in ranks:
        rows = {}
        for run in range(1, runs + 1):
            m = mpi(f"{out}/{test}-mpi-{np}-{run}", col, 6 if test == "a2av" else None)
            r = ox(f"{out}/{test}-ring-{np}-{run}", key)
            s = ox(f"{out}/{test}-single-{np}-{run}", key)
            for b in sorted(set(m) & set(r) & set(s)):
                rows.setdefault(b, []).append((s[b], r[b], m[b]))
        speed = (lambda a, b: a / b) if higher else (lambda a, b: b / a)
        print(f"\n{test}, {np} ranks, {runs} interleaved runs ({unit}; x > 1: single copy faster)")
        print(f"{'bytes':>10} {'single':>10} {'ring':>10} {'openmpi':>10} {'x ring':>7} {'x mpi':>7}")
        for b, v in sorted(rows.items()):
            med = lambda i: statistics.median(x[i] for x in v)
            xr = statistics.median(speed(s, r) for s, r, _ in v)
            xm = statistics.median(speed(s, m) for s, _, m in v)
            print(f"{b:>10} {med(0):>10.2f} {med(1):>10.2f} {med(2):>10.2f} {xr:>7.2f} {xm:>7.2f}")
PY
