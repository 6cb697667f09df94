#!/usr/bin/env bash
# The reliability acceptance loops of issue 11 (results in bench/RESULTS.md).
#
# usage: bench/scripts/reliability.sh [oneshot|mismatch|kinds|kills|stops|strangers|all] [RUNS]
#
#   oneshot    RUNS (50) x mpirun -np 8: one 16 MiB f32 all-reduce each, every element checked,
#              then exit (shm).
#   mismatch   RUNS (50) x mpirun -np 3: the first call mismatched (float32 vs int32), no
#              warm-up: every rank must fail in it within 1 s, with the names.
#   kinds      every mismatch kind (broadcast roots/counts, reduce counts/roots, dtype, op,
#              send 100 vs recv 101) RUNS (5) x over shm and over TCP, 3 ranks: the same check
#              (every rank fails in the mismatched call itself: a send waits for the receiver's
#              receipt).
#   kills      the fault trials (collectives/tests/faults.rs), kills during calls and during
#              bootstrap, RUNS (20) per fabric and rank count, plus the fixed checks of a
#              store host (rank 0) killed before the others start / connect.
#              OXCCL_FAULT_PAIRS=tcp:2,... runs only those pairs (same seeds).
#   stops      the same trials with SIGSTOP mid-call, RUNS (20) per fabric and rank count: every
#              survivor must fail within OXCCL_TIMEOUT (3 s, plus the test's margin) naming the
#              stopped rank and the operation (asserted by the test). Each trial's rank logs
#              (OXCCL_DEBUG=info) go to target/stops-logs/ and stay only for a failed trial
#              (with the stacks of a survivor that overran). OXCCL_FAULT_PAIRS=shm:2 and
#              OXCCL_FAULT_VICTIM=0 skew the trials to one shape.
#   strangers  a 3-rank job whose bootstrap is held open (rank 2 starts 5 s late) while
#              strangers.py hits the store and both data ports: garbage, resets, connect-close,
#              2,000 idle connections per port; over TCP, then shm. The job must run correctly.
#
# Prints one line per failure and a count per loop; leftovers in /dev/shm and /tmp are listed.
set -u
cd "$(dirname "$0")/../.."
what=${1:-all}
runs=${2:-}
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -x OXCCL_TIMEOUT=30)
nice cargo build -q --release -p oxccl-collectives --example trial || exit 1
T=target/release/examples/trial

leftovers() {
    ls -d /dev/shm/oxccl* /tmp/oxccl* 2>/dev/null
}

before=$(leftovers)

oneshot() {
    local n=${runs:-50} fail=0
    for i in $(seq "$n"); do
        out=$(timeout 180 "${MPIRUN[@]}" -np 8 "$T" oneshot 2>&1)
        ok=$(grep -c "16 MiB all_reduce ok" <<<"$out")
        if [ "$ok" != 8 ]; then
            fail=$((fail + 1))
            echo "oneshot run $i: $ok of 8 ranks ok:"
            echo "$out" | head -20
        fi
    done
    echo "oneshot: $((n - fail)) of $n runs of 8 ranks passed, $fail failed"
}

# check_mismatch OUTPUT RANKS WORD...: every rank failed within 1 s, naming every WORD.
check_mismatch() {
    local out=$1 p=$2
    shift 2
    local bad=0
    for r in $(seq 0 $((p - 1))); do
        line=$(grep "^rank $r: " <<<"$out" | head -1)
        s=$(sed -n 's/^rank [0-9]*: error after \([0-9.]*\) s: .*/\1/p' <<<"$line")
        if [ -z "$s" ] || ! awk -v s="$s" 'BEGIN { exit !(s < 1.0) }'; then
            bad=1
        fi
        for w in "$@"; do
            grep -qF -- "$w" <<<"$line" || bad=1
        done
        if grep -qE '(dtype|op) #' <<<"$line"; then bad=1; fi
    done
    return $bad
}

mismatch() {
    local n=${runs:-50} fail=0 slowest=0
    for i in $(seq "$n"); do
        out=$(timeout 60 "${MPIRUN[@]}" -np 3 "$T" mismatch dtype 2>&1)
        if ! check_mismatch "$out" 3 float32 int32 all_reduce; then
            fail=$((fail + 1))
            echo "mismatch run $i:"
            echo "$out" | head -10
        fi
        slowest=$(sed -n 's/^rank [0-9]*: error after \([0-9.]*\) s.*/\1/p' <<<"$out" |
            sort -g | tail -1 | awk -v m="$slowest" '{ print ($1 > m) ? $1 : m }')
    done
    echo "mismatch (3 ranks, float32 vs int32, no warm-up): $((n - fail)) of $n runs passed, $fail failed; slowest rank ${slowest} s"
}

