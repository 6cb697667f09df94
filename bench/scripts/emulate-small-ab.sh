#!/bin/bash
# Small and medium all-reduces on the emulated cluster, two oxccl-bench builds and Open MPI side
# by side (issue 14, session 10): the namespaces of `oxccl-bench emulate` (4 hosts x 2 ranks, 2
# hosts per rack, racks on a spine, `tbf` 1 Gbit/s with a 2-frame burst on both ends of every
# cable, MTU 9000), built once and kept for every round, so a round costs seconds, not the
# probes of a full `emulate` run. Each round runs A, B, then Open MPI (tcp,self, as `emulate
# --mpi`), each size with its tuner's algorithm; the table has the median time per call and the
# median over rounds of the per-round speed ratios.
# Usage (as root): bench/scripts/emulate-small-ab.sh A_BIN B_BIN [ROUNDS] [MIN] [MAX]
#   e.g. bench/scripts/emulate-small-ab.sh /tmp/main-oxccl-bench target/release/oxccl-bench 5 64K 1M
# A_ENV / B_ENV (`VAR=value ...`) go to one build only. Without mpirun, Open MPI is left out.
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1 b=$2 rounds=${3:-3} min=${4:-64K} max=${5:-1M}
hosts=4 rph=2 ns=oxsab$$
out=$(mktemp -d /tmp/oxccl-small-ab.XXXXXX)
cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^$ns" || true); do ip netns del "$n"; done
  rm -rf "$out"
}
trap cleanup EXIT
# A run killed with SIGKILL left its namespaces: remove those whose run is gone.
for n in $(ip netns list | awk '{print $1}' | grep '^oxsab[0-9]' || true); do
  pid=${n#oxsab}; pid=${pid%%[a-z]*}
  if ! kill -0 "$pid" 2>/dev/null; then ip netns del "$n"; fi
done
trap 'exit 130' INT TERM
shape() { tc -n "$1" qdisc add dev "$2" root tbf rate 1000000000bit burst $((2 * 9014 + 200)) limit 16777216; }
switch() { ip netns add "$1"; ip -n "$1" link add br0 type bridge; ip -n "$1" link set br0 mtu 9000 up; }
# cable NS_A DEV_A BRIDGED_A NS_B DEV_B BRIDGED_B: a shaped veth pair
cable() {
  ip link add "t$$a" netns "$1" type veth peer name "t$$b" netns "$4"
  ip -n "$1" link set "t$$a" name "$2"
  ip -n "$4" link set "t$$b" name "$5"
  local end
  for end in "$1 $2 $3" "$4 $5 $6"; do
    set -- $end
    ip -n "$1" link set "$2" mtu 9000
    if [ "$3" = 1 ]; then ip -n "$1" link set "$2" master br0; fi
    ip -n "$1" link set "$2" up
    shape "$1" "$2"
  done
}
switch "${ns}s"
for k in 0 1; do switch "${ns}r$k"; cable "${ns}r$k" uplink 1 "${ns}s" "r$k" 1; done
for h in $(seq 0 $((hosts - 1))); do
  ip netns add "${ns}h$h"
  ip -n "${ns}h$h" link set lo up
  cable "${ns}h$h" eth0 0 "${ns}r$((h / 2))" "h$h" 1
  ip -n "${ns}h$h" addr add "10.77.0.$((h + 1))/24" dev eth0
done
# ranks BIN ENV: one all-reduce sweep over every host's ranks (ranks by host); "bytes us" rows
ranks() {
  local p=$((hosts * rph)) pids=() r rc=0
  for r in $(seq 0 $((p - 1))); do
    # shellcheck disable=SC2086
    env $2 OXCCL_RANK=$r OXCCL_SIZE=$p OXCCL_LOCAL_RANK=$((r % rph)) \
      OXCCL_STORE_ADDR=10.77.0.1:29517 OXCCL_SECRET="$(printf '%032x' $$)" OXCCL_SOCKET_IFNAME==eth0 \
      timeout 300 ip netns exec "${ns}h$((r / rph))" "$1" all-reduce -b "$min" -e "$max" -n 0 -w 2 \
      --trials 3 -c 1 > "$out/rank$r" 2>&1 &
    pids+=($!)
  done
  for r in "${pids[@]}"; do wait "$r" || rc=1; done
  if [ $rc != 0 ]; then echo "a rank of $1 failed:" >&2; tail -3 "$out"/rank* >&2; exit 1; fi
  grep -v '^#' "$out/rank0" | awk '{print $1, $6}'
}
mpi=""
if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then
  mpicc -O3 -o "$out/mpi_allreduce" "${PEERS:-/work/shared/peers}/mpi_allreduce.c" && mpi=1
fi
ompi() {
  PMIX_MCA_ptl_tcp_remote_connections=1 PMIX_MCA_ptl_tcp_if_include=10.77.0.0/24 \
    timeout 300 ip netns exec "${ns}h0" mpirun --allow-run-as-root --oversubscribe -np $((hosts * rph)) \
    --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    sh -c "exec nsenter --net=/run/netns/${ns}h\$((OMPI_COMM_WORLD_RANK / $rph)) \"\$0\" \"\$@\"" \
    "$out/mpi_allreduce" allreduce -b "$(numfmt --from=iec "$min")" -e "$(numfmt --from=iec "$max")" \
    | grep -v '^#' | awk '{print $1, $4}'
}
start=$(date +%s)
uptime
for r in $(seq "$rounds"); do
  ranks "$a" "${A_ENV:-}" > "$out/A.$r"
  ranks "$b" "${B_ENV:-}" > "$out/B.$r"
  if [ -n "$mpi" ]; then ompi > "$out/M.$r"; fi
  echo "# round $r done at $(date -u +%T), $(uptime | sed 's/.*load/load/')"
done
python3 - "$out" "$rounds" "$mpi" <<'PY'
import sys, statistics as st
out, rounds, mpi = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sides = ["A", "B"] + (["M"] if mpi else [])
def rows(f):
    r = {}
    for l in open(f):
        p = l.split()
        if len(p) == 2 and p[0].isdigit():
            r[int(p[0])] = float(p[1])
    return r
d = {s: [rows(f"{out}/{s}.{i}") for i in range(1, rounds + 1)] for s in sides}
def speed(x, y, size):  # median over rounds of time(x) / time(y): y's speed over x's
    return st.median(p[size] / q[size] for p, q in zip(d[x], d[y]))
print("# us per call (median of rounds); busbw = 2*7/8*bytes/time GB/s; ratios: median per-round speed")
head = f"{'bytes':>9} {'A us':>9} {'B us':>9} {'B/A':>6} {'B busbw':>8}"
if mpi:
    head += f" {'ompi us':>9} {'ompi bw':>8} {'A/ompi':>7} {'B/ompi':>7}"
print(head)
for size in sorted(d["A"][0]):
    ta, tb = (st.median(r[size] for r in d[s]) for s in "AB")
    line = f"{size:>9} {ta:>9.0f} {tb:>9.0f} {speed('A', 'B', size):>6.2f} {1.75 * size / tb / 1e3:>8.4f}"
    if mpi:
        tm = st.median(r[size] for r in d["M"])
        line += f" {tm:>9.0f} {1.75 * size / tm / 1e3:>8.4f} {speed('M', 'A', size):>7.2f} {speed('M', 'B', size):>7.2f}"
    print(line)
PY
uptime
echo "# took $(($(date +%s) - start)) s"
