"""Benchmark: prior kernel covariance Sigma(L)[A] (T6) and perturbative kernels (T13) at P = 1000, L = 4.

Prints median wall time (warm) and the process's peak resident memory. Targets (issue 3): < 30 s,
< 4 GB, and no P^4 object (a dense Sigma at P = 1000 would be 8 TB). Baseline in the same run:
one NNGP stack of the same network, the cost floor of any method on these kernels.

Run: python benchmarks/fluctuations.py [--P 1000] [--depth 4] [--samples 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
from timing import median_time

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = ck.datasets.digits_binary((0, 3), n_train=min(args.P, 300), seed=0)
    rng = np.random.default_rng(0)
    X = np.concatenate([data.X, rng.standard_normal((args.P - data.n_train, data.X.shape[1]))])
    Y = rng.choice([-1.0, 1.0], args.P)
    spec = ck.NetworkSpec(depth=args.depth, width=200, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    A = rng.standard_normal((args.P, args.P))
    A = A + A.T
    cov = ck.kernel_covariance(spec, X, key=0, n_samples=args.samples)
    cov(A)  # compile
    ck.perturbative_kernels(spec, X, Y, options=ck.MonteCarlo(args.samples))
    t_nngp = median_time(lambda: ck.nngp_kernels(spec, X), args.repeats)

    def covariance():
        return np.asarray(ck.kernel_covariance(spec, X, n_samples=args.samples)(A))

    t_cov = median_time(covariance, args.repeats)
    t_pert = median_time(
        lambda: ck.perturbative_kernels(spec, X, Y, options=ck.MonteCarlo(args.samples)), args.repeats
    )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"P = {args.P}, L = {args.depth}, erf, M = {args.samples} samples/layer; median of {args.repeats}")
    print(f"NNGP stack (baseline)     {t_nngp:8.3f} s")
    print(f"Sigma(L)[A] incl. setup   {t_cov:8.3f} s   ratio to NNGP {t_cov / t_nngp:6.1f}")
    print(f"perturbative kernels      {t_pert:8.3f} s   ratio to NNGP {t_pert / t_nngp:6.1f}")
    print(f"peak resident memory      {peak_gb:8.2f} GB")


if __name__ == "__main__":
    main()
