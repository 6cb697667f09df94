#!/usr/bin/env bash
# rounds: probe, MPI, then each variant "label=ENV=V[,ENV=V]" (label=- : defaults); table of MPI/variant per size
cd /work/main
OUT=$1; N=$2; shift 2
MIN=${MIN:-64K}; MAX=${MAX:-1M}; NP=${NP:-4}; TEST=${TEST:-all-to-all-v}
mkdir -p $OUT
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo"
for r in $(seq $N); do
  p0=$(/tmp/xcore_probe 1|tail -1|awk '{print $2}')
  nice -n -10 $MPIRUN -np $NP /tmp/a2a/mpi_alltoallv -b $(numfmt --from=iec $MIN) -e $(numfmt --from=iec $MAX) > $OUT/mpi-$r.txt
  line="r$r p=$p0"
  for v in "$@"; do
    lab=${v%%=*}; envs=${v#*=}; bin=${v##*@}; [ "$bin" = "$v" ] && bin=target/release/oxccl-bench; envs=${envs%@*}
    [ "$envs" = "-" ] && envs=""
    echo "$lab $(/tmp/xcore_probe 1|tail -1|awk '{print $2}')" >> $OUT/probes-$r
    env ${envs//,/ } nice -n -10 $MPIRUN -np $NP $bin $TEST -b $MIN -e $MAX -a 3 --json > $OUT/$lab-$r.jsonl
  done
  p1=$(/tmp/xcore_probe 1|tail -1|awk '{print $2}')
  python3 - $OUT $r "$p0" "$p1" "$@" <<'PY'
import json,sys
out,r,p0,p1=sys.argv[1:5]; labs=[v.split("=")[0] for v in sys.argv[5:]]
m={}
for l in open(f"{out}/mpi-{r}.txt"):
    p=l.split()
    if len(p)>=7 and p[0].isdigit(): m[int(p[0])]=float(p[3])
pr=dict(l.split() for l in open(f"{out}/probes-{r}"))
s=f"r{r} probe {p0}->{p1}:"
for lab in labs:
    o={}
    for l in open(f"{out}/{lab}-{r}.jsonl"):
        if l.startswith("{"):
            j=json.loads(l); o[int(j["bytes"])]=float(j["time_us"])
    s+=f"\n  {lab:8s} {float(pr[lab]):5.1f} "+" ".join(f"{m[b]/o[b]:5.2f}" for b in sorted(o))
print(s, flush=True)
PY
done
