#!/usr/bin/env bash
# The idle-wait A/B of bench/RESULTS.md ("Idle waits sleep on doorbells"): two oxccl-bench builds
# side by side, interleaved, 2 and 4 ranks (4 ranks on 2 cores oversubscribe them).
#   bench/scripts/futex_ab.sh BASE_BIN NEW_BIN OUT_DIR [ROUNDS]
# Per round and build: all-reduce 8 B-64 MiB (time), and 8 B with -C 1 (CPU time per call).
set -euo pipefail
base=$1 new=$2 out=$3 rounds=${4:-3}
mkdir -p "$out"
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; before: $(uptime)" | tee "$out/load.txt"
for r in $(seq "$rounds"); do
  for np in 2 4; do
    for b in base new; do
      bin=$base; [ "$b" = new ] && bin=$new
      nice -n -5 "$bin" all-reduce --ranks "$np" -b 8 -e 64M -f 4 -n 0 --json > "$out/$b-np$np-r$r.json"
      nice -n -5 "$bin" all-reduce --ranks "$np" -b 8 -e 8 -n 20000 -C 1 --json > "$out/$b-np$np-r$r-cpu.json"
    done
  done
done
echo "# after: $(uptime)" | tee -a "$out/load.txt"
