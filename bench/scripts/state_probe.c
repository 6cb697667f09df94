/* state_probe.c - is the machine's slow state memory or CPU? One thread alternates a 64 MiB
 * memcpy and a fixed integer loop (no memory traffic) and prints, per round, the wall time
 * of each. A memory-only slow state slows the copy and not the loop; a vCPU that the host
 * takes away slows both.
 *
 *   gcc -O2 -o /tmp/state_probe bench/scripts/state_probe.c && chrt -f 10 /tmp/state_probe 30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 30;
  size_t bytes = 64u << 20;
  char *a = malloc(bytes), *b = malloc(bytes);
  if (!a || !b) return 1;
  memset(a, 1, bytes);
  memset(b, 2, bytes);
  double t0 = now();
  volatile uint64_t sink = 0;
  printf("# t_s copy_GBps loop_ms\n");
  while (now() - t0 < secs) {
    double c0 = now();
    memcpy(b, a, bytes);
    double c1 = now();
    uint64_t x = (uint64_t)c1;
    for (uint64_t i = 0; i < 20000000; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
    sink += x;
    double c2 = now();
    printf("%.3f %.2f %.2f\n", c0 - t0, bytes / (c1 - c0) / 1e9, (c2 - c1) * 1e3);
  }
  (void)sink; /* volatile: keeps the loop */
  free(a);
  free(b);
  return 0;
}
