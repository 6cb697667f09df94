#!/usr/bin/env bash
# allreduce-ab.sh - all-reduce time of two oxccl-bench builds (or one build under two
# environments) side by side: for each round and rank count both variants back to back, the
# order alternating; per size the median per-round ratio base/new (> 1: new faster).
#
#   PRIO="chrt -f 10" bash bench/scripts/allreduce-ab.sh OUT 3 "2 4" BASE_BIN NEW_BIN [NEW_ENV]
#
# NEW_ENV: VAR=VALUE,... for the new variant only (e.g. OXCCL_SINGLE_COPY_MIN=262144).
set -euo pipefail
out=${1:?usage: allreduce-ab.sh OUT ROUNDS RANKS BASE_BIN NEW_BIN [NEW_ENV]}
rounds=${2:?}; ranks=${3:?}; base=${4:?}; new=${5:?}; newenv=${6:-}
PRIO=${PRIO:-}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
envs=(); [ -n "$newenv" ] && IFS=, read -ra envs <<<"$newenv"
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
  echo "round $i $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
  for np in $ranks; do
    order="base new"; (( i % 2 )) || order="new base"
    for v in $order; do
      if [ $v = base ]; then
        timeout 300 $PRIO $MPIRUN -np "$np" "$base" all-reduce -b 8 -e 64M --json >"$out/$v-$np-$i.json"
      else
        timeout 300 env "${envs[@]}" $PRIO $MPIRUN -np "$np" "$new" all-reduce -b 8 -e 64M --json >"$out/$v-$np-$i.json"
      fi
    done
  done
done
python3 - "$out" "$rounds" $ranks <<'PY'
import json, statistics as st, sys
out, rounds, ranks = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def rows(p):
    d = {}
    for l in open(p):
        if l.startswith("{"):
            r = json.loads(l)
            if "time_us" in r: d[int(r["bytes"])] = float(r["time_us"])
    return d
for np in ranks:
    b = [rows(f"{out}/base-{np}-{i}.json") for i in range(1, rounds + 1)]
    n = [rows(f"{out}/new-{np}-{i}.json") for i in range(1, rounds + 1)]
    print(f"\nall-reduce, {np} ranks: time us, median of {rounds}; base/new per round (median [min-max]; > 1: new faster)")
    for s in sorted(b[0]):
        if not all(s in x for x in b + n): continue
        r = [b[i][s] / n[i][s] for i in range(rounds)]
        print(f"{s:>10} {st.median(x[s] for x in b):>10.2f} {st.median(x[s] for x in n):>10.2f} {st.median(r):>6.2f} [{min(r):.2f}-{max(r):.2f}]")
PY
