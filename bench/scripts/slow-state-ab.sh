#!/usr/bin/env bash
# slow-state-ab.sh - 2-rank sendrecv variants against Open MPI in the VM's slow state only:
# each round waits for the cross-core probe to read under 4 GB/s (bench/scripts/xcore_probe.c;
# README, "The development VM's two states"), then runs MPI_Sendrecv and each variant once;
# a variant's run counts only if the probe right before it still read slow. Prints, per size,
# each variant's median oxccl/MPI bibw ratio over its slow runs and how many there were.
#
#   bash bench/scripts/slow-state-ab.sh OUT ROUNDS LABEL=[BIN=path,][ENV=V,...] ...
#   MIN=65536 MAX=16777216 bash bench/scripts/slow-state-ab.sh /tmp/slow 12 \
#       main=BIN=/tmp/oxccl-bench-main new= pull=OXCCL_SINGLE_COPY_CHOICE=pull
#
# Env: MIN, MAX (262144, 4194304), NP (2). Variants without BIN= run target/release/oxccl-bench.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 3 ] || { sed -n 8,10p "$0" >&2; exit 2; }
OUT=$1 N=$2
shift 2
MIN=${MIN:-262144} MAX=${MAX:-4194304} NP=${NP:-2}
BUILD=${BUILD:-/tmp/oxccl-groups-peers}
M="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$OUT" "$BUILD"
[ -x "$BUILD/mpi_sendrecv" ] || mpicc -O3 -march=native -o "$BUILD/mpi_sendrecv" "$HERE/mpi_sendrecv.c"
[ -x /tmp/xcore_probe ] || gcc -O2 -o /tmp/xcore_probe "$HERE/xcore_probe.c"
probe() { /tmp/xcore_probe 1 | tail -1; }
for r in $(seq "$N"); do
  for w in $(seq 1 240); do
    [ "$(probe | awk '{print int($2)}')" -lt 4 ] && break
    sleep 0.5
  done
  echo "r$r wait $w probe $(probe)" >> "$OUT/log"
  nice -n -10 $M -np "$NP" "$BUILD/mpi_sendrecv" -b "$MIN" -e "$MAX" > "$OUT/mpi-$r"
  for v in "$@"; do
    lab=${v%%=*} rest=${v#*=} bin=target/release/oxccl-bench xs=()
    IFS=, read -ra parts <<< "$rest"
    for p in "${parts[@]}"; do
      case "$p" in
        BIN=*) bin=${p#BIN=} ;;
        ?*) xs+=(-x "$p") ;;
      esac
    done
    echo "$lab $(probe | awk '{print $2}')" >> "$OUT/probes-$r"
    nice -n -10 $M "${xs[@]}" -np "$NP" "$bin" sendrecv -b "$MIN" -e "$MAX" --json > "$OUT/$lab-$r"
  done
  echo "r$r end probe $(probe)" >> "$OUT/log"
done
python3 - "$OUT" "$N" "$@" <<'PY'
import json,sys,statistics as st
out,n=sys.argv[1],int(sys.argv[2]); labs=[v.split("=")[0] for v in sys.argv[3:]]
rat={l:{} for l in labs}
for r in range(1,n+1):
    m={}
    for l in open(f"{out}/mpi-{r}"):
        p=l.split()
        if p and p[0].isdigit(): m[int(p[0])]=float(p[3])
    pr=dict(l.split() for l in open(f"{out}/probes-{r}"))
    for lab in labs:
        if float(pr[lab])>4: continue
        for l in open(f"{out}/{lab}-{r}"):
            if l.startswith("{"):
                j=json.loads(l); rat[lab].setdefault(j["bytes"],[]).append(j["bibw_gbps"]/m[j["bytes"]])
sizes=sorted(next(iter(rat.values())).keys())
print("slow-state runs only: median oxccl/MPI bibw [runs]")
print("%10s"%"bytes"+"".join("%14s"%l for l in labs))
for b in sizes:
    print("%10d"%b+"".join("%9.2f[%2d]"%(st.median(rat[l][b]),len(rat[l][b])) if rat[l].get(b) else "%14s"%"-" for l in labs))
PY
