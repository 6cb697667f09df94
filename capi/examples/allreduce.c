/* The smallest oxccl program: every rank all-reduces a vector and checks the sum.
 *
 * Ranks join from their launcher's variables (mpirun, srun, torchrun, or OXCCL_RANK, OXCCL_SIZE
 * and OXCCL_STORE_ADDR), so this needs no MPI library:
 *
 *   cargo build --release -p oxccl-capi
 *   cc -std=c11 capi/examples/allreduce.c -I capi/include -L target/release -Wl,-rpath,$PWD/target/release -loxccl -o allreduce
 *   mpirun -np 3 ./allreduce
 *   for r in 0 1 2; do OXCCL_RANK=$r OXCCL_SIZE=3 OXCCL_STORE_ADDR=127.0.0.1:29600 ./allreduce & done; wait
 *
 * (capi/tests/c/nccl_pattern.c shows NCCL's other way in: a unique id made by rank 0 and shared
 * with MPI_Bcast.) */
#include <stdio.h>
#include <stdlib.h>

#include "oxccl.h"

#define CHECK(call)                                                                  \
  do {                                                                               \
    oxcclResult_t r_ = (call);                                                       \
    if (r_ != oxcclSuccess) {                                                        \
      fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call,             \
              oxcclGetErrorString(r_), oxcclGetLastError(NULL));                     \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

int main(void) {
  oxcclComm_t comm;
  CHECK(oxcclCommInitFromEnv(&comm));
  int rank, nranks, version;
  CHECK(oxcclCommUserRank(comm, &rank));
  CHECK(oxcclCommCount(comm, &nranks));
  CHECK(oxcclGetVersion(&version));

  enum { N = 1 << 20 };
  float *send = malloc(N * sizeof(float)), *recv = malloc(N * sizeof(float));
  if (!send || !recv) return 1;
  for (int i = 0; i < N; i++) send[i] = (float)(rank + 1) * (float)(i % 1000);

  /* As ncclAllReduce, with NULL where NCCL takes a cudaStream_t: returns when done. */
  CHECK(oxcclAllReduce(send, recv, N, oxcclFloat32, oxcclSum, comm, NULL));

  float ranks_sum = (float)(nranks * (nranks + 1) / 2);
  long wrong = 0;
  for (int i = 0; i < N; i++) wrong += recv[i] != ranks_sum * (float)(i % 1000);
  printf("rank %d/%d (oxccl %d): all-reduce of %d floats, %ld wrong\n", rank, nranks, version, N,
         wrong);

  CHECK(oxcclCommDestroy(comm));
  free(send);
  free(recv);
  return wrong != 0;
}
