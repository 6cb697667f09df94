#!/bin/bash
# Session 12 quiet set: issue 12's split/sendrecv/all-to-all-v, then issue 10's compare rounds,
# on one build copied aside (OX), every step labelled with the cross-core probe.
set -u
cd /work/main
R=${R:-bench/results/session12-quiet}
export OX=${OX:-/tmp/ox-final}
mkdir -p $R
[ -x /tmp/xcore_probe ] || gcc -O2 -o /tmp/xcore_probe bench/scripts/xcore_probe.c
probe() { echo "$(date -u +%T) $1 probe $(/tmp/xcore_probe 1 | tail -1) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/log.txt; }
probe start
nice -n -10 bash bench/scripts/compare-groups.sh 3 "2 4" 65536 16777216 > $R/groups.txt 2>&1
probe groups-done
OUT=$R/alltoallv nice -n -10 bash bench/scripts/compare-alltoallv.sh 2 4 > $R/alltoallv.txt 2>&1
probe alltoallv-done
PRIO="nice -n -10" bash bench/scripts/compare-rounds.sh $R/compare 3 "all-reduce 2" "all-reduce 4" transport > $R/compare.log 2>&1
probe compare-done
