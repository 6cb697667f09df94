#!/usr/bin/env bash
# compare-alltoallv.sh - oxccl's all-to-all-v against Open MPI's MPI_Alltoallv on this machine,
# side by side: RUNS interleaved runs of each (MPI, oxccl, MPI, oxccl, ...) at each rank count,
# then per size the median time of each and the median of the per-run ratios.
#
#   bash bench/scripts/compare-alltoallv.sh [ranks...]     # default: 2 4
#
# Run from the project root after `cargo build --release -p oxccl-bench`; needs Open MPI
# (apt-get install openmpi-bin libopenmpi-dev). Both sides use the same uneven counts (rank r
# sends rank q a share weighted 1 + (r + q) % 3 of its buffer) from 64 KiB to 16 MiB per rank,
# report the max over ranks of the mean time per call, median of 5 trials. Env: RUNS (3),
# MAXBYTES (16777216), OUT (a directory for the raw outputs), BIND (mpirun's --bind-to for both
# sides; unset: Open MPI's default, cores at 2 ranks), BASE (another oxccl-bench, e.g. main's
# build, run in the same rounds: MPI, oxccl, base; adds its median time and base/oxccl ratio).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-/tmp/peers-build}
OX=${OX:-target/release/oxccl-bench}
RUNS=${RUNS:-3}
MAXBYTES=${MAXBYTES:-16777216}
OUT=${OUT:-$(mktemp -d)}
# shellcheck source=sides.sh
. "$HERE/sides.sh"
MPIRUN+="${BIND:+ --bind-to $BIND}"
mkdir -p "$OUT"
[ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
build_peers mpi_alltoallv

for np in "${@:-2 4}"; do
  for run in $(seq "$RUNS"); do
    side mpi alltoallv "$np" 65536 "$MAXBYTES" > "$OUT/mpi-np$np-$run.txt"
    side "$OX" alltoallv "$np" 65536 "$MAXBYTES" > "$OUT/ox-np$np-$run.jsonl"
    if [ -n "${BASE:-}" ]; then
      side "$BASE" alltoallv "$np" 65536 "$MAXBYTES" > "$OUT/base-np$np-$run.jsonl"
    fi
  done
  python3 - "$OUT" "$np" "$RUNS" "${BASE:+base}" <<'PY'
import json, statistics, sys
out, np, runs, has_base = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "base"
def load(name, r):
    o = {}
    for l in open(f"{out}/{name}-np{np}-{r}.jsonl"):
        if l.startswith("{"):
            j = json.loads(l)
            assert j.get("wrong", 0) in (0, None), f"{name} run {r}: wrong values at {j['bytes']}"
            o[int(j["bytes"])] = float(j["time_us"])
    return o
mpi, ox, base = [], [], []
for r in range(1, runs + 1):
    m = {}
    for l in open(f"{out}/mpi-np{np}-{r}.txt"):
        p = l.split()
        if len(p) >= 7 and p[0].isdigit():
            assert p[6] == "0", f"Open MPI run {r}: {p[6]} wrong at {p[0]}"
            m[int(p[0])] = float(p[3])
    mpi.append(m)
    ox.append(load("ox", r))
    if has_base:
        base.append(load("base", r))
print(f"all-to-all-v, {np} ranks, {runs} interleaved runs: time per call (us, lower is better)")
extra = f" {'base':>10} {'base/oxccl':>10}" if has_base else ""
print(f"{'bytes':>10} {'oxccl':>10} {'openmpi':>10} {'MPI/oxccl':>10}{extra}  per-run MPI/oxccl")
for b in sorted(mpi[0]):
    if not all(b in m for m in mpi) or not all(b in o for o in ox + base):
        continue
    ratios = [m[b] / o[b] for m, o in zip(mpi, ox)]
    extra = ""
    if has_base:
        extra = (f" {statistics.median(o[b] for o in base):>10.1f}"
                 f" {statistics.median(x[b] / o[b] for x, o in zip(base, ox)):>10.2f}")
    print(f"{b:>10} {statistics.median(o[b] for o in ox):>10.1f} {statistics.median(m[b] for m in mpi):>10.1f}"
          f" {statistics.median(ratios):>10.2f}{extra}  {' '.join(f'{x:.2f}' for x in ratios)}")
PY
done
echo "raw outputs: $OUT"
