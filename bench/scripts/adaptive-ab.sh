#!/usr/bin/env bash
# adaptive-ab.sh - shm stream bandwidth (osu_bw's shape) of several oxccl-bench variants and
# Open MPI, interleaved round by round; per size the median of each and the median per-round
# ratio to Open MPI. A variant is NAME=BIN[,VAR=VALUE...]:
#
#   PRIO="chrt -f 10" bash bench/scripts/adaptive-ab.sh OUT 3 \
#     base=/tmp/base-oxccl-bench new=target/release/oxccl-bench \
#     pull=target/release/oxccl-bench,OXCCL_SINGLE_COPY_CHOICE=pull
#
# The ring's state of each round shows in the variants' 4-128 KiB rows (fast: 10+ GB/s through
# the ring). Needs /tmp/peers-build/mpi_pingpong (../shared/peers/compare.sh builds it).
set -euo pipefail
out=${1:?usage: adaptive-ab.sh OUT ROUNDS NAME=BIN[,VAR=V...]...}; rounds=${2:?}; shift 2
PRIO=${PRIO:-}
MPI=${MPI:-/tmp/peers-build/mpi_pingpong}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$out"
names=()
for i in $(seq 1 "$rounds"); do
  echo "round $i $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
  for v in "$@"; do
    name=${v%%=*}; rest=${v#*=}; bin=${rest%%,*}
    envs=(); [ "$rest" != "$bin" ] && IFS=, read -ra envs <<<"${rest#*,}"
    [ "$i" = 1 ] && names+=("$name")
    env "${envs[@]}" timeout 300 $PRIO "$bin" transport --transport shm --test bandwidth -m 4K:16M --json \
      >"$out/$name-$i.json"
  done
  timeout 300 $PRIO $MPIRUN -np 2 "$MPI" -e 16777216 >"$out/mpi-$i.txt"
done
python3 - "$out" "$rounds" "${names[@]}" <<'PY'
import json, statistics as st, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def ox(p): return {int(r["bytes"]): float(r["bandwidth_gbps"]) for r in map(json.loads, open(p)) if "bandwidth_gbps" in r}
def mpi(p):
    d, cur = {}, None
    for l in open(p):
        if l.startswith("# latency"): cur = "l"
        elif l.startswith("# bandwidth"): cur = "b"
        elif cur == "b" and l.split() and l.split()[0].isdigit(): d[int(l.split()[0])] = float(l.split()[1])
    return d
runs = {n: [ox(f"{out}/{n}-{i}.json") for i in range(1, rounds + 1)] for n in names}
m = [mpi(f"{out}/mpi-{i}.txt") for i in range(1, rounds + 1)]
print(f"shm stream bandwidth GB/s, median of {rounds} interleaved rounds; x: median per-round ratio to Open MPI")
print(f"{'bytes':>9} {'mpi':>6} " + " ".join(f"{n:>14}" for n in names))
for b in sorted(runs[names[0]][0]):
    if not all(b in r for n in names for r in runs[n]) or not all(b in x for x in m): continue
    cells = [f"{st.median(r[b] for r in runs[n]):6.2f} {st.median(runs[n][i][b] / m[i][b] for i in range(rounds)):5.2f}x" for n in names]
    print(f"{b:>9} {st.median(x[b] for x in m):6.2f} " + " ".join(f"{c:>14}" for c in cells))
print("per round (GB/s at 64 KiB, the ring's state):", {n: [round(r.get(65536, 0), 1) for r in runs[n]] for n in names})
PY
