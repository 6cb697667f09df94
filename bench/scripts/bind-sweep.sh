#!/bin/bash
# OXCCL_BIND=none|core|numa side by side: 3 interleaved rounds of a 2-rank all-reduce sweep.
# Usage: bench/scripts/bind-sweep.sh OUT.txt   (after cargo build --release -p oxccl-bench)
# Each output line: round, setting, then the bench's JSON for one size.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?output file}
: > "$out"
for round in 1 2 3; do
  for bind in none core numa; do
    OXCCL_BIND=$bind ./target/release/oxccl-bench all-reduce --ranks 2 -b 8 -e 16M -f 8 --json \
      | sed "s/^/$round $bind /" >> "$out"
  done
done
