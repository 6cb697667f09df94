/* mpi_split.c - MPI_Comm_split, then an nccl-tests-style MPI_Allreduce sweep (float32 sum) on
 * the sub-communicator: the Open MPI side of `oxccl-bench all-reduce --split N`.
 *
 *   mpicc -O3 -o mpi_split mpi_split.c
 *   mpirun -np 4 ./mpi_split [-s 2] [-b 8] [-e 268435456] [-T 0.25]
 *
 * -s N: color = rank % N, key = rank (as oxccl-bench --split N); every sub-communicator runs the
 * sweep at the same time, and the one of world rank 0 prints. Columns as mpi_allreduce.c in
 * ../shared/peers (size, count, type, time, algbw, busbw with the sub-communicator's size,
 * #wrong, iters); per size one checked run on integer-valued floats (sums exact), 5 warm-up
 * runs that pick the iteration count, then 5 trials of {barrier, timed loop, max over the
 * sub-communicator}; the median trial is printed.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRIALS 5
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static float val(int r, size_t i) { /* deterministic "random" integer in [-8, 7] */
  uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)(r + 1) * 0x9E3779B9u;
  x ^= x >> 15; x *= 0x2c1b3c6du; x ^= x >> 12; x *= 0x297a2d39u; x ^= x >> 15;
  return (float)((int)(x >> 28) - 8);
}

int main(int argc, char **argv) {
  size_t minb = 8, maxb = 256u << 20;
  double target = 0.25;
  int split = 1, wrank, wsize, rank, p;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "-b") && a + 1 < argc) minb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-e") && a + 1 < argc) maxb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-T") && a + 1 < argc) target = atof(argv[++a]);
    else if (!strcmp(argv[a], "-s") && a + 1 < argc) split = atoi(argv[++a]);
    else { if (!wrank) fprintf(stderr, "unknown argument %s\n", argv[a]); MPI_Abort(MPI_COMM_WORLD, 2); }
  }
  if (split < 1) split = 1;
  MPI_Comm comm;
  MPI_Comm_split(MPI_COMM_WORLD, wrank % split, wrank, &comm);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &p);
  /* The sub-communicator's world ranks, for the check: member r is world rank (wrank % split) + r * split. */
  int base = wrank % split;
  double factor = 2.0 * (p - 1) / p;
  float *s = malloc(maxb + 64), *d = malloc(maxb + 64);
  int print = wrank == 0;
  if (print) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING]; int len;
    MPI_Get_library_version(lib, &len);
    printf("# allreduce on MPI_Comm_split(%d ways) sub-communicators of %d ranks (of %d), float32 sum, %s\n",
           split, p, wsize, strtok(lib, ",\n"));
    printf("# %12s %12s %6s %10s %12s %12s %8s %6s\n", "size(B)", "count", "type", "time(us)",
           "algbw(GB/s)", "busbw(GB/s)", "#wrong", "iters");
  }
  for (size_t size = minb; size <= maxb; size *= 2) {
    size_t n = size / 4 ? size / 4 : 1;
    for (size_t i = 0; i < n; i++) s[i] = val(wrank, i);
    memset(d, 0xff, n * 4);
    MPI_Allreduce(s, d, (int)n, MPI_FLOAT, MPI_SUM, comm);
    long bad = 0, allbad;
    for (size_t i = 0; i < n; i++) {
      float want = 0;
      for (int r = 0; r < p; r++) want += val(base + r * split, i);
      bad += d[i] != want;
    }
    MPI_Reduce(&bad, &allbad, 1, MPI_LONG, MPI_SUM, 0, comm);
    MPI_Barrier(comm);
    double t0 = MPI_Wtime();
    for (int i = 0; i < 5; i++) MPI_Allreduce(s, d, (int)n, MPI_FLOAT, MPI_SUM, comm);
    double tw = (MPI_Wtime() - t0) / 5, twmax;
    MPI_Allreduce(&tw, &twmax, 1, MPI_DOUBLE, MPI_MAX, comm);
    int iters = (int)(target / TRIALS / (twmax > 1e-9 ? twmax : 1e-9));
    iters = iters < 2 ? 2 : iters > 4000 ? 4000 : iters;
    double tt[TRIALS];
    for (int k = 0; k < TRIALS; k++) {
      MPI_Barrier(comm);
      t0 = MPI_Wtime();
      for (int i = 0; i < iters; i++) MPI_Allreduce(s, d, (int)n, MPI_FLOAT, MPI_SUM, comm);
      double t = (MPI_Wtime() - t0) / iters;
      MPI_Allreduce(&t, &tt[k], 1, MPI_DOUBLE, MPI_MAX, comm);
    }
    qsort(tt, TRIALS, sizeof tt[0], cmpd);
    double t = tt[TRIALS / 2], algbw = (double)(n * 4) / t / 1e9;
    if (print)
      printf("  %12zu %12zu %6s %10.2f %12.3f %12.3f %8ld %6d\n", n * 4, n, "float", t * 1e6, algbw,
             algbw * factor, allbad, iters * TRIALS);
    fflush(stdout);
  }
  free(s); free(d);
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return 0;
}
