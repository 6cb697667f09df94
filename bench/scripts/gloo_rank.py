#!/usr/bin/env python3
"""One rank of Gloo's all-reduce sweep on the emulated cluster (`oxccl-bench emulate --gloo`).

The method, checks and table are shared/peers/gloo_allreduce.py's (imported from $PEERS,
default ../shared/peers): that script starts its ranks itself on loopback; here each rank is
started by `oxccl-bench emulate` in its host's network namespace, with RANK, WORLD_SIZE,
MASTER_ADDR (host 0), MASTER_PORT and GLOO_SOCKET_IFNAME (eth0) in its environment, which the
rendezvous uses instead of gloo_allreduce.py's loopback ones.

  gloo_rank.py -b 65536 -e 67108864
"""
import argparse
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEERS", os.path.join(here, "../../../shared/peers")))
sys.path.insert(0, "/work/shared/peers")
import gloo_allreduce as g  # noqa: E402

cluster_env = {k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME")}
init = g.dist.init_process_group


def init_on_the_cluster(*args, **kwargs):
    # gloo_allreduce.worker points the rendezvous at loopback just before this call.
    os.environ.update(cluster_env)
    return init(*args, **kwargs)


g.dist.init_process_group = init_on_the_cluster

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-b", type=int, default=64 << 10)
    ap.add_argument("-e", type=int, default=64 << 20)
    ap.add_argument("-T", type=float, default=0.25)
    ap.add_argument("-n", type=int, default=0)
    ap.add_argument("-w", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--op", default="allreduce")
    a = ap.parse_args()
    g.worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(cluster_env["MASTER_PORT"]), a)