kinds() {
    local n=${runs:-5} fail=0 total=0
    # kind and the words every rank's error must hold
    local -a cases=(
        "bcast-root|broadcast|root 0|root 1"
        "bcast-count|broadcast|float32|count 101"
        "reduce-count|reduce|float32|sum|count 101"
        "reduce-root|reduce|float32|root 1"
        "dtype|all_reduce|float32|int32"
        "op|all_reduce|sum|max"
        "p2p|send/recv|float32|count 100|count 101"
    )
    for fabric in shm tcp; do
        for c in "${cases[@]}"; do
            IFS='|' read -r kind words <<<"$c"
            IFS='|' read -r -a w <<<"$words"
            for i in $(seq "$n"); do
                total=$((total + 1))
                out=$(timeout 60 "${MPIRUN[@]}" -x OXCCL_TRANSPORT=$fabric -np 3 "$T" mismatch "$kind" 2>&1)
                if ! check_mismatch "$out" 3 "${w[@]}"; then
                    fail=$((fail + 1))
                    echo "kind $kind over $fabric, run $i:"
                    echo "$out" | head -10
                fi
            done
            echo "  $fabric $kind: e.g. $(grep '^rank 1: ' <<<"$out" | head -1)"
        done
    done
    echo "mismatch kinds: $((total - fail)) of $total runs passed, $fail failed"
}

kills() {
    local n=${runs:-20}
    OXCCL_FAULT_TRIALS=$n OXCCL_FAULT_KINDS=kill,boot OXCCL_FAULT_SEED=${OXCCL_FAULT_SEED:-2031} \
        nice cargo test -q --release -p oxccl-collectives --test faults 2>&1 |
        tee target/reliability-kills.log | tail -25
    echo "(every trial's lines: target/reliability-kills.log)"
}

stops() {
    local n=${runs:-20}
    OXCCL_FAULT_TRIALS=$n OXCCL_FAULT_KINDS=stop OXCCL_FAULT_SEED=${OXCCL_FAULT_SEED:-2032} \
        OXCCL_FAULT_LOGS=${OXCCL_FAULT_LOGS:-$PWD/target/stops-logs} \
        nice cargo test -q --release -p oxccl-collectives --test faults 2>&1 |
        tee target/reliability-stops.log | tail -25
    echo "(every trial's lines: target/reliability-stops.log)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

strangers() {
    local fail=0
    for fabric in tcp shm; do
        local port pids=() ports=()
        port=$(free_port)
        local env=(OXCCL_SIZE=3 OXCCL_STORE_ADDR=127.0.0.1:$port OXCCL_SECRET=strangers
            OXCCL_TIMEOUT=60 OXCCL_TRANSPORT=$fabric)
        local log=target/strangers-$fabric
        for r in 0 1; do
            env "${env[@]}" OXCCL_RANK=$r "$T" steady 2000 >"$log.$r" 2>&1 &
            pids+=($!)
        done
        sleep 1.5
        # Every TCP port ranks 0 and 1 listen on: the store and their data listeners.
        for pid in "${pids[@]}"; do
            ports+=($(ss -ltnpH | grep "pid=$pid," | awk '{ n = split($4, a, ":"); print a[n] }'))
        done
        python3 bench/scripts/strangers.py 6 "${ports[@]}" >"$log.strangers" 2>&1 &
        local sp=$!
        sleep 5
        env "${env[@]}" OXCCL_RANK=2 "$T" steady 2000 >"$log.2" 2>&1 &
        pids+=($!)
        for pid in "${pids[@]}"; do wait "$pid"; done
        wait $sp
        ok=$(cat "$log".[012] | grep -c "calls ok")
        echo "strangers over $fabric: ports ${ports[*]}; $ok of 3 ranks ran correctly"
        sed 's/^/  /' "$log.strangers"
        cat "$log".[012] | sed 's/^/  /'
        [ "$ok" = 3 ] || fail=$((fail + 1))
    done
    echo "strangers: $fail of 2 jobs failed"
}

# timed LOOP: the loop, then how long it took and the load average before and after (the
# figures RESULTS.md records with each count).
timed() {
    local start=$SECONDS load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $1 ($(date -u +%H:%M:%S) UTC, load $load)"
    "$1"
    echo "== $1 took $((SECONDS - start)) s; load $load before, $(cut -d' ' -f1-3 /proc/loadavg) after"
}

case $what in
oneshot | mismatch | kinds | kills | stops | strangers) timed "$what" ;;
all)
    for loop in oneshot mismatch kinds kills stops strangers; do
        timed $loop
    done
    ;;
*)
    echo "usage: $0 [oneshot|mismatch|kinds|kills|stops|strangers|all] [RUNS]" >&2
    exit 2
    ;;
esac
after=$(leftovers)
new=$(comm -13 <(sort <<<"$before") <(sort <<<"$after"))
if [ -n "$new" ]; then
    echo "left behind (may include other jobs of this machine):"
    echo "$new"
else
    echo "nothing left in /dev/shm or /tmp"
fi
