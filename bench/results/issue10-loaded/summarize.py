import json,glob,statistics,collections,sys,os
D=os.path.dirname(os.path.abspath(__file__))
def load(f):
    try: return [json.loads(l) for l in open(f) if l.startswith('{')]
    except FileNotFoundError: return []
out=[]
for kind,key,better in (("ar2","time_us","lower"),("ar4","time_us","lower")):
    ratios=collections.defaultdict(list); vals=collections.defaultdict(lambda: collections.defaultdict(list))
    for rep in range(1,6):
        b={r['bytes']:r for r in load(f'{D}/{kind}-base-{rep}.json')}
        n={r['bytes']:r for r in load(f'{D}/{kind}-new-{rep}.json')}
        for s in b:
            if s in n:
                ratios[s].append(n[s][key]/b[s][key]); vals[s]['base'].append(b[s][key]); vals[s]['new'].append(n[s][key])
    out.append(f"\n{kind} (all-reduce, {kind[-1]} ranks, float sum): time new/base per rep pair, median ({better} is better)")
    out.append(f"{'bytes':>10} {'base us (med)':>14} {'new us (med)':>13} {'median ratio':>13} {'reps':>5}")
    for s in sorted(ratios):
        out.append(f"{s:>10} {statistics.median(vals[s]['base']):>14.1f} {statistics.median(vals[s]['new']):>13.1f} {statistics.median(ratios[s]):>13.2f} {len(ratios[s]):>5}")
for test,key in (("latency","latency_us"),("bandwidth","bandwidth_gbps")):
    for other in ("new","new4m"):
        ratios=collections.defaultdict(list); vb=collections.defaultdict(list); vn=collections.defaultdict(list)
        for rep in range(1,6):
            b={r['bytes']:r for r in load(f'{D}/tr-base-{rep}.json') if r.get('test')==test}
            n={r['bytes']:r for r in load(f'{D}/tr-{other}-{rep}.json') if r.get('test')==test}
            for s in b:
                if s in n: ratios[s].append(n[s][key]/b[s][key]); vb[s].append(b[s][key]); vn[s].append(n[s][key])
        out.append(f"\nshm {test}, {other} / base (median ratio; {'lower' if test=='latency' else 'higher'} is better)")
        out.append(f"{'bytes':>10} {'base (med)':>11} {other+' (med)':>11} {'ratio':>7} {'reps':>5}")
        for s in sorted(ratios):
            out.append(f"{s:>10} {statistics.median(vb[s]):>11.3f} {statistics.median(vn[s]):>11.3f} {statistics.median(ratios[s]):>7.2f} {len(ratios[s]):>5}")
print("\n".join(out))
