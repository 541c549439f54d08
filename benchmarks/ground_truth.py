"""Benchmark: ground truth at large P (issue 13). Pre-activation HMC (T19) on MNIST 0 vs 3 at
alpha = P/N = 0.3, L = 2, erf, g_w = 1.5, g_b = 0.1, kappa = 0.1, no test inputs.

For each P: wall time of warm-up and sampling, R-hat and ESS of the CKA, and its SE as a fraction of the
adaptation CKA - CKA_NNGP per hidden layer (targets: SE <= 5 % of the adaptation; P = 100 within 20
minutes, P = 300 within 2 hours on 2 cores). Baseline measured in the same run: the median cost of one
gradient of the log posterior in weight space (d N + N^2 + N parameters) over that in pre-activation
space (2 P N parameters), jit-compiled, at the same P and N.

Run: python benchmarks/ground_truth.py [--P 100 300] [--samples 2000 1500] [--warmup 300] [--key 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before the imports below start JAX's backend (runtime.py)

from critical_kernels.estimators import Network, Preactivation  # noqa: E402
from critical_kernels.metrics import cka_layers, cka_layers_se  # noqa: E402

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def gradient_seconds(model, X, Y, repeats=5) -> float:
    """Median wall time of one compiled gradient of the log posterior."""
    grad = jax.jit(jax.grad(model.log_density))  # X, Y as arguments: nothing constant-folded
    u = jax.random.normal(jax.random.PRNGKey(0), (model.dim,))
    grad(u, X, Y).block_until_ready()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        grad(u, X, Y).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--samples", type=int, nargs="+", default=[2000, 1500], help="steps per chain, per P")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--key", type=int, default=0, help="random key of the chains")
    args = parser.parse_args()
    for P, samples in zip(args.P, args.samples, strict=True):
        N = round(P / 0.3)
        data = ck.datasets.mnist_binary((0, 3), path=args.mnist, n_train=P, n_test=0, seed=0)
        spec = ck.NetworkSpec(depth=2, width=N, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
        X, Y = jnp.asarray(data.X), jnp.asarray(data.Y)
        t_w = gradient_seconds(Network(spec, X.shape[1]), X, Y)
        t_p = gradient_seconds(Preactivation(spec, X.shape[1], P), X, Y)
        chains = ck.Chains(chains=args.chains, warmup=args.warmup, n_samples=samples, thin=10)
        start = time.perf_counter()
        est = ck.sample_posterior(
            spec,
            data.X,
            data.Y,
            sampler=ck.HMC(4, space="preactivation"),
            chains=chains,
            key=args.key,
            throw=False,
        )
        total = time.perf_counter() - start
        info = est.info
        cka = cka_layers(est.kernels, data.Y)[1:]
        se = cka_layers_se(est.estimates.kernels, data.Y)[1:]
        adaptation = cka - cka_layers(ck.nngp_kernels(spec, data.X), data.Y)[1:]
        print(
            f"P = {P}, N = {N}: {Preactivation(spec, X.shape[1], P).dim} pre-activation parameters "
            f"({Network(spec, X.shape[1]).dim} weights); one gradient {t_p * 1e3:.1f} ms against "
            f"{t_w * 1e3:.1f} ms in weight space (ratio {t_w / t_p:.2f})"
        )
        print(
            f"  {args.chains} chains x {samples} steps after {args.warmup} warm-up, HMC 4 leapfrog: "
            f"{total / 60:.1f} min in all (warm-up {info.timings['warmup'] / 60:.1f} min), "
            f"acceptance {info.acceptance.mean():.2f}, R-hat(CKA) {np.round(info.rhat_cka[1:], 3)}, "
            f"ESS(CKA) {np.round(info.ess_cka[1:], 0)}"
        )
        print(
            f"  CKA {np.round(cka, 4)} +- {np.round(se, 4)}, adaptation {np.round(adaptation, 4)}, "
            f"SE / adaptation {np.round(se / adaptation, 3)} (target <= 0.05)"
        )


if __name__ == "__main__":
    main()
