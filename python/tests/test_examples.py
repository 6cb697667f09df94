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

    def run(step, comm, comm_mean, xfer):
        return {"step_ms": step, "comm_ms": comm, "comm_mean_ms": comm_mean, "xfer_ms": xfer,
                "compute_ms": step - comm}

    runs = {"model": "cnn", "repeats": 2,
            "gloo": [run(100.0, 20.0, 30.0, 8.0), run(110.0, 40.0, 50.0, 10.0)],
            "oxccl": [run(90.0, 10.0, 12.0, 4.0), run(99.0, 10.0, 10.0, 2.0)]}
    table = ddp_table(4, runs)
    # Medians of each backend's runs, and the median of the runs' oxccl/gloo ratios.
    assert "4 ranks, median of 2 interleaved runs" in table, table
    assert "    gloo    105.00     30.00     40.00      9.00      75.00" in table, table
    assert "   oxccl     94.50     10.00     11.00      3.00      84.50" in table, table
    assert "step 0.900, comm 0.375, comm_mean 0.300, xfer 0.350" in table, table
