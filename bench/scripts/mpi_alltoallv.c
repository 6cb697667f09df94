/* mpi_alltoallv.c - nccl-tests-style benchmark of MPI_Alltoallv on float32, the peer side of
 * `oxccl-bench all-to-all-v` (same counts, same columns; style of ../shared/peers/mpi_allreduce.c).
 *
 *   mpicc -O3 -o mpi_alltoallv mpi_alltoallv.c
 *   mpirun -np 4 ./mpi_alltoallv [-b 65536] [-e 16777216] [-T 0.25] [-n N] [-w 5]
 *
 * Sizes double from -b to -e bytes. "size" is one rank's send buffer (n = size/4 floats). Rank r
 * sends rank q a share of it weighted w = 1 + (r + q) % 3: n * w / sum_q w elements (the rest
 * is unsent), packed in rank order; it receives packed in rank order. These are the counts of
 * `a2av_counts` in bench/src/collective/data.rs. algbw = size/time, busbw = algbw * (p-1)/p.
 * Per size: one checked run on pseudo-random integer-valued floats, warm-up runs (their time
 * picks the iteration count so the timed part takes ~T s; or -n N per trial), then 5 trials of
 * {MPI_Barrier, timed loop, mean time per run, max over ranks}; the median trial is printed.
 * Nothing here is tuned: MPI's defaults.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, p;
#define TRIALS 5
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static float val(int r, size_t i) { /* deterministic "random" integer in [-8, 7] */
  uint32_t x = (uint32_t)i * 2654435761u ^ (uint32_t)(r + 1) * 0x9E3779B9u;
  x ^= x >> 15; x *= 0x2c1b3c6du; x ^= x >> 12; x *= 0x297a2d39u; x ^= x >> 15;
  return (float)((int)(x >> 28) - 8);
}

/* What rank r sends rank q out of its n elements. */
static int count(int r, int q, size_t n) {
  size_t total = 0;
  for (int k = 0; k < p; k++) total += 1 + (r + k) % 3;
  return (int)(n * (size_t)(1 + (r + q) % 3) / total);
}

int main(int argc, char **argv) {
  size_t minb = 65536, maxb = 16u << 20;
  double target = 0.25;
  int fixed_iters = 0, warm = 5;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "-b") && a + 1 < argc) minb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-e") && a + 1 < argc) maxb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-T") && a + 1 < argc) target = atof(argv[++a]);
    else if (!strcmp(argv[a], "-n") && a + 1 < argc) fixed_iters = atoi(argv[++a]);
    else if (!strcmp(argv[a], "-w") && a + 1 < argc) warm = atoi(argv[++a]);
    else { if (!rank) fprintf(stderr, "unknown argument %s\n", argv[a]); MPI_Abort(MPI_COMM_WORLD, 2); }
  }
  double factor = (double)(p - 1) / p;
  /* A rank receives at most 3x what it sends (weights 1..3 over sums of at least p). */
  float *s = malloc(maxb + 64), *d = malloc(3 * maxb + 64);
  int *sc = malloc(p * sizeof(int)), *sd = malloc(p * sizeof(int));
  int *rc = malloc(p * sizeof(int)), *rd = malloc(p * sizeof(int));
  if (!rank) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING]; int len;
    MPI_Get_library_version(lib, &len);
    printf("# alltoallv, %d ranks, float32, %s\n", p, strtok(lib, ",\n"));
    printf("# %12s %12s %6s %10s %12s %12s %8s %6s\n", "size(B)", "count", "type", "time(us)",
           "algbw(GB/s)", "busbw(GB/s)", "#wrong", "iters");
  }
  size_t last = 0;
  for (size_t size = minb; size <= maxb; size *= 2) {
    size_t n = size / 4 / p * p;
    if (n == 0) n = p;
    size_t bytes = n * 4;
    if (bytes == last) continue;
    last = bytes;
    int at = 0, rt = 0;
    for (int q = 0; q < p; q++) {
      sc[q] = count(rank, q, n); sd[q] = at; at += sc[q];
      rc[q] = count(q, rank, n); rd[q] = rt; rt += rc[q];
    }
    for (size_t i = 0; i < n; i++) s[i] = val(rank, i);
    memset(d, 0xff, (size_t)rt * 4); /* NaN: a run that writes nothing is caught */
    MPI_Alltoallv(s, sc, sd, MPI_FLOAT, d, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    long bad = 0, allbad;
    for (int q = 0; q < p; q++) {
      int from = 0; /* q's displacement for this rank */
      for (int k = 0; k < rank; k++) from += count(q, k, n);
      for (int j = 0; j < rc[q]; j++) bad += d[rd[q] + j] != val(q, (size_t)from + j);
    }
    MPI_Reduce(&bad, &allbad, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);

    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < warm; i++) MPI_Alltoallv(s, sc, sd, MPI_FLOAT, d, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    double tw = (MPI_Wtime() - t0) / (warm > 0 ? warm : 1), twmax;
    MPI_Allreduce(&tw, &twmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    int iters = fixed_iters ? fixed_iters : (int)(target / TRIALS / (twmax > 1e-9 ? twmax : 1e-9));
    if (!fixed_iters) iters = iters < 2 ? 2 : iters > 4000 ? 4000 : iters;

    double tt[TRIALS];
    for (int k = 0; k < TRIALS; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      for (int i = 0; i < iters; i++) MPI_Alltoallv(s, sc, sd, MPI_FLOAT, d, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
      double t = (MPI_Wtime() - t0) / iters;
      MPI_Allreduce(&t, &tt[k], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(tt, TRIALS, sizeof tt[0], cmpd);
    double tmax = tt[TRIALS / 2];
    iters *= TRIALS;
    if (!rank) {
      double algbw = bytes / tmax / 1e9;
      printf("  %12zu %12zu %6s %10.2f %12.3f %12.3f %8ld %6d\n", bytes, n, "float", tmax * 1e6,
             algbw, algbw * factor, allbad, iters);
      fflush(stdout);
    }
  }
  free(s); free(d); free(sc); free(sd); free(rc); free(rd);
  MPI_Finalize();
  return 0;
}
