#!/usr/bin/env bash
# nt-ab.sh - main's build against this one with each OXCCL_RING_NT setting, interleaved and
# rotated, each round labelled with the machine's cross-core state.
#
#   bash bench/scripts/nt-ab.sh OUTDIR ROUNDS -- ARGS...
#   bash bench/scripts/nt-ab.sh bench/results/nt/ar4 3 -- all-reduce --ranks 4 -b 8 -e 256M
#   bash bench/scripts/nt-ab.sh bench/results/nt/shm 3 -- transport --transport shm --test bandwidth
#
# Variants ($VARIANTS, default "base off on auto"): base = $BASE (default
# /tmp/nt-main-oxccl-bench, main's build copied before any change); off, on, auto = $NEW
# (default target/release/oxccl-bench) with OXCCL_RING_NT set so.
# Each round runs `xcore_probe 2` (bench/scripts/xcore_probe.c: median hand-over GB/s between
# the two vCPUs, ~11 fast state, ~2 slow) before and after the three runs. OUTDIR gets
# runs.jsonl (every row with its variant, round and probes) and summary.txt: per state (fast:
# both probes >= 6 GB/s; slow: both <= 4; else mixed) and size, the median over rounds of
# variant/base speed (> 1: faster than main).
set -euo pipefail
out=${1:?usage: nt-ab.sh OUTDIR ROUNDS -- ARGS...}
rounds=${2:?rounds}
shift 3
BASE=${BASE:-/tmp/nt-main-oxccl-bench}
NEW=${NEW:-target/release/oxccl-bench}
read -r -a variants <<<"${VARIANTS:-base off on auto}"
HERE=$(cd "$(dirname "$0")" && pwd)
probe=/tmp/nt-ab-xcore_probe
[ -x "$probe" ] || gcc -O2 -o "$probe" "$HERE/xcore_probe.c"
state() { "$probe" 2 | awk 'NR>1{print $2}' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mkdir -p "$out"
: >"$out/runs.jsonl"
for r in $(seq 1 "$rounds"); do
  # Rotated: each round starts one variant later.
  k=$(((r - 1) % ${#variants[@]}))
  order="${variants[*]:k} ${variants[*]:0:k}"
  p0=$(state)
  tmp=$(mktemp)
  for v in $order; do
    case $v in
      base) bin=$BASE envs="OXCCL_RING_NT=off" ;;
      *) bin=$NEW envs="OXCCL_RING_NT=$v" ;;
    esac
    # shellcheck disable=SC2086 # ARGS is a word list
    env $envs "$bin" "$@" --json 2>/dev/null | grep '^{' |
      sed "s/^{/{\"variant\":\"$v\",\"round\":$r,/" >>"$tmp" ||
      echo "round $r $v FAILED" >&2
  done
  p1=$(state)
  sed "s/^{/{\"probe_before\":$p0,\"probe_after\":$p1,/" "$tmp" >>"$out/runs.jsonl"
  rm -f "$tmp"
  echo "$(date -u +%FT%TZ) round $r probe $p0 -> $p1 load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/rounds.txt"
done
python3 - "$out/runs.jsonl" "${variants[@]}" >"$out/summary.txt" <<'PY'
import collections, json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
others = [v for v in sys.argv[2:] if v != "base"]
def speed(r):  # higher is faster
    return r["bandwidth_gbps"] if "bandwidth_gbps" in r else 1.0 / float(r["time_us"])
def state(r):
    a, b = r["probe_before"], r["probe_after"]
    return "fast" if min(a, b) >= 6 else "slow" if max(a, b) <= 4 else "mixed"
t = collections.defaultdict(dict)  # (round, bytes, section) -> variant -> row
for r in rows:
    key = (r["round"], int(r["bytes"]), r.get("test", r.get("op", "")))
    t[key][r["variant"]] = r
by = collections.defaultdict(lambda: collections.defaultdict(list))
for (rnd, b, sec), v in t.items():
    if "base" not in v:
        continue
    s = state(v["base"])
    for var in others:
        if var in v:
            by[(s, sec, b)][var].append(speed(v[var]) / speed(v["base"]))
    by[(s, sec, b)]["rounds"].append(rnd)
print("state = both probes >= 6 GB/s (fast), <= 4 (slow), else mixed; ratio = variant speed / main's")
print(f"{'state':6} {'test':10} {'bytes':>10} {'rounds':>6}" + "".join(f"{v + '/base [min-max]':>24}" for v in others))
for (s, sec, b) in sorted(by):
    d = by[(s, sec, b)]
    def col(x):
        return (f"{st.median(x):.2f} [{min(x):.2f}-{max(x):.2f}]".rjust(24)) if x else " " * 24
    print(f"{s:6} {sec:10} {b:>10} {len(d['rounds']):>6}" + "".join(col(d[v]) for v in others))
PY
cat "$out/summary.txt"
