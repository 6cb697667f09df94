#!/bin/bash
cd /tmp
for rep in 1 2 3 4 5; do
  for v in base new; do
    echo "=== $rep ar2 $v $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout 300 /tmp/compose-bench-$v all-reduce --ranks 2 -b 8 -e 128M -f 8 --json > /tmp/compose-meas/ar2-$v-$rep.json 2>/dev/null
  done
  for v in base new; do
    echo "=== $rep ar4 $v $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    timeout 300 /tmp/compose-bench-$v all-reduce --ranks 4 -b 8 -e 16M -f 8 --json > /tmp/compose-meas/ar4-$v-$rep.json 2>/dev/null
  done
  for v in base new new4m; do
    echo "=== $rep tr $v $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
    b=$v; env=""; [ $v = new4m ] && { b=new; env="OXCCL_RING_BYTES=4194304"; }
    env $env timeout 300 /tmp/compose-bench-$b transport --transport shm --iters-scale 0.2 --max-bytes 16777216 --json > /tmp/compose-meas/tr-$v-$rep.json 2>/dev/null
  done
done
echo DONE
