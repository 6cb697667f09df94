#!/bin/bash
# A/B of two oxccl-bench builds on the emulated cluster (4 hosts x 2 ranks, 1 Gbit/s), runs
# interleaved so that the machine's drift hits both alike: ring all-reduce busbw per size,
# each build's runs and the median ratio B/A.
# Usage (as root): bench/scripts/emulate-ab.sh A_BIN B_BIN [REPEATS] [MIN] [MAX] [ALGO]
#   e.g. bench/scripts/emulate-ab.sh target/base/oxccl-bench target/release/oxccl-bench 3
# Environment (OXCCL_SOCKET_NSOCKS...) reaches the ranks of both builds; A_ENV / B_ENV
# (`VAR=value ...`) go to one build only (to compare settings of one build: A_BIN = B_BIN).
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1 b=$2 reps=${3:-3} min=${4:-256K} max=${5:-64M} algo=${6:-ring}
out=$(mktemp -d /tmp/oxccl-emulate-ab.XXXXXX)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
uptime
for rep in $(seq "$reps"); do
  for side in A B; do
    if [ $side = A ]; then bin=$a envs=${A_ENV:-}; else bin=$b envs=${B_ENV:-}; fi
    # shellcheck disable=SC2086
    env $envs "$bin" emulate --hosts 4 --ranks-per-host 2 --hosts-per-rack 2 --link-gbit 1 \
      -b "$min" -e "$max" --algo "$algo" --trials 1 --out-dir "$out" --name "$side-$rep" \
      --cluster-out "$out/$side-$rep.toml" > "$out/$side-$rep.log" 2>&1 \
      || { echo "run $side-$rep failed:"; tail -5 "$out/$side-$rep.log"; exit 1; }
    echo "# $side run $rep done at $(date -u +%T), $(uptime | sed 's/.*load/load/')"
  done
done
python3 - "$out" "$reps" <<'PY'
import sys, glob, statistics, os
out, reps = sys.argv[1], int(sys.argv[2])
def rows(f):
    r = {}
    for l in open(f):
        p = l.split()
        if len(p) == 9 and not l.startswith('#') and p[2].isdigit():
            r[int(p[2])] = float(p[6])
    return r
runs = {s: [rows(f"{out}/{s}-{i}.txt") for i in range(1, reps + 1)] for s in "AB"}
print(f"# busbw GB/s per run (A then B), link payload 0.1241 GB/s; ratio = median over runs of B/A")
print(f"{'bytes':>10} {'A runs':>24} {'B runs':>24} {'B/A':>6} {'B/link':>7}")
for size in sorted(runs["A"][0]):
    a = [r.get(size, float('nan')) for r in runs["A"]]
    b = [r.get(size, float('nan')) for r in runs["B"]]
    ratio = statistics.median(y / x for x, y in zip(a, b))
    print(f"{size:>10} {' '.join(f'{x:.4f}' for x in a):>24} {' '.join(f'{x:.4f}' for x in b):>24} {ratio:>6.2f} {statistics.median(b)/0.1241:>7.2f}")
PY
uptime
echo "# took $(( $(date +%s) - start )) s"
