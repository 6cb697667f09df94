"""Summarises idle_ab.sh output: per rank count and size, the median time of each variant and
the median (range) over the rounds of default/yield200. Usage: idle_ab_sum.py FILE.jsonl"""
import json,sys,statistics as st,collections
rows=[json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
d=collections.defaultdict(dict)
for r in rows: d[(r['ranks'],r['bytes'])].setdefault(r['round'],{})[r['variant']]=r['time_us']
print("ranks bytes  default_us yield200_us  default/yield200 (per-round range)")
for (n,b),rr in sorted(d.items()):
    ok=[v for v in rr.values() if len(v)==2]
    if not ok: continue
    ra=[v['default']/v['yield200'] for v in ok]
    print(f"{n:5d} {b:8d} {st.median(v['default'] for v in ok):10.1f} {st.median(v['yield200'] for v in ok):10.1f}   {st.median(ra):.2f} ({min(ra):.2f}-{max(ra):.2f}) n={len(ok)}")
