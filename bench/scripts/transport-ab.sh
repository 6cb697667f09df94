#!/usr/bin/env bash
# transport-ab.sh - two oxccl-bench builds and Open MPI, interleaved: shm stream bandwidth
# (osu_bw's window of 64) and TCP stream one-way latency, median per size over the rounds.
#
#   bash bench/scripts/transport-ab.sh OUTDIR ROUNDS BASE_BIN NEW_BIN
#   PRIO="chrt -f 10" bash bench/scripts/transport-ab.sh /tmp/ab 3 /tmp/ox-main target/release/oxccl-bench
#
# PRIO as in compare-rounds.sh (SCHED_FIFO keeps other jobs of a loaded machine from preempting
# the ranks; applied to both libraries alike). Needs /tmp/peers-build/mpi_pingpong (compare.sh
# builds it).
set -euo pipefail
out=${1:?usage: transport-ab.sh OUTDIR ROUNDS BASE_BIN NEW_BIN}
rounds=${2:?}; base=${3:?}; new=${4:?}
PRIO=${PRIO:-}
MPI=${MPI:-/tmp/peers-build/mpi_pingpong}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
  echo "round $i $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/load.txt"
  for b in base new; do
    bin=$base; [ $b = new ] && bin=$new
    timeout 300 $PRIO "$bin" transport --transport shm --test bandwidth --json >"$out/$b-shm-$i.json"
    timeout 300 $PRIO "$bin" transport --transport tcp --test latency -m 8:4K -i 2000 -x 200 --json >"$out/$b-tcp-$i.json"
  done
  timeout 600 $PRIO $MPIRUN -np 2 "$MPI" >"$out/mpi-shm-$i.txt"
  timeout 600 $PRIO $MPIRUN -np 2 --mca btl tcp,self "$MPI" -e 1048576 >"$out/mpi-tcp-$i.txt"
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def ox(path, key):
    return {int(r["bytes"]): float(r[key]) for r in map(json.loads, open(path)) if key in r}
def mpi(path, section):
    d, cur = {}, None
    for l in open(path):
        if l.startswith("# latency"): cur = "latency"
        elif l.startswith("# bandwidth"): cur = "bandwidth"
        elif cur == section and l.split() and l.split()[0].isdigit(): d[int(l.split()[0])] = float(l.split()[1])
    return d
for name, key, section, what in (("shm", "bandwidth_gbps", "bandwidth", "shm stream bandwidth GB/s (higher is better)"),
                                  ("tcp", "latency_us", "latency", "tcp stream one-way latency us (lower is better)")):
    runs = {b: [ox(f"{out}/{b}-{name}-{i}.json", key) for i in range(1, rounds + 1)] for b in ("base", "new")}
    runs["mpi"] = [mpi(f"{out}/mpi-{name}-{i}.txt", section) for i in range(1, rounds + 1)]
    print(f"\n{what}: median of {rounds} interleaved rounds; ratios oxccl/Open MPI per round, then median")
    print(f"{'bytes':>10} {'base':>9} {'new':>9} {'mpi':>9} {'base/mpi':>9} {'new/mpi':>9}")
    for n in sorted(runs["new"][0]):
        if not all(n in r for b in runs for r in runs[b]): continue
        med = {b: statistics.median(r[n] for r in runs[b]) for b in runs}
        ratio = {b: statistics.median(runs[b][i][n] / runs["mpi"][i][n] for i in range(rounds)) for b in ("base", "new")}
        print(f"{n:>10} {med['base']:>9.3f} {med['new']:>9.3f} {med['mpi']:>9.3f} {ratio['base']:>9.2f} {ratio['new']:>9.2f}")
PY
