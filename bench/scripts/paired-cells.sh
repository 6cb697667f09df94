#!/usr/bin/env bash
# paired-cells.sh - a few (test, ranks, size) cells of the Open MPI comparisons, each measured as
# many short paired runs: Open MPI and oxccl at that one size back to back (the order alternating
# from pair to pair), so both sides of a pair see the same state of the machine. Where a whole
# sweep takes seconds per run and the machine's state changes the time of one size by 2-3x
# within minutes, the per-size pairs are what can tell a 5% difference from the noise.
#
#   bash bench/scripts/paired-cells.sh PAIRS CELL...
#   CELL: TEST:NP:BYTES[:VAR=VALUE,...], TEST one of alltoallv, sendrecv, split; the variables
#   are set for oxccl's side only (an A/B of a setting, each with its own Open MPI pairs)
#   e.g. bash bench/scripts/paired-cells.sh 25 alltoallv:4:2097152 sendrecv:4:1048576 \
#          alltoallv:4:2097152:OXCCL_SINGLE_COPY_CHOICE=pull
#
# Per cell: the median of the per-pair ratios Open MPI time / oxccl time (> 1: oxccl faster),
# its 90% bootstrap interval (2000 resamples of the pairs), how many pairs oxccl won, and the
# median time of each side. The pairs of all cells are interleaved (pair 1 of every cell, then
# pair 2, ...), so a slow spell of the machine spreads over all of them. Env: OUT (a directory
# for the raw outputs, kept), OX (the oxccl-bench binary), BUILD (where the MPI programs are built),
# REPORT=DIR[:DIR...] (run nothing: report the cells over every pair found in these earlier OUTs,
# e.g. a first set and the more pairs taken where it was close; PAIRS is then ignored).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-/tmp/oxccl-paired-peers}
OX=${OX:-target/release/oxccl-bench}
PAIRS=${1:?usage: paired-cells.sh PAIRS CELL...}
shift
[ $# -gt 0 ] || { echo "name at least one cell, e.g. alltoallv:4:2097152" >&2; exit 2; }
# shellcheck source=sides.sh
. "$HERE/sides.sh"
if [ -n "${REPORT:-}" ]; then
  OUT=$REPORT PAIRS=0
else
  OUT=${OUT:-$(mktemp -d)}
  mkdir -p "$OUT"
  [ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
  build_peers mpi_alltoallv mpi_sendrecv mpi_split
fi

# A cell's name in file names: its fields, with '=' and ',' made safe.
tag() { local t=${1//:/-}; t=${t//=/_}; echo "${t//,/+}"; }

for pair in $(seq 1 "$PAIRS"); do
  for cell in "$@"; do
    IFS=: read -r test np bytes vars <<< "$cell"
    x=()
    for v in ${vars//,/ }; do x+=(-x "$v"); done
    if (( pair % 2 )); then order="mpi ox"; else order="ox mpi"; fi
    for who in $order; do
      if [ "$who" = mpi ]; then bin=mpi; else bin=$OX; fi
      side "$bin" "$test" "$np" "$bytes" "$bytes" "${x[@]}" > "$OUT/$(tag "$cell")-$who-$pair.txt"
    done
  done
  printf '\rpair %d/%d' "$pair" "$PAIRS" >&2
done
(( PAIRS == 0 )) || echo >&2

python3 - "$OUT" "$PAIRS" "$@" <<'PY'
import glob, json, os, random, re, statistics, sys
outs, cells = sys.argv[1].split(":"), sys.argv[3:]
def time_us(test, path):
    """Time per call (us) of the one size in a run's output, whichever side wrote it."""
    for l in open(path):
        if l.startswith("{"):
            j = json.loads(l)
            assert j.get("wrong", 0) in (0, None, "0", "none"), f"{path}: wrong values"
            if "time_us" in j:
                return float(j["time_us"])
        p = l.split()
        if p and p[0].isdigit():
            # mpi_alltoallv, mpi_split: size count type time(us) algbw busbw #wrong iters;
            # mpi_sendrecv: size window time(us) bibw #wrong iters.
            t, wrong = col[test]
            assert p[wrong] == "0", f"{path}: {p[wrong]} wrong values"
            return float(p[t])
    raise SystemExit(f"{path}: no result line")
col = {"alltoallv": (3, 6), "sendrecv": (2, 4), "split": (3, 6)}
rng = random.Random(12)
w = max(24, *(len(c) for c in cells))
print(f"{'cell':<{w}} {'pairs':>5} {'MPI/ox median':>13} {'90% interval':>15} {'ox won':>7} {'ox us':>9} {'MPI us':>9}")
for cell in cells:
    test, np, b = cell.split(":")[:3]
    tag = cell.replace(":", "-").replace("=", "_").replace(",", "+")  # as tag() above
    r, o, m = [], [], []
    for out in outs:
        for path in glob.glob(f"{out}/{tag}-ox-*.txt"):
            k = re.search(r"-ox-(\d+)\.txt$", path)[1]
            mpi = f"{out}/{tag}-mpi-{k}.txt"
            if not os.path.exists(mpi):
                continue
            ot, mt = time_us(test, path), time_us(test, mpi)
            o.append(ot); m.append(mt); r.append(mt / ot)
    if not r:
        print(f"{cell:<{w}} no pairs"); continue
    pairs = len(r)
    boot = sorted(statistics.median(rng.choices(r, k=len(r))) for _ in range(2000))
    lo, hi = boot[100], boot[1899]
    won = sum(x > 1 for x in r)
    print(f"{cell:<{w}} {pairs:>5} {statistics.median(r):>13.3f} {f'{lo:.3f}-{hi:.3f}':>15} {won:>4}/{pairs:<2} "
          f"{statistics.median(o):>9.1f} {statistics.median(m):>9.1f}")
print(f"raw outputs: {':'.join(outs)}")
PY
