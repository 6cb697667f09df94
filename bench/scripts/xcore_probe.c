/* xcore_probe.c - the speed of handing bytes from one core to the other, over time.
 *
 *   gcc -O2 -o /tmp/xcore_probe bench/scripts/xcore_probe.c && chrt -f 10 /tmp/xcore_probe 60
 *
 * Two processes pinned to cpu 0 and cpu 1 share a 1 MiB buffer: the writer fills it, the reader
 * copies it out, in turns (a flag each way), which is what a shared-memory ring or a pipelined
 * pull does with cache-hot pieces. Every 0.5 s the writer prints the GB/s handed over (1 MiB per
 * turn) and, as a control, its own local copy speed of a 1 MiB buffer (no other core involved).
 * The waits yield (under chrt -f, a pinned spinner would starve another real-time task on its
 * cpu, a second probe's half included). A drop of the first with the second steady means moving lines between the two cores became
 * slow (on this KVM guest: the host placing the two vCPUs on different core complexes).
 * `xcore_probe SECS nt`: the writer fills the buffer with non-temporal stores (to memory, not
 * its cache), so the reader gets the bytes from memory instead of from the other core.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <emmintrin.h>

#define N (1u << 20)
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s); }

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 60;
  int nt = argc > 2 && !strcmp(argv[2], "nt");
  char *shared = mmap(0, N + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return 1;
  _Atomic int *turn = (_Atomic int *)(shared + N); /* 0: writer's turn, 1: reader's, 2: stop */
  char *priv = malloc(N), *priv2 = malloc(N);
  memset(priv, 3, N); memset(priv2, 4, N);
  pid_t child = fork();
  if (child == 0) {
    pin(1);
    for (;;) {
      int t;
      while ((t = atomic_load_explicit(turn, memory_order_acquire)) == 0) sched_yield();
      if (t == 2) _exit(0);
      memcpy(priv, shared, N);
      atomic_store_explicit(turn, 0, memory_order_release);
    }
  }
  pin(0);
  printf("# t_s handover_GBps local_copy_GBps\n");
  double t0 = now(), mark = t0, busy = 0, local = 0;
  long turns = 0, copies = 0;
  unsigned char v = 0;
  while (now() - t0 < secs) {
    double a = now();
    ++v;
    if (nt) {
      __m128i x = _mm_set1_epi8((char)v);
      for (size_t i = 0; i < N; i += 16) _mm_stream_si128((__m128i *)(shared + i), x);
      _mm_sfence();
    } else {
      memset(shared, v, N);
    }
    atomic_store_explicit(turn, 1, memory_order_release);
    while (atomic_load_explicit(turn, memory_order_acquire) != 0) sched_yield();
    double b = now();
    busy += b - a; turns++;
    memcpy(priv2, priv, N); /* local control */
    local += now() - b; copies++;
    if (b - mark >= 0.5) {
      printf("%.1f %.2f %.2f\n", b - t0, turns * (double)N / busy / 1e9, copies * (double)N / local / 1e9);
      fflush(stdout);
      mark = b; busy = local = 0; turns = copies = 0;
    }
  }
  atomic_store_explicit(turn, 2, memory_order_release);
  waitpid(child, 0, 0);
  return 0;
}
