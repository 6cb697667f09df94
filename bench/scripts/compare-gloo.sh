#!/usr/bin/env bash
# compare-gloo.sh - oxccl against Gloo (torch.distributed, backend gloo) side by side in one run.
#
#   bash bench/scripts/compare-gloo.sh 2            # all-reduce, 2 local ranks
#
# Gloo's only transport on one host is TCP over loopback, so oxccl runs twice: over its default
# shared memory, and forced onto TCP over loopback (OXCCL_TRANSPORT=tcp OXCCL_SOCKET_IFNAME=lo),
# the like-for-like row. Needs torch in $VENV (../shared/peers/run-all.sh install puts it in
# /opt/peers-venv) and `cargo build --release -p oxccl-bench`. Results are float32 sum, time is
# the median trial; run it twice on a quiet machine and trust ratios both runs agree on.
set -euo pipefail
np=${1:-2}
MAXB=${MAXB:-268435456}
VENV=${VENV:-/opt/peers-venv}
OX=${OX:-target/release/oxccl-bench}
PEERS=${PEERS:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/peers}
[ -x "$OX" ] || { echo "build first: cargo build --release -p oxccl-bench" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || { echo "no torch venv at $VENV: bash $PEERS/run-all.sh install" >&2; exit 2; }
echo "# $(date -u +%H:%M:%S) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
gloo=$("$VENV/bin/python" "$PEERS/gloo_allreduce.py" --np "$np" --op allreduce -e "$MAXB")
shm=$("$OX" all-reduce --ranks "$np" -b 8 -e "$MAXB" -n 0 --trials 3 --json)
tcp=$(OXCCL_TRANSPORT=tcp OXCCL_SOCKET_IFNAME=lo "$OX" all-reduce --ranks "$np" -b 8 -e "$MAXB" -n 0 --trials 3 --json)
echo "# $(date -u +%H:%M:%S) loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$gloo" "$shm" "$tcp" "$np" <<'PY'
import json, sys
gloo = {}
for l in sys.argv[1].splitlines():
    p = l.split()
    if len(p) >= 6 and p[0].isdigit():
        gloo[int(p[0])] = (float(p[3]), float(p[5]))
def ox(text):
    rows = (json.loads(l) for l in text.splitlines() if l.startswith("{"))
    return {int(r["bytes"]): (r["time_us"], r["busbw_gbps"], r["wrong"]) for r in rows}
shm, tcp = ox(sys.argv[2]), ox(sys.argv[3])
print(f"all-reduce float sum, {sys.argv[4]} ranks: oxccl (shm, tcp) vs Gloo (tcp); time in us, lower is better; x = Gloo time / oxccl time")
print(f"{'bytes':>12} {'gloo':>10} {'ox shm':>10} {'x':>7} {'ox tcp':>10} {'x':>7} {'wrong':>6}")
for b in sorted(gloo):
    if b in shm and b in tcp:
        g = gloo[b][0]
        print(f"{b:>12} {g:>10.2f} {shm[b][0]:>10.2f} {g / shm[b][0]:>7.1f} {tcp[b][0]:>10.2f} {g / tcp[b][0]:>7.1f} {shm[b][2] + tcp[b][2]:>6}")
PY
