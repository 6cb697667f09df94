"""Issue 15 summary over several runs of run.sh: per rank count, each run's DDP comm (median of its
rounds) and per size the busbw oxccl/gloo of each run (median of its rounds) and their median.

    python3 bench/results/issue15/summary.py s9-quiet-run1 s9-quiet-run2 s9-quiet-run3
"""
import json, statistics, sys
tags = sys.argv[1:]
for n in ['2', '4']:
    print(f"== {n} ranks: busbw oxccl/gloo per size, each run's median over its rounds; then the median of the runs")
    sizes = None; table = {}
    for t in tags:
        d = json.load(open(f"bench/results/issue15/{t}.json"))[n]
        sw = d['sweep']
        for s, v in sw.items():
            table.setdefault(int(s), []).append(statistics.median(v['round_ratios']))
        dd = d['ddp']
        g = statistics.median(r['comm_ms'] for r in dd['gloo']); o = statistics.median(r['comm_ms'] for r in dd['oxccl'])
        print(f"  {t}: ddp comm gloo {g:.2f} ms oxccl {o:.2f} ms")
    for s in sorted(table):
        v = table[s]
        print(f"  {s:>10} " + " ".join(f"{x:6.2f}" for x in v) + f" | {statistics.median(v):6.2f}")
