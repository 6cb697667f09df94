/* mpi_sendrecv.c - MPI_Sendrecv around a ring (send to rank + 1, receive from rank - 1): the
 * Open MPI side of `oxccl-bench sendrecv` (window 1; with 2 ranks, OSU bibw's pair exchanging
 * both ways).
 *
 *   mpicc -O3 -o mpi_sendrecv mpi_sendrecv.c
 *   mpirun -np 2 ./mpi_sendrecv [-b 8] [-e 67108864] [-T 0.25]
 *
 * Columns as oxccl-bench sendrecv: size, window (1), time per iteration (the slowest rank's,
 * median of 5 trials), bibw = 2 x size / time (what one rank moves both ways), #wrong bytes of
 * a checked first exchange, iters.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRIALS 5
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static unsigned char byte(int from, size_t i) { return (unsigned char)((i * 31) ^ ((size_t)from * 131) ^ (i >> 8)); }

int main(int argc, char **argv) {
  size_t minb = 8, maxb = 64u << 20;
  double target = 0.25;
  int rank, p;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "-b") && a + 1 < argc) minb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-e") && a + 1 < argc) maxb = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "-T") && a + 1 < argc) target = atof(argv[++a]);
    else { if (!rank) fprintf(stderr, "unknown argument %s\n", argv[a]); MPI_Abort(MPI_COMM_WORLD, 2); }
  }
  int next = (rank + 1) % p, prev = (rank + p - 1) % p;
  unsigned char *s = malloc(maxb), *r = malloc(maxb);
  if (!rank) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING]; int len;
    MPI_Get_library_version(lib, &len);
    printf("# MPI_Sendrecv ring, %d ranks, %s\n", p, strtok(lib, ",\n"));
    printf("# %12s %6s %10s %11s %8s %8s\n", "size(B)", "window", "time(us)", "bibw(GB/s)", "#wrong", "iters");
  }
#define XCHG(n) MPI_Sendrecv(s, (int)(n), MPI_BYTE, next, 7, r, (int)(n), MPI_BYTE, prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE)
  for (size_t size = minb; size <= maxb; size *= 2) {
    for (size_t i = 0; i < size; i++) s[i] = byte(rank, i);
    memset(r, 0, size);
    XCHG(size);
    long bad = 0, allbad;
    for (size_t i = 0; i < size; i++) bad += r[i] != byte(prev, i);
    MPI_Reduce(&bad, &allbad, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < 5; i++) XCHG(size);
    double tw = (MPI_Wtime() - t0) / 5, twmax;
    MPI_Allreduce(&tw, &twmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    int iters = (int)(target / TRIALS / (twmax > 1e-9 ? twmax : 1e-9));
    iters = iters < 2 ? 2 : iters > 100000 ? 100000 : iters;
    double tt[TRIALS];
    for (int k = 0; k < TRIALS; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      for (int i = 0; i < iters; i++) XCHG(size);
      double t = (MPI_Wtime() - t0) / iters;
      MPI_Allreduce(&t, &tt[k], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    qsort(tt, TRIALS, sizeof tt[0], cmpd);
    double t = tt[TRIALS / 2];
    if (!rank) printf("  %12zu %6d %10.2f %11.3f %8ld %8d\n", size, 1, t * 1e6, 2.0 * size / t / 1e9, allbad, iters * TRIALS);
    fflush(stdout);
  }
  free(s); free(r);
  MPI_Finalize();
  return 0;
}
