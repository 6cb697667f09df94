#!/usr/bin/env bash
# p2p-perfstat.sh - what one sendrecv iteration costs, counted rather than timed: `perf stat`
# on every rank of MPI_Sendrecv around a ring and of `oxccl-bench sendrecv` variants, summed
# over the ranks and divided by the iterations (warm-up included). Counts (process_vm_readv
# calls, context switches, sched_yield, futex) stay readable on a loaded machine, where the
# times do not.
#
#   bash bench/scripts/p2p-perfstat.sh NP BYTES [LABEL=ENV=V[,ENV=V...] ...]
#   bash bench/scripts/p2p-perfstat.sh 4 1048576 auto= pull=OXCCL_SINGLE_COPY_CHOICE=pull
#
# Columns: time per iteration and bibw as each bench printed them; cpu: task-clock per
# iteration (spinning and yielding included); cs: context switches; yield, futex, vmread:
# those system calls. Open MPI times ~0.25 s, so at large sizes its few iterations carry
# MPI_Init's counts. Env: OX (oxccl-bench), NIT (oxccl's iterations per trial, 100; 3 trials).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n 8,9p "$0" >&2; exit 2; }
NP=$1 SZ=$2
shift 2
OX=${OX:-target/release/oxccl-bench}
BUILD=${BUILD:-/tmp/oxccl-groups-peers}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$BUILD/mpi_sendrecv" ] || { mkdir -p "$BUILD"; mpicc -O3 -march=native -o "$BUILD/mpi_sendrecv" "$HERE/mpi_sendrecv.c"; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
EVENTS=task-clock,context-switches,syscalls:sys_enter_sched_yield,syscalls:sys_enter_futex,syscalls:sys_enter_process_vm_readv
# Each rank writes its own counts (Open MPI's rank variable names the file).
cat > "$DIR/wrap.sh" <<EOF
#!/usr/bin/env bash
exec perf stat -x, -e $EVENTS -o \$PSDIR/r\$OMPI_COMM_WORLD_RANK "\$@"
EOF
chmod +x "$DIR/wrap.sh"

count() { # label, then the command
  local lab=$1; shift
  export PSDIR="$DIR/$lab"
  mkdir -p "$PSDIR"
  "$@" > "$PSDIR/out"
  python3 - "$PSDIR" "$lab" <<'PY'
import glob, json, sys
d, lab = sys.argv[1], sys.argv[2]
it = t = bw = None
for l in open(d + "/out"):
    p = l.split()
    if l.startswith("{"):
        j = json.loads(l); it, t, bw = j["iters"] + 6, j["time_us"], j["bibw_gbps"]
    elif len(p) >= 6 and p[0].isdigit():
        it, t, bw = int(p[5]) + 6, float(p[2]), float(p[3])
s = {}
for f in glob.glob(d + "/r*"):
    for l in open(f):
        q = l.strip().split(",")
        if len(q) > 3 and q[0][:1].isdigit():
            s[q[2]] = s.get(q[2], 0) + float(q[0])
g = lambda k: s.get(k, 0) / it
print(f"{lab:>8} {t:9.1f}us/it {bw:6.2f}GB/s | per iteration: cpu {g('task-clock') * 1000:8.1f}us"
      f" cs {g('context-switches'):7.1f} yield {g('syscalls:sys_enter_sched_yield'):7.1f}"
      f" futex {g('syscalls:sys_enter_futex'):6.1f} vmread {g('syscalls:sys_enter_process_vm_readv'):5.1f}")
PY
}

count mpi $MPIRUN -x PSDIR -np "$NP" "$DIR/wrap.sh" "$BUILD/mpi_sendrecv" -b "$SZ" -e "$SZ"
for v in "$@"; do
  IFS=, read -ra envs <<< "${v#*=}"
  xs=()
  for e in "${envs[@]}"; do [ -n "$e" ] && xs+=(-x "$e"); done
  count "${v%%=*}" $MPIRUN -x PSDIR "${xs[@]}" -np "$NP" "$DIR/wrap.sh" "$OX" sendrecv \
    -b "$SZ" -e "$SZ" --json -n "${NIT:-100}" --trials 3
done
