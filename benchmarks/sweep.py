"""Benchmark: a CPU-bound sweep with 1 and with 2 local worker processes (issue 7: >= 1.7x on 2 cores).

The sweep is 8 MAP solves (erf, L = 3, XOR P = 60, N = 100, importance sampling) over g_w. Each
worker is pinned to one core, so the 1-worker run is the baseline measured in the same run; both
include spawning the workers and compiling. Prints the median wall time of `--repeats` sweeps per
worker count and their ratio. With --dask, also times a Dask LocalCluster of 2 workers.

Run: python benchmarks/sweep.py [--repeats 2] [--dask]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from critical_kernels.experiments import load_sweep, run_sweep
from critical_kernels.experiments.executors import executor_named

CONFIG = {
    "name": "bench",
    "data": {"task": "xor", "n_train": 60, "n_test": 50, "dim": 10},
    "network": {"depth": 3, "width": 100, "kappa": 0.1},
    "methods": {
        **{"perturbative": False, "map": True, "map_method": "importance"},
        "importance": {"n_samples": 8192},
    },
    "sweep": {"network.g_w": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75]},
}


def timed_sweep(executor: str, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="ck-bench-sweep-"))
    try:
        start = time.perf_counter()
        ds = run_sweep(load_sweep(CONFIG), out, executor=executor_named(executor, workers))
        seconds = time.perf_counter() - start
        assert (ds.status.values == "ok").all(), ds.error.values
        return seconds
    finally:
        shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dask", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{len(load_sweep(CONFIG).points)} points, {cores} cores available")
    times = {}
    cases = [("local", 1), ("local", 2)] + ([("dask", 2)] if args.dask else [])
    for executor, workers in cases:
        runs = [timed_sweep(executor, workers) for _ in range(args.repeats)]
        times[executor, workers] = float(np.median(runs))
        print(f"{executor:<6} workers={workers}: median {times[executor, workers]:6.1f} s  (runs {runs})")
    base = times["local", 1]
    for (executor, workers), seconds in times.items():
        if (executor, workers) != ("local", 1):
            print(f"speed-up {executor} x{workers} over local x1: {base / seconds:.2f}")


if __name__ == "__main__":
    main()
