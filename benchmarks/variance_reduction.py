"""Benchmark: variance reduction of the common random numbers behind the first-order kernels (T5,
T13): plain Monte Carlo, antithetic pairs (z, -z) and randomised quasi-Monte Carlo (scrambled
Sobol points mapped to Gaussians with the inverse normal CDF), at the same number of samples M.

For each scheme: the spread over replicas (independent keys / scrambles) of the first-order CKA
adaptation of every hidden layer, the time per estimate, and the variance-per-second factor
against plain Monte Carlo, var_plain * t_plain / (var * t) (> 1: the scheme is worth it).
MNIST 0 vs 3, P = 30, N = 100, L = 2, erf, g_w = 1.5, g_b = 0.1, kappa = 0.1 (issue 14).

Run: python benchmarks/variance_reduction.py [--replicas 20] [--samples 4096]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

import critical_kernels as ck
from critical_kernels.likelihood import likelihood_gradient

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def normals(scheme: str, depth: int, M: int, P: int, seed: int) -> np.ndarray:
    """(depth, M, P) standard normals of one replica."""
    if scheme == "plain":
        return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (depth, M, P)))
    if scheme == "antithetic":
        half = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (depth, M // 2, P)))
        return np.concatenate([half, -half], axis=1)
    rng = np.random.default_rng(seed)
    return np.stack([ndtri(qmc.Sobol(d=P, scramble=True, seed=rng).random(M)) for _ in range(depth)])


def adaptation(cov, z, spec, data, base) -> np.ndarray:
    """First-order CKA adaptation of every layer with the given normals (T13)."""
    phi = spec.act.fn(jnp.einsum("lmp,lpq->lmq", jnp.asarray(z), cov.roots))
    cov = dataclasses.replace(cov, phi=phi)
    G = likelihood_gradient(np.asarray(cov.kernels[-1]), data.Y, spec.kappa).G
    kernels = np.asarray(cov.kernels) + np.asarray(jnp.stack(cov.push_forward(cov.pullback(G))))
    return ck.cka_layers(kernels, data.Y)[1:] - base[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--mnist", type=Path, default=MNIST)
    args = parser.parse_args()
    data = ck.datasets.mnist_binary((0, 3), path=args.mnist, n_train=30, n_test=0, seed=0)
    spec = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    cov = ck.kernel_covariance(spec, data.X, n_samples=16)
    base = ck.cka_layers(np.asarray(cov.kernels), data.Y)
    P = data.X.shape[0]
    print(f"first-order CKA adaptation, M = {args.samples}, {args.replicas} replicas, one BLAS thread")
    results = {}
    for scheme in ("plain", "antithetic", "sobol"):
        adaptation(cov, normals(scheme, 2, args.samples, P, 10_000), spec, data, base)  # compile
        values, seconds = [], []
        for r in range(args.replicas):
            start = time.perf_counter()
            values.append(adaptation(cov, normals(scheme, 2, args.samples, P, r), spec, data, base))
            seconds.append(time.perf_counter() - start)
        values = np.array(values)
        results[scheme] = (values.mean(0), values.std(0, ddof=1), float(np.median(seconds)))
    plain_sd, plain_t = results["plain"][1], results["plain"][2]
    for scheme, (mean, sd, t) in results.items():
        factor = plain_sd**2 * plain_t / (sd**2 * t)
        print(
            f"{scheme:<10} adaptation C1, C2 = {np.round(mean, 5)}, sd {np.round(sd, 6)} "
            f"({np.round(100 * sd / np.abs(mean), 2)} %), {t * 1e3:6.1f} ms per estimate, "
            f"variance-per-second factor {np.round(factor, 2)}"
        )


if __name__ == "__main__":
    main()
