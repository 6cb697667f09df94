#!/usr/bin/env bash
# compare-groups.sh - oxccl against Open MPI for sub-communicators and point-to-point, side by
# side, interleaved, as median ratios (issue 12's performance points).
#
#   bash bench/scripts/compare-groups.sh [runs=3] [ranks="2 4"] [min=64K bytes] [max=64M bytes]
#
# Per run and rank count P (run from the project root after
# `cargo build --release -p oxccl-bench`; needs Open MPI's mpicc and mpirun):
#   split:    MPI_Comm_split(rank % S) + MPI_Allreduce on the sub-communicator (mpi_split.c)
#             against `oxccl-bench all-reduce --split S` (S = 1 at 2 ranks, 2 at 4: sub-
#             communicators of 2 ranks that all run at once); busbw, float32 sum.
#   sendrecv: MPI_Sendrecv around a ring (mpi_sendrecv.c) against `oxccl-bench sendrecv`
#             (a group of one send and one receive per iteration); bidirectional bandwidth.
# Both sides are launched by the same mpirun. Printed: each run's ratio (oxccl / Open MPI,
# higher is better for oxccl) per size, then the median over runs. BASE=<another oxccl-bench>
# (e.g. main's build) runs in the same rounds and adds its median ratio to Open MPI and the
# median of the per-run oxccl / base ratios.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-/tmp/oxccl-groups-peers}
OX=${OX:-target/release/oxccl-bench}
RUNS=${1:-3}
RANKS=${2:-"2 4"}
MIN=${3:-65536}
MAX=${4:-67108864}
# shellcheck source=sides.sh
. "$HERE/sides.sh"
[ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
build_peers mpi_split mpi_sendrecv
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for run in $(seq 1 "$RUNS"); do
  for np in $RANKS; do
    # Interleaved: Open MPI, then oxccl (then BASE), for each test, in every run.
    for test in split sendrecv; do
      side mpi "$test" "$np" "$MIN" "$MAX" > "$OUT/$test-mpi-$np-$run"
      side "$OX" "$test" "$np" "$MIN" "$MAX" > "$OUT/$test-ox-$np-$run"
      if [ -n "${BASE:-}" ]; then
        side "$BASE" "$test" "$np" "$MIN" "$MAX" > "$OUT/$test-base-$np-$run"
      fi
    done
  done
done
python3 - "$OUT" "$RUNS" "$RANKS" "${BASE:+base}" <<'PY'
import json, os, statistics, sys
out, runs, ranks, has_base = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4] == "base"
def mpi(path, col):
    d = {}
    for l in open(path):
        p = l.split()
        if p and p[0].isdigit(): d[int(p[0])] = float(p[col])
    return d
def ox(path, key):
    d = {}
    for l in open(path):
        if l.startswith("{"):
            r = json.loads(l); d[int(r["bytes"])] = float(r[key])
    return d
for test, mcol, okey, what in (("split", 5, "busbw_gbps", "busbw"), ("sendrecv", 3, "bibw_gbps", "bibw")):
    for np in ranks:
        per, base = {}, {}
        for run in range(1, runs + 1):
            m = mpi(f"{out}/{test}-mpi-{np}-{run}", mcol); o = ox(f"{out}/{test}-ox-{np}-{run}", okey)
            x = ox(f"{out}/{test}-base-{np}-{run}", okey) if has_base else {}
            for b in sorted(set(m) & set(o)):
                per.setdefault(b, []).append((o[b], m[b]))
                if has_base and b in x:
                    base.setdefault(b, []).append((o[b], x[b], m[b]))
        print(f"\n{test}, {np} ranks: {what} GB/s oxccl / Open MPI per run, median ratio (>1: oxccl faster)")
        extra = f" {'base/MPI':>9} {'ox/base':>9}" if has_base else ""
        print(f"{'bytes':>10} " + " ".join(f"{'run'+str(k+1):>17}" for k in range(runs)) + f" {'median x':>9}{extra}")
        for b, v in sorted(per.items()):
            cells = " ".join(f"{o:>7.2f}/{m:<7.2f}{'':>1}" for o, m in v)
            extra = ""
            if b in base:
                w = base[b]
                extra = (f" {statistics.median(x / m for o, x, m in w if m):>9.2f}"
                         f" {statistics.median(o / x for o, x, m in w if x):>9.2f}")
            print(f"{b:>10} {cells} {statistics.median(o / m for o, m in v if m):>9.2f}{extra}")
PY
