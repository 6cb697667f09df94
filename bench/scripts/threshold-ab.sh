#!/usr/bin/env bash
# threshold-ab.sh - OXCCL_SINGLE_COPY_MIN candidates against a base build (e.g. main's), side by
# side: every round runs every test with every variant, in an order rotated per round, then per
# test and size the median time of each variant and the median of the per-round base/variant
# ratios (> 1: the variant is faster).
#
#   BASE=/tmp/main-oxccl-bench bash bench/scripts/threshold-ab.sh OUTDIR [ROUNDS=3] [MINS="8192 16384 32768 65536 262144"]
#
# Variants: `base` (BASE at its defaults) and `t<MIN>` (OX, target/release/oxccl-bench, with
# OXCCL_SINGLE_COPY_MIN=<MIN>, in bytes). Tests (TESTS, "name ranks" pairs): sendrecv, all-to-all-v,
# all-gather and all-reduce at 2 and 4 ranks, 4 KiB-4 MiB (SIZES: "-b 4K -e 4M"). Each round
# also measures the ring alone (OX with single copy off, sendrecv at 2 ranks, 1 MiB) and
# writes it to OUTDIR/ring.txt: the machine's state (fast: ring copies >= ~10 GB/s; slow:
# ~2 GB/s) during that round. Raw rows: OUTDIR/rows.jsonl; table: OUTDIR/medians.txt.
# No SCHED_FIFO prefix: with --ranks the launcher spins beside the ranks, and other FIFO jobs on
# the machine starve them (session 8: a run stuck for minutes, all-reduce swinging 0.03-1.0x
# between variants whose code is the same). Run it on a quiet machine.
set -uo pipefail
out=${1:?usage: threshold-ab.sh OUTDIR [ROUNDS] [MINS]}
rounds=${2:-3}
read -r -a mins <<<"${3:-8192 16384 32768 65536 262144}"
BASE=${BASE:?BASE=<the base oxccl-bench>}
OX=${OX:-target/release/oxccl-bench}
SIZES=${SIZES:-"-b 4K -e 4M"}
TESTS=${TESTS:-"sendrecv 2,sendrecv 4,all-to-all-v 2,all-to-all-v 4,all-gather 4,all-reduce 2,all-reduce 4"}
IFS=, read -r -a tests <<<"$TESTS"
variants=(base)
for m in "${mins[@]}"; do variants+=("t$m"); done
mkdir -p "$out"
: >"$out/rows.jsonl"
: >"$out/ring.txt"
nv=${#variants[@]}
for r in $(seq 1 "$rounds"); do
  ring=$(OXCCL_SINGLE_COPY_MIN=0 "$OX" sendrecv --ranks 2 -b 1M -e 1M --trials 3 --json 2>/dev/null |
    python3 -c 'import json,sys; print(*[json.loads(l)["bibw_gbps"] for l in sys.stdin if l.startswith("{")])')
  echo "round $r $(date -u +%FT%TZ) ring sendrecv 1 MiB: $ring GB/s both ways, load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/ring.txt"
  for t in "${tests[@]}"; do
    read -r sub np <<<"$t"
    for i in $(seq 0 $((nv - 1))); do
      v=${variants[$(((i + r) % nv))]}
      if [ "$v" = base ]; then
        env=() b=$BASE
      else
        env=(OXCCL_SINGLE_COPY_MIN="${v#t}") b=$OX
      fi
      # shellcheck disable=SC2086 # SIZES is a word list
      env "${env[@]}" "$b" "$sub" --ranks "$np" $SIZES --trials 3 --json 2>>"$out/stderr.txt" |
        grep '^{' | sed "s/^{/{\"case\":\"$sub $np\",\"variant\":\"$v\",\"round\":$r,/" >>"$out/rows.jsonl" ||
        echo "round $r $t $v FAILED" | tee -a "$out/ring.txt"
    done
  done
done
python3 - "$out/rows.jsonl" "${variants[@]}" >"$out/medians.txt" <<'PY'
import json, sys, statistics as st, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
variants = sys.argv[2:]
t = collections.defaultdict(lambda: collections.defaultdict(dict))
for r in rows:
    assert str(r.get("wrong", 0)) in ("0", "None"), f"wrong values: {r}"
    t[(r["case"], int(r["bytes"]))][r["variant"]][r["round"]] = float(r["time_us"])
others = [v for v in variants if v != "base"]
last = None
for (test, b) in sorted(t):
    if test != last:
        print(f"\n{test}: base us, then per variant base/variant (median of per-round ratios; > 1 faster)")
        print(f"{'bytes':>9} {'base us':>9} " + " ".join(f"{v:>7}" for v in others))
        last = test
    d = t[(test, b)]
    def ratio(v):
        rs = sorted(set(d.get("base", {})) & set(d.get(v, {})))
        return f"{st.median(d['base'][k] / d[v][k] for k in rs):>7.2f}" if rs else "      -"
    base = st.median(d["base"].values()) if d.get("base") else float("nan")
    print(f"{b:>9} {base:>9.1f} " + " ".join(ratio(v) for v in others))
PY
cat "$out/medians.txt"
