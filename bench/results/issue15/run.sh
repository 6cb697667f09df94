#!/usr/bin/env bash
# Issue 15's side-by-side run: gloo vs oxccl through torch.distributed, all_reduce sweep and the
# DDP example, 2 and 4 ranks, 3 interleaved repeats. Usage (from the repository root, the
# package installed in the venv): bench/results/issue15/run.sh <venv> <tag>
# Writes <tag>.txt (tables, with the load average before and after), <tag>.csv, <tag>.json.
set -euo pipefail
venv=$1 tag=$2
out=bench/results/issue15
export OMP_NUM_THREADS=1
{
  echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc --all) cores; torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'); commit $(git rev-parse --short HEAD)"
  echo "# before: $(uptime)"
  echo "# command: nice -n -10 python -m oxccl.bench --nproc 2 4 --repeats 3 ${*:3}"
  nice -n -10 "$venv/bin/python" -m oxccl.bench --nproc 2 4 --repeats 3 --csv "$out/$tag.csv" \
    --json "$out/$tag.json" "${@:3}" 2> >(grep -v ' B done' >&2)
  echo "# after: $(uptime)"
} | tee "$out/$tag.txt"
