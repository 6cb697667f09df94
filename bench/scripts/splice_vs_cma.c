// splice_vs_cma.c - CPU per byte of the two ways one process can copy another's memory once:
// the receiver pulling with process_vm_readv (the single-copy path, stream/large.rs) against the
// sender lending its pages to a pipe with vmsplice and the receiver read()ing them (MPICH's
// old vmsplice LMT). Where process_vm_readv spends a quarter of its time pinning the remote
// pages one by one (perf, bench/RESULTS.md session 16), vmsplice takes them with the
// sender's lockless page walk; this says whether that makes the copy cheaper as a whole.
// Receiver CPU is its own; the sender's (vmsplice) is reported over both modes together.
//   gcc -O2 -o /tmp/splice_vs_cma bench/scripts/splice_vs_cma.c && /tmp/splice_vs_cma 2097152 1048576 2000
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double cpu(int who) { struct rusage r; getrusage(who, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  size_t len = argc > 1 ? strtoull(argv[1], 0, 0) : 2 << 20, piece = argc > 2 ? strtoull(argv[2], 0, 0) : 1 << 20;
  int iters = argc > 3 ? atoi(argv[3]) : 500; setvbuf(stdout, 0, _IONBF, 0);
  char *src = aligned_alloc(4096, len), *dst = aligned_alloc(4096, len);
  memset(src, 7, len); memset(dst, 1, len);
  int go[2], ack[2], data[2];
  pipe(go); pipe(ack); pipe2(data, 0);
  int psz = fcntl(data[1], F_SETPIPE_SZ, (int)piece);
  pid_t child = fork();
  if (!child) {  // sender
    close(go[1]); close(ack[0]); close(data[0]);
    char c;
    while (read(go[0], &c, 1) == 1) {
      if (c == 'v') {  // vmsplice the whole buffer in pieces, then wait for the ack
        for (size_t o = 0; o < len;) {
          struct iovec v = {src + o, len - o < piece ? len - o : piece};
          ssize_t n = vmsplice(data[1], &v, 1, 0);
          if (n <= 0) { perror("vmsplice"); _exit(1); }
          o += n;
        }
      }
      write(ack[1], "k", 1);
    }
    _exit(0);
  }
  close(go[0]); close(ack[1]);
  // 1) pull with process_vm_readv (the child idles in read(go))
  for (int mode = 0; mode < 2; mode++) {
    double c0 = cpu(RUSAGE_SELF), t0 = now();
    struct rusage rc0; getrusage(RUSAGE_CHILDREN, &rc0);
    for (int i = 0; i < iters; i++) {
      if (mode == 0) {
        for (size_t o = 0; o < len; o += piece) {
          size_t n = len - o < piece ? len - o : piece;
          struct iovec l = {dst + o, n}, r = {src + o, n};
          if (process_vm_readv(child, &l, 1, &r, 1, 0) != (ssize_t)n) { perror("pvr"); return 1; }
        }
        write(go[1], "p", 1); char c; read(ack[0], &c, 1);
      } else {
        write(go[1], "v", 1);
        for (size_t o = 0; o < len;) { ssize_t n = read(data[0], dst + o, len - o); if (n <= 0) { perror("read"); return 1; } o += n; }
        char c; read(ack[0], &c, 1);
      }
    }
    double t = now() - t0, c = cpu(RUSAGE_SELF) - c0;
    printf("%s len %zu piece %zu pipe %d: wall %.1f us/iter, receiver CPU %.2f GB/s\n", mode ? "vmsplice+read" : "process_vm_readv",
           len, piece, psz, t / iters * 1e6, (double)len * iters / c / 1e9);
  }
  close(go[1]); int st; waitpid(child, &st, 0);
  struct rusage rc; getrusage(RUSAGE_CHILDREN, &rc);
  printf("sender CPU total (both modes): %.3f s\n", rc.ru_utime.tv_sec + rc.ru_utime.tv_usec*1e-6 + rc.ru_stime.tv_sec + rc.ru_stime.tv_usec*1e-6);
  return dst[len - 1] == 7 ? 0 : 2;
}
