# sides.sh - how each side of the comparisons with Open MPI runs one test, in one place for the
# scripts that source it (compare-alltoallv.sh, compare-groups.sh, paired-cells.sh), so that
# they time the same thing. The sourcing script sets HERE (this folder) and BUILD (where the
# Open MPI programs are built).

MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"

# build_peers PROG...: Open MPI's side of the tests (bench/scripts/PROG.c), built once into BUILD.
build_peers() {
  command -v mpicc >/dev/null || { echo "install Open MPI: apt-get install -y openmpi-bin libopenmpi-dev" >&2; exit 2; }
  mkdir -p "$BUILD"
  local prog
  for prog in "$@"; do
    [ -x "$BUILD/$prog" ] || mpicc -O3 -march=native -o "$BUILD/$prog" "$HERE/$prog.c"
  done
}

# side WHO TEST NP MIN MAX [MPIRUN_ARGS...]: one run of TEST (alltoallv, sendrecv, split) on NP
# ranks from MIN to MAX bytes, its table on stdout. WHO is `mpi` (Open MPI's program) or an
# oxccl-bench binary; MPIRUN_ARGS (such as `-x OXCCL_BIND=core`) go to mpirun before it.
# Split: sub-communicators of 2 ranks at 4 ranks and more (rank % (NP / 2)), one at 2.
side() {
  local who=$1 test=$2 np=$3 min=$4 max=$5 ways
  shift 5
  ways=$(( np >= 4 ? np / 2 : 1 ))
  case "$who:$test" in
    mpi:alltoallv) $MPIRUN -np "$np" "$BUILD/mpi_alltoallv" -b "$min" -e "$max" ;;
    mpi:sendrecv) $MPIRUN -np "$np" "$BUILD/mpi_sendrecv" -b "$min" -e "$max" ;;
    mpi:split) $MPIRUN -np "$np" "$BUILD/mpi_split" -s "$ways" -b "$min" -e "$max" ;;
    *:alltoallv) $MPIRUN -np "$np" "$@" "$who" all-to-all-v -b "$min" -e "$max" -n 0 -a 3 --trials 5 --json ;;
    *:sendrecv) $MPIRUN -np "$np" "$@" "$who" sendrecv -b "$min" -e "$max" --json ;;
    *:split) $MPIRUN -np "$np" "$@" "$who" all-reduce --split "$ways" -b "$min" -e "$max" --trials 3 --json ;;
    *) echo "unknown test $test (alltoallv, sendrecv, split)" >&2; exit 2 ;;
  esac
}
