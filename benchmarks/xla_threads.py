"""Benchmark: the price of one XLA CPU thread per process (PJRT_NPROC=1, set by
`critical_kernels.use_one_xla_thread()` with jaxlib < 0.11.2 against the batched-LAPACK deadlock;
runtime.py, README "A deadlock in jaxlib 0.10").

The same measurements run in two fresh processes, one with PJRT_NPROC=1 (the package's setting) and
one with PJRT_NPROC = the cores this process may use (XLA's own default, the baseline), on MNIST 0 vs 3 at
alpha = P/N = 0.3, L = 2, erf: the median of 9 compiled gradients of the log posterior in weight and
in pre-activation space (T19) at each P, and a short pre-activation HMC run at the first P (4 chains,
50 warm-up + 200 steps; the second of two calls, so compiled). Prints each time and the ratio
one thread / default (> 1: slower with one thread).

Run: python benchmarks/xla_threads.py [--P 100 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(P_values: list[int]) -> dict:
    """The timings in this process (its PJRT_NPROC set by the parent in the environment, which
    `use_one_xla_thread` keeps; the import itself no longer sets it)."""
    import jax.numpy as jnp

    import critical_kernels as ck
    from critical_kernels.estimators import Network, Preactivation

    sys.path.insert(0, str(HERE))
    from ground_truth import MNIST, gradient_seconds

    out = {}
    for i, P in enumerate(P_values):
        data = ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=P, n_test=0, seed=0)
        spec = ck.NetworkSpec(depth=2, width=round(P / 0.3), activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
        X, Y = jnp.asarray(data.X), jnp.asarray(data.Y)
        out[f"P={P} weight-space gradient [ms]"] = 1e3 * gradient_seconds(Network(spec, X.shape[1]), X, Y, 9)
        out[f"P={P} pre-activation gradient [ms]"] = 1e3 * gradient_seconds(
            Preactivation(spec, X.shape[1], P), X, Y, 9
        )
        if i == 0:
            chains = ck.Chains(chains=4, warmup=50, n_samples=200, thin=10)
            for key in range(2):
                start = time.perf_counter()
                ck.sample_posterior(
                    spec, data.X, data.Y, sampler=ck.HMC(4, space="preactivation"), chains=chains,
                    key=key, throw=False,
                )  # fmt: skip
            out[f"P={P} pre-activation HMC run [s]"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.P)))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    results = {}
    for threads in (1, cores):
        env = {**os.environ, "PJRT_NPROC": str(threads)}
        cmd = [sys.executable, __file__, "--child", "--P", *map(str, args.P)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the PJRT_NPROC={threads} run failed:\n{proc.stderr}")
        results[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"XLA CPU threads: 1 (the package's setting) against {cores} (XLA's default, baseline)")
    for name, one in results[1].items():
        default = results[cores][name]
        print(f"  {name:38s} {one:9.1f} against {default:9.1f}   ratio {one / default:.2f}")


if __name__ == "__main__":
    main()
