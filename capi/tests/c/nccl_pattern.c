/* NCCL's usage pattern through oxccl.h, under mpirun: rank 0 makes the unique id, MPI_Bcast
 * shares it, every rank joins; then an all-reduce, the other collectives (in place and out of
 * place), a split into two halves with an all-reduce in each, a group with a ring exchange of
 * 64 MiB (far larger than any buffer of the library: its shared-memory rings are 1 MiB), a
 * group in which two ranks each post a 64 MiB send and then a receive to the other (the shape
 * that deadlocks when sends wait for their receiver's turn), a rejected bad call, and
 * destruction. Every result is checked; any failure prints the library's
 * message and aborts the job.
 *
 *   mpicc -std=c11 capi/tests/c/nccl_pattern.c $(PKG_CONFIG_PATH=capi pkg-config --cflags --libs oxccl)
 *   mpirun -np 4 ./a.out [ring-exchange-MiB]
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oxccl.h"

static int world_rank;

#define CHECK(call)                                                                   \
  do {                                                                                \
    oxcclResult_t r_ = (call);                                                        \
    if (r_ != oxcclSuccess) {                                                         \
      fprintf(stderr, "rank %d: %s:%d: %s: %s (%s)\n", world_rank, __FILE__, __LINE__, \
              #call, oxcclGetErrorString(r_), oxcclGetLastError(NULL));               \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
    }                                                                                 \
  } while (0)

#define EXPECT(cond, ...)                                                               \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      fprintf(stderr, "rank %d: %s:%d: %s failed: ", world_rank, __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                     \
      fprintf(stderr, "\n");                                                            \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                     \
    }                                                                                   \
  } while (0)

/* A value that differs per (rank, index), small enough that float sums are exact. */
static float value(int rank, size_t i) { return (float)((rank * 7919 + (long)i * 31) % 1001 - 500); }

/* A byte of the ring exchange: differs per sender and position. */
static uint8_t pattern(int sender, size_t i) {
  uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)sender * 0xC2B2AE3D27D4EB4Full;
  return (uint8_t)(x >> 56);
}

static void all_reduce_check(oxcclComm_t comm, const int *members, int nmembers, const char *what) {
  enum { N = 100003 };
  int rank, n;
  CHECK(oxcclCommUserRank(comm, &rank));
  CHECK(oxcclCommCount(comm, &n));
  EXPECT(n == nmembers, "%s: %d ranks, expected %d", what, n, nmembers);
  float *send = malloc(N * sizeof(float)), *recv = malloc(N * sizeof(float));
  EXPECT(send && recv, "out of memory");
  for (size_t i = 0; i < N; i++) send[i] = value(world_rank, i);
  CHECK(oxcclAllReduce(send, recv, N, oxcclFloat32, oxcclSum, comm, NULL));
  for (size_t i = 0; i < N; i++) {
    float want = 0;
    for (int m = 0; m < nmembers; m++) want += value(members[m], i);
    EXPECT(recv[i] == want, "%s: element %zu is %g, expected %g", what, i, recv[i], want);
  }
  /* In place, with a maximum. */
  CHECK(oxcclAllReduce(send, send, N, oxcclFloat32, oxcclMax, comm, NULL));
  for (size_t i = 0; i < N; i++) {
    float want = value(members[0], i);
    for (int m = 1; m < nmembers; m++) want = value(members[m], i) > want ? value(members[m], i) : want;
    EXPECT(send[i] == want, "%s: in-place max element %zu is %g, expected %g", what, i, send[i], want);
  }
  free(send);
  free(recv);
}

