// cma_pieces.c - thread CPU time per byte of process_vm_readv out of a forked child, by piece
// size (the single-copy path's PULL_PIECE, collectives/src/exec/pull.rs). CPU time, not wall
// time, so a loaded machine still compares the piece sizes.
//   gcc -O2 -o /tmp/cma_pieces bench/scripts/cma_pieces.c && /tmp/cma_pieces 2097152
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
static double cpu(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static double wall(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t total = argc>1 ? strtoul(argv[1],0,0) : (8u<<20);
  char *src = aligned_alloc(4096,total); memset(src,7,total);
  int p[2]; pipe(p);
  pid_t c = fork();
  if(!c){ pause(); return 0; }
  char *dst = aligned_alloc(4096,total); memset(dst,1,total);
  size_t pieces[] = {128<<10,256<<10,512<<10,1<<20,2<<20};
  for(int round=0;round<5;round++){
    for(int k=0;k<5;k++){
      size_t piece=pieces[k]; if(piece>total) continue;
      int reps = (int)((256u<<20)/total); if(reps<4) reps=4;
      double c0=cpu(), w0=wall();
      for(int r=0;r<reps;r++) for(size_t off=0;off<total;off+=piece){
        size_t n = piece < total-off ? piece : total-off;
        struct iovec l={dst+off,n}, rm={src+off,n};
        if(process_vm_readv(c,&l,1,&rm,1,0)!=(ssize_t)n){perror("readv");kill(c,9);return 1;}
      }
      double c1=cpu()-c0, w1=wall()-w0;
      printf("total %zu piece %8zu: cpu %.2f GB/s wall %.2f GB/s\n", total, piece, reps*(double)total/c1/1e9, reps*(double)total/w1/1e9);
    }
  }
  kill(c,9); waitpid(c,0,0);
}
