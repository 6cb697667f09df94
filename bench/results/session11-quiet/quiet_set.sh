#!/bin/bash
# Session 11 quiet set: issue 12's p2p/split/all-to-all-v, then issue 10's compare rounds.
set -u
cd /work/main
R=${R:-bench/results/session11-quiet}
mkdir -p $R
[ -x /tmp/xcore_probe ] || gcc -O2 -o /tmp/xcore_probe bench/scripts/xcore_probe.c
probe() { echo "$(date -u +%T) $1 probe $(/tmp/xcore_probe 1 | tail -1) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/log.txt; }
probe start
BASE=${BASE:-} nice -n -10 bash bench/scripts/compare-groups.sh 3 "2 4" 65536 16777216 > $R/groups.txt 2>&1
probe groups-done
OUT=$R/alltoallv nice -n -10 bash bench/scripts/compare-alltoallv.sh 2 4 > $R/alltoallv.txt 2>&1
probe alltoallv-done
PRIO="nice -n -10" bash bench/scripts/compare-rounds.sh $R/compare 3 "all-reduce 2" "all-reduce 4" transport > $R/compare.log 2>&1
probe compare-done
