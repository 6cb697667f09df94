#!/usr/bin/env bash
# How often rank 0's oxccl store thread wakes while a 2-rank DDP job trains: its context
# switches and CPU ticks over 10 s, sampled from /proc (load-independent, unlike times).
# Usage (from the repository root): bench/results/issue15/store_wakeups.sh <venv> [pythonpath]
set -euo pipefail
venv=$1 pp=${2:-}
OMP_NUM_THREADS=1 PYTHONPATH=$pp timeout 300 "$venv/bin/python" -m torch.distributed.run \
  --nproc-per-node 2 --master-addr 127.0.0.1 --master-port $((20000 + RANDOM % 20000)) \
  python/examples/train_ddp.py --backend oxccl --steps 400 > /dev/null 2>&1 &
job=$!
sample() { # prints "switches ticks" of every oxccl-store thread
  for t in /proc/[0-9]*/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = oxccl-store ] || continue
    case "$(tr '\0' ' ' < "${t%/task/*}/cmdline" 2>/dev/null)" in *train_ddp.py*) ;; *) continue ;; esac
    s=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")
    k=$(awk '{print $14 + $15}' "$t/stat")
    echo "$s $k"
  done
}
sleep 15
a=$(sample); sleep 10; b=$(sample)
read -r s0 k0 <<< "$a"; read -r s1 k1 <<< "$b"
echo "oxccl-store over 10 s: $((s1 - s0)) wake-ups, $((k1 - k0)) CPU ticks ($(getconf CLK_TCK)/s); PYTHONPATH=${pp:-venv}; $(uptime | sed 's/.*load/load/')"
kill -- "$job" 2>/dev/null || true
wait "$job" 2>/dev/null || true
