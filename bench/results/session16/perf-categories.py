# perf-categories.py PERF.DATA... - the share of a `perf record -a` profile by kind of work
# (the kernel copy, the remote page walk and pinning of process_vm_readv, scheduling, user
# copies...), to compare two programs doing the same copies (session 16, perf-a2av4-2m.txt).
import subprocess, sys, re, collections
cats = [("copy", r"_copy_to_iter|copy_page_to_iter|copy_user"),
        ("pin", r"follow_page|gup|get_user_pages|unpin|pte_offset|vm_normal_page|mod_node_page_state|try_grab|folio|vma_pgtable|process_vm|follow_pmd|pud|p4d"),
        ("sched", r"sched|schedule|task_switch|yield|pick_next|update_curr|enqueue|dequeue|rseq|switch_mm|__switch_to|context_switch|put_prev|set_next"),
        ("futex", r"futex|wake_up|try_to_wake"),
        ("memmove", r"memmove|memcpy"),
        ("lock", r"spin_lock|spin_unlock|queued_spin"),
        ("syscall", r"syscall|entry_SYSCALL|exit_to_user|syscall_exit"),
        ("idle", r"safe_halt|cpuidle|do_idle|swapper")]
for f in sys.argv[1:]:
    out = subprocess.run(["perf","report","-i",f,"--no-children","--sort","comm,dso,sym","--stdio"],capture_output=True,text=True).stdout
    tot = collections.Counter()
    for l in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(\S+)", l)
        if not m: continue
        pct, comm, dso, k, sym = float(m[1]), m[2], m[3], m[4], m[5]
        c = next((n for n, r in cats if re.search(r, sym)), "user" if k == "." else "other-k")
        tot[c] += pct
    print(f, " ".join(f"{k}={v:.1f}" for k, v in sorted(tot.items())))
