"""Sums up a timeline_ab.sh log: per round, comm_mean of A and B over gloo's, and how often
each rank launched last, then the medians over the rounds.
    python bench/results/issue15/timeline_sum.py bench/results/issue15/<tag>.txt"""
import re
import statistics
import sys

rounds, cur = {}, None
for line in open(sys.argv[1]):
    m = re.match(r"## (\w+) round (\d+)", line)
    if m:
        cur = (m[1], int(m[2]))
        continue
    if cur and line.startswith("comm_mean"):
        rounds.setdefault(cur[1], {})[cur[0]] = float(line.split()[-1])
    if cur and line.startswith("steps in which"):
        rounds.setdefault(cur[1], {})[cur[0] + " last"] = line.split(":")[1].strip()
for r, v in sorted(rounds.items()):
    g = v.get("gloo")
    print(f"round {r}: comm_mean gloo {g:.2f}  A {v.get('A', float('nan')):.2f} ({v.get('A', 0) / g:.3f})  "
          f"B {v.get('B', float('nan')):.2f} ({v.get('B', 0) / g:.3f});  launched last per rank: "
          f"gloo {v.get('gloo last')}, A {v.get('A last')}, B {v.get('B last')}")
full = [v for v in rounds.values() if all(k in v for k in ("gloo", "A", "B"))]
for k in ("A", "B"):
    print(f"{k}/gloo comm_mean, median of {len(full)} rounds: "
          f"{statistics.median(v[k] / v['gloo'] for v in full):.3f} "
          f"(range {min(v[k] / v['gloo'] for v in full):.2f}-{max(v[k] / v['gloo'] for v in full):.2f})")
