#!/usr/bin/env bash
# state-rounds.sh - large all-reduce and shm bandwidth, oxccl and Open MPI side by side, each run
# labelled with the machine's cross-core state (bench/scripts/xcore_probe.c, 2 s before and after).
#
#   PRIO="chrt -f 10" bash bench/scripts/state-rounds.sh OUTDIR [ROUNDS=4] [OX=target/release/oxccl-bench]
#
# This KVM guest's two vCPUs hand cache-hot bytes to each other at ~10 GB/s in one state and
# ~2 GB/s in the other (the host moves them between core complexes); the state flips within a
# second and lasts seconds to minutes, and every size of both libraries' runs follows it
# (bench/RESULTS.md, "big"). OUTDIR gets per round: probe-*.txt, mpi-ar-*.txt, ox-ar-*.txt
# (+ --iter-log files), mpi-pp-*.txt, ox-tr-*.txt, and summary.txt.
set -euo pipefail
out=${1:?usage: state-rounds.sh OUTDIR [ROUNDS] [OX]}
rounds=${2:-4}
OX=${3:-${OX:-target/release/oxccl-bench}}
HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=${PEERS:-$HERE/../../../shared/peers}
[ -d "$PEERS" ] || PEERS=/work/shared/peers
BUILD=${BUILD:-/tmp/peers-build}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
mkdir -p "$out" "$BUILD"
probe=$BUILD/xcore_probe
gcc -O2 -o "$probe" "$HERE/xcore_probe.c"
[ -x "$BUILD/mpi_allreduce" ] || mpicc -O3 -march=native -o "$BUILD/mpi_allreduce" "$PEERS/mpi_allreduce.c"
[ -x "$BUILD/mpi_pingpong" ] || mpicc -O3 -march=native -o "$BUILD/mpi_pingpong" "$PEERS/mpi_pingpong.c"
# The median handover speed of a 2 s probe, GB/s.
state() { ${PRIO:-} "$probe" 2 >"$1"; awk 'NR>1{print $2}' "$1" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
: >"$out/summary.txt"
for i in $(seq 1 "$rounds"); do
  s0=$(state "$out/probe-$i-a.txt")
  # shellcheck disable=SC2086 # PRIO and MPIRUN are word lists
  ${PRIO:-} $MPIRUN -np 2 "$BUILD/mpi_allreduce" allreduce -b 67108864 -e 268435456 >"$out/mpi-ar-$i.txt"
  ${PRIO:-} "$OX" all-reduce --ranks 2 -b 64M -e 256M --iter-log "$out/ox-ar-$i.iters" >"$out/ox-ar-$i.txt"
  s1=$(state "$out/probe-$i-b.txt")
  # shellcheck disable=SC2086
  ${PRIO:-} $MPIRUN -np 2 "$BUILD/mpi_pingpong" >"$out/mpi-pp-$i.txt"
  ${PRIO:-} "$OX" transport --transport shm --test bandwidth --json >"$out/ox-tr-$i.txt"
  s2=$(state "$out/probe-$i-c.txt")
  mpi256=$(awk '$1==268435456{print $4}' "$out/mpi-ar-$i.txt")
  ox256=$(awk '$1==268435456{print $6}' "$out/ox-ar-$i.txt")
  echo "round $i: probe GB/s $s0 -> $s1 -> $s2; 256 MiB all-reduce us: oxccl $ox256, Open MPI $mpi256" | tee -a "$out/summary.txt"
done
