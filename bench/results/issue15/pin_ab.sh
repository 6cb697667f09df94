#!/usr/bin/env bash
# 4-rank DDP timelines (ddp_timeline.py through thread_cpu.py): gloo and oxccl, each free to
# migrate and pinned one CPU per rank (OXCCL_PIN_RANKS=1), interleaved and rotated each round;
# per-thread CPU of every rank beside each timeline. Usage (from the repository root):
#   bench/results/issue15/pin_ab.sh <venv> <nproc> <rounds> <tag> [oxccl-pythonpath]
set -euo pipefail
venv=$1 nproc=$2 rounds=$3 tag=$4 pp=${5:-}
out=bench/results/issue15/$tag.txt
export OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # name backend pin
  echo "## $1 ($(uptime | sed 's/.*load/load/'))"
  OXCCL_PIN_RANKS=$3 OXCCL_THREAD_CPU=$tmp PYTHONPATH=$pp "$venv/bin/python" -m torch.distributed.run \
    --nproc-per-node "$nproc" --master-addr 127.0.0.1 --master-port $((20000 + RANDOM % 20000)) \
    bench/results/issue15/thread_cpu.py --backend "$2" --steps 30 2>&1 | grep -v Warn
  for f in "$tmp"/rank*.txt; do
    echo "threads $(basename "$f" .txt): $(awk '$2+$3>0 {printf "%s %d+%d ms (%d/%d sw); ", $1, $2, $3, $4, $5}' "$f")"
  done
  rm -f "$tmp"/rank*.txt
}
{
  echo "# $(date -u +%FT%TZ) $nproc ranks, $rounds rounds; oxccl=${pp:-venv}; commit $(git rev-parse --short HEAD)"
  for ((r = 0; r < rounds; r++)); do
    order=("gloo gloo 0" "oxccl oxccl 0" "gloo-pinned gloo 1" "oxccl-pinned oxccl 1")
    for ((i = 0; i < 4; i++)); do
      read -r name backend pin <<< "${order[$(((i + r) % 4))]}"
      run "$name round $r" "$backend" "$pin"
    done
  done
} | tee "$out"
