"""The DDP example and the benchmark run, as the README shows them (small sizes)."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from launch import torchrun  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "train_ddp.py")


def losses(out):
    return [float(m.group(1)) for m in re.finditer(r"^step +\d+ +loss ([0-9.]+)", out, re.M)]


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_train_ddp_matches_gloo(model):
    args = ["--model", model, "--steps", "3", "--batch", "4", "--accum", "2"]
    ox = losses(torchrun(EXAMPLE, 2, "--backend", "oxccl", *args))
    gloo = losses(torchrun(EXAMPLE, 2, "--backend", "gloo", *args,
                           finished=f"gloo {model} 2 ranks: median"))
    assert len(ox) == len(gloo) == 3
    for a, b in zip(ox, gloo):
        assert abs(a - b) <= 1e-5 * abs(b), (ox, gloo)


def test_bench_runs():
    r = subprocess.run(
        [sys.executable, "-m", "oxccl.bench", "--nproc", "2", "--no-ddp", "--max-bytes", "4K",
         "--repeats", "1", "--samples", "1", "--target", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout
    assert "busbw" in r.stdout and "4 KiB" in r.stdout, r.stdout


def test_ddp_table_shows_each_backend_and_the_ratios():
    from oxccl.bench import ddp_table

    def run(step, comm, skew, wait, fwdbwd):
        return {"step_ms": step, "comm_ms": comm, "skew_ms": skew, "wait_ms": wait,
                "fwdbwd_ms": fwdbwd, "compute_ms": step - comm}

    runs = {"model": "cnn", "repeats": 2,
            "gloo": [run(100.0, 8.0, 12.0, 30.0, 80.0), run(110.0, 10.0, 30.0, 50.0, 90.0)],
            "oxccl": [run(90.0, 4.0, 6.0, 12.0, 80.0), run(99.0, 2.0, 8.0, 10.0, 95.0)]}
    table = ddp_table(4, runs)
    # Medians of each backend's runs, and the median of the runs' oxccl/gloo ratios.
    assert "4 ranks, median of 2 interleaved runs" in table, table
    assert "    gloo     105.00       9.00      21.00      40.00      85.00      96.00" in table, table
    assert "   oxccl      94.50       3.00       7.00      11.00      87.50      91.50" in table, table
    assert "step 0.900, comm 0.350, wait 0.300, fwdbwd 1.028" in table, table


def test_ddp_step_times_leave_out_the_slowest_ranks_backward():
    """comm starts at the slowest rank's last launch; the wait for it is skew, not comm."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("train_ddp", EXAMPLE)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)

    def row(start, buckets):
        r = torch.zeros(2 * ex.MAX_BUCKETS + 2, dtype=torch.float64)
        r[0], r[1] = start, len(buckets)
        r[2: 2 + 2 * len(buckets)] = torch.tensor(buckets, dtype=torch.float64).flatten()
        return r

    # Two ranks, two buckets each, (launch, completion) in seconds on one clock; rank 1's
    # backward ends last, at 0.9.
    t = ex.step_times([row(0.0, [(0.5, 0.9), (0.8, 1.0)]), row(0.01, [(0.6, 0.95), (0.9, 1.02)])])
    want = {"comm": (0.1 + 0.12) / 2, "skew": (0.1 + 0.0) / 2,
            "wait": (0.4 + 0.2 + 0.35 + 0.12) / 2, "fwdbwd": (0.8 + 0.89) / 2}
    assert t.keys() == want.keys()
    for k, v in want.items():
        assert abs(t[k] - v) < 1e-9, (k, t)
    assert ex.step_times([row(0.0, []), row(0.0, [])]) == dict.fromkeys(want, 0.0)
