#!/usr/bin/env bash
# DDP bucket timelines (ddp_timeline.py) of gloo and of two oxccl builds, interleaved, rotated
# each round. Usage (from the repository root):
#   bench/results/issue15/timeline_ab.sh <venv> <nproc> <rounds> <tag> <oxccl-A-pythonpath> <oxccl-B-pythonpath>
# An empty pythonpath means the package installed in the venv. Writes <tag>.txt here.
set -euo pipefail
venv=$1 nproc=$2 rounds=$3 tag=$4 a=$5 b=$6
out=bench/results/issue15/$tag.txt
export OMP_NUM_THREADS=1
run() { # name backend pythonpath
  echo "## $1 ($(uptime | sed 's/.*load/load/'))"
  PYTHONPATH=$3 "$venv/bin/python" -m torch.distributed.run --nproc-per-node "$nproc" \
    --master-addr 127.0.0.1 --master-port $((20000 + RANDOM % 20000)) \
    bench/results/issue15/ddp_timeline.py --backend "$2" --steps 30 2>&1 | grep -v Warn
}
{
  echo "# $(date -u +%FT%TZ) $nproc ranks, $rounds rounds; A=${a:-venv} B=${b:-venv}; commit $(git rev-parse --short HEAD)"
  for ((r = 0; r < rounds; r++)); do
    order=("gloo gloo -" "A oxccl $a" "B oxccl $b")
    for ((i = 0; i < 3; i++)); do
      read -r name backend pp <<< "${order[$(((i + r) % 3))]}"
      [ "$pp" = - ] && pp=
      run "$name round $r" "$backend" "$pp"
    done
  done
} | tee "$out"
