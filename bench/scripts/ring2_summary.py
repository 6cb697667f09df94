"""Summary of ring2-state.sh's runs.jsonl: per state and size, each variant's median time
(us) and its busbw ratio to Open MPI's median in the same state (> 1: faster than Open MPI)."""
import json
import statistics as st
import sys

rows = [json.loads(l) for f in sys.argv[1:] for l in open(f)]


def state(r):
    lo, hi = min(r["p0"], r["p1"]), max(r["p0"], r["p1"])
    return "fast" if lo >= 6 else "slow" if hi <= 4 else "mixed"


variants = list(dict.fromkeys(r["variant"] for r in rows))
for s in ("fast", "slow", "mixed"):
    sel = [r for r in rows if state(r) == s]
    if not sel:
        continue
    runs = {v: len({r["round"] for r in sel if r["variant"] == v}) for v in variants}
    print(f"\n{s} state: runs per variant {runs}")
    print("time_us median (x = busbw / Open MPI's, both medians in this state)")
    print(f"{'bytes':>10} " + " ".join(f"{v:>16}" for v in variants))
    for b in sorted({r["bytes"] for r in sel}):
        med = {}
        for v in variants:
            t = [r["time_us"] for r in sel if r["variant"] == v and r["bytes"] == b]
            med[v] = st.median(t) if t else None
        ref = med.get("mpi")
        cells = []
        for v in variants:
            t = med[v]
            if t is None:
                cells.append(f"{'-':>16}")
            elif ref and v != "mpi":
                cells.append(f"{t:>9.0f} {ref / t:>5.2f}x")
            else:
                cells.append(f"{t:>16.0f}")
        print(f"{b:>10} " + " ".join(cells))
