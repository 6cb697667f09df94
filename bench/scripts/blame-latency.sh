#!/usr/bin/env bash
# Small all-reduce latency, a base build against this one, side by side (issue 11: the failure
# board and the broadcast/reduce header exchange must not slow the latency path down).
#
# usage: bench/scripts/blame-latency.sh BASE_BENCH NEW_BENCH [RANKS] [REPEATS]
# Prints, per size, each interleaved repeat's time_us (median of --trials 5) and the median
# ratio new/base.
set -eu
base=$1 new=$2 ranks=${3:-2} reps=${4:-3}
declare -A t
for rep in $(seq "$reps"); do
    for which in base new; do
        bin=${!which}
        while IFS=, read -r size us; do
            t[$which,$size]+="$us "
        done < <("$bin" all-reduce --ranks "$ranks" -b 8 -e 1K -f 128 -n 2000 -w 200 --trials 5 --csv |
            awk -F, 'NR > 1 { print $3 "," $8 }')
    done
done
for size in 8 1024; do
    ratios=$(paste <(tr ' ' '\n' <<<"${t[base,$size]}") <(tr ' ' '\n' <<<"${t[new,$size]}") |
        awk 'NF == 2 { print $2 / $1 }' | sort -g)
    med=$(awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }' <<<"$ratios")
    echo "$ranks ranks, $size B: base ${t[base,$size]}us; new ${t[new,$size]}us; median ratio new/base $med"
done
