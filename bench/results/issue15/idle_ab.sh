#!/usr/bin/env bash
# A/B of the idle policy on oxccl-bench all-reduce (processes on this host): the build's
# default against OXCCL_YIELD_US=200 (the earlier default everywhere), interleaved, rotated.
# Usage: bench/results/issue15/idle_ab.sh <rounds> <ranks...>   (from the repository root,
# after `cargo build --release -p oxccl-bench`). Prints one JSON line per size and run,
# tagged with the variant, rank count and round. IDLE_AB_ARGS adds options (`-C 1`: the CPU
# time of a call instead of its wall time).
set -euo pipefail
rounds=$1; shift
bin=target/release/oxccl-bench
for r in $(seq 1 "$rounds"); do
  for n in "$@"; do
    if (( r % 2 )); then order="default yield200"; else order="yield200 default"; fi
    for v in $order; do
      if [ "$v" = yield200 ]; then export OXCCL_YIELD_US=200; else unset OXCCL_YIELD_US; fi
      "$bin" all-reduce --ranks "$n" -b 8 -e 4M -f 8 -n 0 --trials 3 --json ${IDLE_AB_ARGS:-} |
        sed "s/^{/{\"variant\":\"$v\",\"ranks\":$n,\"round\":$r,/"
    done
  done
done
unset OXCCL_YIELD_US
