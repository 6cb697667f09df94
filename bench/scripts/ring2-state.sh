#!/usr/bin/env bash
# ring2-state.sh - the 2-rank all-reduce per size: Open MPI and oxccl variants side by side,
# interleaved and rotated, each run labelled with the machine's cross-core state.
#
#   bash bench/scripts/ring2-state.sh OUTDIR ROUNDS [VARIANTS...]
#   bash bench/scripts/ring2-state.sh bench/results/ring/ar2 4 mpi main off on
#
# A variant is `mpi` (Open MPI's mpi_allreduce, as compare.sh runs it), `main` ($BASE, main's
# build copied before any change, OXCCL_RING_NT unset) or NAME=ENV,... for this build ($NEW)
# with those variables (a bare word W means OXCCL_RING_NT=W). `xcore_probe 1` (median GB/s of
# the cross-core hand-over; ~11 fast, ~2 slow) runs right before and after each run. OUTDIR
# gets runs.jsonl (bytes, time_us, busbw per variant, round and probes) and summary.txt: per
# state (fast: both probes >= 6; slow: both <= 4; else mixed) and size, the median time per
# variant and its busbw ratio to Open MPI's median in that state.
set -euo pipefail
out=${1:?usage: ring2-state.sh OUTDIR ROUNDS [VARIANTS...]}
rounds=${2:?rounds}
shift 2
[ $# -gt 0 ] || set -- mpi main off on
BASE=${BASE:-/tmp/oxccl-bench-main}
NEW=${NEW:-target/release/oxccl-bench}
MIN=${MIN:-64K}
MAX=${MAX:-256M}
HERE=$(cd "$(dirname "$0")" && pwd)
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
MPIBIN=/tmp/peers-build/mpi_allreduce
[ -x "$MPIBIN" ] || { mkdir -p /tmp/peers-build; mpicc -O3 -march=native -o "$MPIBIN" /work/shared/peers/mpi_allreduce.c; }
probe=/tmp/ring2-xcore_probe
[ -x "$probe" ] || gcc -O2 -o "$probe" "$HERE/xcore_probe.c"
state() { "$probe" 1 | awk 'NR>1{print $2}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
bytes() { numfmt --from=iec "$1"; }
mkdir -p "$out"
: >"$out/runs.jsonl"
variants=("$@")
for r in $(seq 1 "$rounds"); do
  k=$(((r - 1) % ${#variants[@]}))
  for v in "${variants[@]:k}" "${variants[@]:0:k}"; do
    p0=$(state)
    tmp=$(mktemp)
    case $v in
      mpi)
        ${PRIO:-} $MPIRUN -np ${NP:-2} "$MPIBIN" allreduce -b "$(bytes "$MIN")" -e "$(bytes "$MAX")" |
          awk '$1 ~ /^[0-9]+$/ && NF >= 6 {printf "{\"bytes\":%s,\"time_us\":%s,\"busbw_gbps\":%s}\n", $1, $4, $6}' >"$tmp" ;;
      main)
        ${PRIO:-} $MPIRUN -np ${NP:-2} "$BASE" all-reduce -b "$MIN" -e "$MAX" --json >"$tmp" ;;
      *)
        name=${v%%=*}; envs=${v#*=}
        [ "$name" = "$v" ] && envs="OXCCL_RING_NT=$v"
        IFS=, read -ra kv <<<"$envs"
        xs=(); for e in "${kv[@]}"; do xs+=(-x "$e"); done
        ${PRIO:-} $MPIRUN "${xs[@]}" -np ${NP:-2} "$NEW" all-reduce -b "$MIN" -e "$MAX" --json >"$tmp" ;;
    esac
    p1=$(state)
    python3 - "$tmp" "${v%%=*}" "$r" "$p0" "$p1" >>"$out/runs.jsonl" <<'PY'
import json, sys
path, v, r, p0, p1 = sys.argv[1:]
for l in open(path):
    if l.startswith("{"):
        d = json.loads(l)
        print(json.dumps({"variant": v, "round": int(r), "p0": float(p0), "p1": float(p1),
                          "bytes": int(d["bytes"]), "time_us": float(d["time_us"]),
                          "busbw": float(d["busbw_gbps"])}))
PY
    rm -f "$tmp"
    echo "$(date -u +%T) round $r $v probes $p0 $p1 load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/log.txt"
  done
done
python3 "$HERE/ring2_summary.py" "$out/runs.jsonl" | tee "$out/summary.txt"
