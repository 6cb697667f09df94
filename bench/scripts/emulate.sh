#!/bin/bash
# The emulated-cluster acceptance run (issue 14, items 2 and 3): 4 hosts x 2 ranks in 2 racks,
# 1 Gbit/s host links, all-reduce 64 KiB-64 MiB with ring, tree and hier measured against the
# simulator, Open MPI and Gloo on the same namespaces, then 128-256 MiB against the link rate with
# the ring, hier and the tuner's own choice (`auto`: what a user's call runs) (it prints its
# duration; quiet, session 11: about 25 minutes, most of it Open MPI's and Gloo's large sizes).
# Usage (as root, after `cargo build --release -p oxccl-bench`):
#   bench/scripts/emulate.sh [OUT_DIR]      (default bench/results/emulated)
# Writes OUT_DIR/emulated-4x2.{txt,csv,json,svg}, -raw.jsonl, -probe.json, emulated-4x2-large.*,
# load.txt and the cluster file bench/clusters/emulated-4x2.toml (its NIC latency and the
# machine's shared stack server from the stack probes each sweep runs first: sendrecv rings of
# all ranks, 4 KiB-4 MiB, one message and 8 messages per call; see the file's description).
# Three trials per size, the median kept: one burst of other load on this shared machine then
# moves no row.
# Without namespace permission it prints SKIPPED and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench/results/emulated}
[ -x target/release/oxccl-bench ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
mkdir -p "$out"
# The ranks run this very binary (current_exe): a copy, so a rebuild during the run breaks nothing.
tmp=$(mktemp -d /tmp/oxccl-emulate.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp target/release/oxccl-bench "$tmp/oxccl-bench"
ox=$tmp/oxccl-bench
mpi=()
if command -v mpicc >/dev/null && command -v nsenter >/dev/null; then
  mpicc -O3 -o target/mpi_allreduce /work/shared/peers/mpi_allreduce.c 2>/dev/null \
    || mpicc -O3 -o target/mpi_allreduce "${PEERS:-../shared/peers}/mpi_allreduce.c"
  mpi=(--mpi target/mpi_allreduce)
else
  echo "# no mpicc or nsenter: Open MPI not compared" >&2
fi
start=$(date +%s)
# Gloo: a Python with torch (GLOO_PYTHON, default the CI venv); skipped without one.
py=${GLOO_PYTHON:-/work/main/target/ci-venv/bin/python}
if [ -x "$py" ] && "$py" -c 'import torch.distributed' 2>/dev/null; then
  mpi+=(--gloo "$py")
else
  echo "# no Python with torch at $py (set GLOO_PYTHON): Gloo not compared" >&2
fi
{ date -u; uptime; nproc; } > "$out/load.txt"
"$ox" emulate --hosts 4 --ranks-per-host 2 --hosts-per-rack 2 --link-gbit 1 \
  -b 64K -e 64M --algo ring,tree,hier --trials 3 "${mpi[@]}" --out-dir "$out"
uptime >> "$out/load.txt"
"$ox" emulate --hosts 4 --ranks-per-host 2 --hosts-per-rack 2 --link-gbit 1 \
  -b 128M -e 256M --algo ring,hier,auto --trials 1 "${mpi[@]}" --out-dir "$out" --name emulated-4x2-large \
  --cluster-out "$out/emulated-4x2-large.toml"
{ uptime; date -u; } >> "$out/load.txt"
echo "# emulate.sh took $(( $(date +%s) - start )) s"
