"""Runs a script under torchrun, as a user would, with a deadline."""

import os
import subprocess
import sys

from conftest import free_port


def torchrun(script, nproc, *args, timeout=600, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", script, *map(str, args)]
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    try:
        r = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError(f"{cmd} timed out:\n{ex.stdout}") from None
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-6000:]}"
    return r.stdout
