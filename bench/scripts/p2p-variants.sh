#!/usr/bin/env bash
# p2p-variants.sh - issue 12's point-to-point shapes under several oxccl settings, interleaved
# with Open MPI in every round: which path or idle policy wins, measured side by side.
#
#   bash bench/scripts/p2p-variants.sh NP ROUNDS MIN MAX LABEL=[BIN=path,]ENV=V[,ENV=V...] ...
#   bash bench/scripts/p2p-variants.sh 4 3 262144 16777216 auto= \
#       pull=OXCCL_SINGLE_COPY_CHOICE=pull ring=OXCCL_SINGLE_COPY_CHOICE=stream \
#       nopark=OXCCL_YIELD_US=1000000 main=BIN=/tmp/oxccl-bench-main
#
# Per round: `mpi_sendrecv` (MPI_Sendrecv around a ring) then `oxccl-bench sendrecv` once per
# variant, then `mpi_alltoallv` then `oxccl-bench all-to-all-v` per variant (the shapes and
# counts of compare-groups.sh and compare-alltoallv.sh). Printed per test and size: each
# variant's median over rounds (sendrecv: bibw GB/s; all-to-all-v: us per call) and, in
# brackets, the median of its per-round ratios to Open MPI (>1: that variant faster). The
# cross-core probe runs before and after (bench/scripts/xcore_probe.c: ~11 GB/s handover is
# the fast state, ~2 the slow one). Env: OX (oxccl-bench, default target/release), OUT (raw
# outputs, default a temporary directory), TESTS ("sendrecv alltoallv"). The probe also runs
# right before each variant's run, and a second table gives each variant's median ratio per
# state of its own runs (fast: probe >= 6 GB/s, slow: <= 4; the count of runs in brackets):
# the state flips within a round, and a variant that loses only in the slow state shows there.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 5 ] || { sed -n 4,7p "$0" >&2; exit 2; }
NP=$1 ROUNDS=$2 MIN=$3 MAX=$4
shift 4
OX=${OX:-target/release/oxccl-bench}
OUT=${OUT:-$(mktemp -d)}
TESTS=${TESTS:-"sendrecv alltoallv"}
BUILD=${BUILD:-/tmp/oxccl-groups-peers}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$BUILD" "$OUT"
[ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
for prog in mpi_sendrecv mpi_alltoallv; do
  [ -x "$BUILD/$prog" ] || mpicc -O3 -march=native -o "$BUILD/$prog" "$HERE/$prog.c"
done
[ -x /tmp/xcore_probe ] || gcc -O2 -o /tmp/xcore_probe "$HERE/xcore_probe.c"
probe() { /tmp/xcore_probe 1 | tail -1 | awk '{print $2}'; }
state() { echo "$(date -u +%T) probe $(/tmp/xcore_probe 1 | tail -1) load $(cut -d' ' -f1 /proc/loadavg)"; }

# Runs variant $1 (LABEL=[BIN=path,]ENV=V,...) of oxccl-bench with arguments $2...
variant() {
  local spec=${1#*=} bin=$OX; shift
  local envs=()
  IFS=, read -ra parts <<< "$spec"
  for e in "${parts[@]}"; do
    case $e in
      BIN=*) bin=${e#BIN=} ;;
      ?*) envs+=("$e") ;;
    esac
  done
  local xs=()
  for e in "${envs[@]}"; do xs+=(-x "$e"); done
  $MPIRUN "${xs[@]}" -np "$NP" "$bin" "$@"
}

state | tee "$OUT/state.txt"
for r in $(seq "$ROUNDS"); do
  for t in $TESTS; do
    case $t in
      sendrecv)
        $MPIRUN -np "$NP" "$BUILD/mpi_sendrecv" -b "$MIN" -e "$MAX" > "$OUT/sendrecv-mpi-$r"
        for v in "$@"; do
          probe > "$OUT/probe-sendrecv-${v%%=*}-$r"
          variant "$v" sendrecv -b "$MIN" -e "$MAX" --json > "$OUT/sendrecv-${v%%=*}-$r"
        done ;;
      alltoallv)
        $MPIRUN -np "$NP" "$BUILD/mpi_alltoallv" -b "$MIN" -e "$MAX" > "$OUT/alltoallv-mpi-$r"
        for v in "$@"; do
          probe > "$OUT/probe-alltoallv-${v%%=*}-$r"
          variant "$v" all-to-all-v -b "$MIN" -e "$MAX" -n 0 -a 3 --trials 5 --json \
            > "$OUT/alltoallv-${v%%=*}-$r"
        done ;;
      *) echo "unknown test $t" >&2; exit 2 ;;
    esac
  done
done
state | tee -a "$OUT/state.txt"
python3 - "$OUT" "$ROUNDS" "$TESTS" "$@" <<'PY'
import json, statistics, sys
out, rounds, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
labels = [v.split("=", 1)[0] for v in sys.argv[4:]]
def mpi(path, col):
    d = {}
    for l in open(path):
        p = l.split()
        if p and p[0].isdigit():
            d[int(p[0])] = float(p[col])
    return d
def ox(path, key):
    d = {}
    for l in open(path):
        if l.startswith("{"):
            j = json.loads(l)
            if str(j.get("wrong", 0)) not in ("0", "None", "N/A"):
                sys.exit(f"{path}: wrong values at {j['bytes']}")
            d[int(j["bytes"])] = float(j[key])
    return d
for t in tests:
    col, key, higher, unit = (3, "bibw_gbps", True, "bibw GB/s") if t == "sendrecv" else (3, "time_us", False, "us per call")
    m = [mpi(f"{out}/{t}-mpi-{r}", col) for r in range(1, rounds + 1)]
    v = {l: [ox(f"{out}/{t}-{l}-{r}", key) for r in range(1, rounds + 1)] for l in labels}
    print(f"\n{t}, {unit}: median over {rounds} rounds (median per-round ratio to Open MPI, >1: faster)")
    print(f"{'bytes':>10} {'Open MPI':>10} " + " ".join(f"{l:>16}" for l in labels))
    for b in sorted(m[0]):
        if not all(b in x for x in m) or not all(b in x for l in labels for x in v[l]):
            continue
        cells = []
        for l in labels:
            ratio = [(x[b] / y[b]) if higher else (y[b] / x[b]) for x, y in zip(v[l], m)]
            cells.append(f"{statistics.median(x[b] for x in v[l]):9.2f}({statistics.median(ratio):4.2f})")
        print(f"{b:>10} {statistics.median(x[b] for x in m):>10.2f} " + " ".join(f"{c:>16}" for c in cells))
    gbs = {l: [float(open(f"{out}/probe-{t}-{l}-{r}").read()) for r in range(1, rounds + 1)] for l in labels}
    for name, inside in (("fast", lambda g: g >= 6), ("slow", lambda g: g <= 4)):
        print(f"{t}, {name} state (each variant's own runs): median per-round ratio to Open MPI [runs]")
        for b in sorted(m[0]):
            if not all(b in x for x in m) or not all(b in x for l in labels for x in v[l]):
                continue
            cells = []
            for l in labels:
                ratio = [(x[b] / y[b]) if higher else (y[b] / x[b])
                         for x, y, g in zip(v[l], m, gbs[l]) if inside(g)]
                cells.append(f"{statistics.median(ratio):4.2f}[{len(ratio)}]" if ratio else "-")
            print(f"{b:>10} {'':>10} " + " ".join(f"{c:>16}" for c in cells))
print(f"\nraw outputs: {out}")
PY
