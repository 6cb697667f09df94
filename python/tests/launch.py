"""Runs a script under torchrun, as a user would, with a deadline."""

import os
import subprocess
import sys

from conftest import free_port


def torchrun(script, nproc, *args, timeout=600, env=None, finished=None):
    """`finished`: for a reference run on another backend only, a line that, once printed,
    means the run's results are all out; a crash after it is that backend's teardown, not a
    result (gloo in torch 2.15 aborts now and then while its process group is destroyed,
    "terminate called without an active exception", after the last step and the barrier that
    follows it: seen twice in CI rehearsals). Never passed for an oxccl run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", script, *map(str, args)]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    try:
        r = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError(f"{cmd} timed out:\n{ex.stdout}") from None
    aborted_after_results = (finished is not None and r.returncode != 0
                             and finished in r.stdout and "terminate called" in r.stdout)
    if aborted_after_results:
        print(f"note: {' '.join(cmd)} aborted in its teardown after its results (exit "
              f"{r.returncode}); the results are used")
    assert r.returncode == 0 or aborted_after_results, \
        f"{' '.join(cmd)} failed:\n{r.stdout[-6000:]}"
    return r.stdout