static void other_collectives(oxcclComm_t comm, int rank, int n) {
  enum { C = 4099 };
  /* Broadcast from the last rank, out of place. */
  int64_t *b = malloc(C * sizeof(int64_t)), *out = malloc((size_t)n * C * sizeof(int64_t));
  EXPECT(b && out, "out of memory");
  for (size_t i = 0; i < C; i++) b[i] = rank == n - 1 ? (int64_t)(i * i) : -1;
  CHECK(oxcclBroadcast(b, b, C, oxcclInt64, n - 1, comm, NULL));
  for (size_t i = 0; i < C; i++) EXPECT(b[i] == (int64_t)(i * i), "broadcast element %zu", i);
  /* All-gather in place: this rank's block already sits at recvbuff + rank * count. */
  for (size_t i = 0; i < C; i++) out[(size_t)rank * C + i] = rank * 100000 + (int64_t)i;
  CHECK(oxcclAllGather(out + (size_t)rank * C, out, C, oxcclInt64, comm, NULL));
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < C; i++)
      EXPECT(out[(size_t)q * C + i] == q * 100000 + (int64_t)i, "all-gather block %d element %zu", q, i);
  /* Reduce-scatter in place (recvbuff = sendbuff + rank * recvcount), then a reduce to rank 0. */
  for (size_t i = 0; i < (size_t)n * C; i++) out[i] = rank + (int64_t)i;
  CHECK(oxcclReduceScatter(out, out + (size_t)rank * C, C, oxcclInt64, oxcclSum, comm, NULL));
  for (size_t i = 0; i < C; i++) {
    int64_t want = (int64_t)n * ((int64_t)rank * C + (int64_t)i) + (int64_t)n * (n - 1) / 2;
    EXPECT(out[(size_t)rank * C + i] == want, "reduce-scatter element %zu", i);
  }
  for (size_t i = 0; i < C; i++) b[i] = rank + 1;
  int64_t *root_out = rank == 0 ? out : NULL;
  CHECK(oxcclReduce(b, root_out, C, oxcclInt64, oxcclProd, 0, comm, NULL));
  if (rank == 0) {
    int64_t fact = 1;
    for (int q = 1; q <= n; q++) fact *= q;
    for (size_t i = 0; i < C; i++) EXPECT(out[i] == fact, "reduce element %zu", i);
  }
  /* All-to-all: block q goes to rank q. */
  int32_t *a = malloc((size_t)n * C * sizeof(int32_t)), *t = malloc((size_t)n * C * sizeof(int32_t));
  EXPECT(a && t, "out of memory");
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < C; i++) a[(size_t)q * C + i] = rank * 1000 + q * 10 + (int32_t)(i % 7);
  CHECK(oxcclAlltoAll(a, t, C, oxcclInt32, comm, NULL));
  for (int q = 0; q < n; q++)
    for (size_t i = 0; i < C; i++)
      EXPECT(t[(size_t)q * C + i] == q * 1000 + rank * 10 + (int32_t)(i % 7), "all-to-all from %d", q);
  free(a);
  free(t);
  free(b);
  free(out);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int nranks;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  size_t ring_bytes = (size_t)(argc > 1 ? atoi(argv[1]) : 64) << 20;

  /* NCCL's pattern: rank 0 makes the id, MPI shares it, everyone joins. */
  oxcclUniqueId id;
  if (world_rank == 0) CHECK(oxcclGetUniqueId(&id));
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  oxcclComm_t comm;
  CHECK(oxcclCommInitRank(&comm, nranks, id, world_rank));

  int *everyone = malloc(nranks * sizeof(int));
  for (int q = 0; q < nranks; q++) everyone[q] = q;
  all_reduce_check(comm, everyone, nranks, "world");
  other_collectives(comm, world_rank, nranks);

  /* Two halves: ranks below nranks/2, and the rest; ordered by key = world rank. */
  int half = nranks / 2, color = world_rank < half ? 0 : 1;
  oxcclComm_t half_comm;
  CHECK(oxcclCommSplit(comm, color, world_rank, &half_comm, NULL));
  int first = color == 0 ? 0 : half, members = color == 0 ? half : nranks - half;
  int half_rank;
  CHECK(oxcclCommUserRank(half_comm, &half_rank));
  EXPECT(half_rank == world_rank - first, "rank %d in its half", half_rank);
  all_reduce_check(half_comm, everyone + first, members, color == 0 ? "first half" : "second half");

  /* A ring exchange far larger than the library's buffers, in one group. */
  uint8_t *out = malloc(ring_bytes), *in = malloc(ring_bytes);
  EXPECT(out && in, "out of memory for %zu bytes", ring_bytes);
  for (size_t i = 0; i < ring_bytes; i++) out[i] = pattern(world_rank, i);
  memset(in, 0, ring_bytes);
  int next = (world_rank + 1) % nranks, prev = (world_rank + nranks - 1) % nranks;
  MPI_Barrier(MPI_COMM_WORLD);
  double start = MPI_Wtime();
  CHECK(oxcclGroupStart());
  CHECK(oxcclSend(out, ring_bytes, oxcclUint8, next, comm, NULL));
  CHECK(oxcclRecv(in, ring_bytes, oxcclUint8, prev, comm, NULL));
  CHECK(oxcclGroupEnd());
  double seconds = MPI_Wtime() - start;
  for (size_t i = 0; i < ring_bytes; i++)
    EXPECT(in[i] == pattern(prev, i), "ring exchange byte %zu from rank %d", i, prev);

  /* Pairs (0,1), (2,3), ...: each rank posts its send to the other first, then its receive,
   * in one group; a rank without a partner sits this one out. */
  int partner = world_rank ^ 1;
  if (partner < nranks) {
    memset(in, 0, ring_bytes);
    CHECK(oxcclGroupStart());
    CHECK(oxcclSend(out, ring_bytes, oxcclUint8, partner, comm, NULL));
    CHECK(oxcclRecv(in, ring_bytes, oxcclUint8, partner, comm, NULL));
    CHECK(oxcclGroupEnd());
    for (size_t i = 0; i < ring_bytes; i++)
      EXPECT(in[i] == pattern(partner, i), "pairwise exchange byte %zu from rank %d", i, partner);
  }

  /* A bad call is refused with a message, and the communicator stays usable. */
  float x = 1;
  oxcclResult_t bad = oxcclAllReduce(&x, &x, 1, 99 /* not a datatype */, oxcclSum, comm, NULL);
  EXPECT(bad == oxcclInvalidArgument, "a bad datatype gave %d", bad);
  EXPECT(strstr(oxcclGetLastError(comm), "datatype") != NULL, "message: %s", oxcclGetLastError(comm));
  all_reduce_check(comm, everyone, nranks, "world after a bad call");

  CHECK(oxcclCommDestroy(half_comm));
  CHECK(oxcclCommDestroy(comm));
  if (world_rank == 0)
    printf("nccl_pattern: %d ranks: all-reduce, collectives, split, %zu MiB group ring exchange "
           "(%.1f ms on rank 0, %.2f GB/s each way), pairwise exchange: OK\n",
           nranks, ring_bytes >> 20, seconds * 1e3, (double)ring_bytes / seconds / 1e9);
  free(out);
  free(in);
  free(everyone);
  MPI_Finalize();
  return 0;
}
