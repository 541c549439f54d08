"""Benchmark: cost of the reweighted estimator (T17) against HMC-sampled networks at equal error.

MNIST 0 vs 3, P = 30, N = 100, L = 2, erf, g_w = 1.5, g_b = 0.1, kappa = 0.1 (issue 12), on one core.
Both estimate the posterior mean kernels; the figure of merit is the wall time each needs for the
CKA standard error of the HMC reference (the study settings: 4 chains x 4000 steps after 500
warm-up steps, a draw kept every 10). A Monte Carlo SE falls as 1/sqrt(work), so from one run of each

  time to SE s  =  fixed cost + variable cost x (SE measured / s)^2,

fixed cost = warm-up (HMC) or saddle point (reweighted), variable = sampling / drawing networks,
taking the worst hidden layer. Printed: both times, their ratio (target <= 1/3), ESS and SEs.

Run: python benchmarks/reweighted_cost.py [--steps 4000] [--networks 4096] [--n-test 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import critical_kernels as ck
from critical_kernels.metrics import cka_layers_se
from critical_kernels.numerics import limit_blas_threads

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def time_to(se_target: np.ndarray, se: np.ndarray, fixed: float, variable: float) -> float:
    """Wall time to reach se_target in every hidden layer, SE proportional to 1/sqrt(variable time)."""
    return fixed + variable * float(np.max((se[1:] / se_target[1:]) ** 2))


@limit_blas_threads
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="HMC steps per chain after warm-up")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--networks", type=int, default=4096, help="networks drawn by the reweighted estimator"
    )
    parser.add_argument("--n-test", type=int, default=0)
    parser.add_argument("--mnist", type=Path, default=MNIST)
    args = parser.parse_args()
    data = ck.datasets.mnist_binary((0, 3), path=args.mnist, n_train=30, n_test=args.n_test, seed=0)
    spec = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    nngp = ck.cka_layers(ck.nngp_kernels(spec, data.X, data.X_test), data.Y)

    chains = ck.Chains(chains=4, warmup=args.warmup, n_samples=args.steps, thin=10)
    start = time.perf_counter()
    hmc = ck.sample_posterior(spec, data.X, data.Y, data.X_test, sampler=ck.HMC(), chains=chains, throw=False)
    t_hmc = time.perf_counter() - start
    se_hmc = cka_layers_se(hmc.estimates.kernels, data.Y)
    warm = hmc.info.timings["warmup"]

    start = time.perf_counter()
    no_se = ck.Fallback(ck.ImportanceSampling(replicas=0), ck.SecondCumulant(replicas=0))  # no replicas
    saddle = ck.solve_map(spec, data.X, data.Y, data.X_test, tilted=no_se)
    t_saddle = time.perf_counter() - start
    start = time.perf_counter()
    options = ck.Reweighting(n_samples=args.networks)
    rw = ck.reweighted_kernels(spec, data.X, data.Y, data.X_test, options=options, saddle=saddle)
    t_draw = time.perf_counter() - start
    se_rw = cka_layers_se(rw.estimates.kernels, data.Y, kind="jackknife")

    t_rw = time_to(se_hmc, se_rw, t_saddle, t_draw)
    print(f"MNIST 0 vs 3, P = 30, N = 100, L = 2, erf, P_test = {args.n_test}, one BLAS thread")
    for name, est, se in (("HMC", hmc, se_hmc), ("reweighted", rw, se_rw)):
        adaptation = ck.cka_layers(est.kernels, data.Y) - nngp
        cells = ", ".join(f"{a:.4f} ± {s:.4f}" for a, s in zip(adaptation[1:], se[1:], strict=True))
        print(f"  {name:<10} CKA adaptation per layer: {cells}  ({est.result.name})")
    print(f"  HMC: {t_hmc:.1f} s ({warm:.1f} s warm-up), R-hat {hmc.info.rhat_cka[1:].max():.4f}")
    print(
        f"  reweighted: saddle {t_saddle:.1f} s + {t_draw:.1f} s for {rw.info.n_samples} networks, "
        f"ESS {rw.info.ess:.0f}, Var R {rw.info.var_log_weight:.2f}"
    )
    print(
        f"  reweighted to the HMC SE: {t_rw:.1f} s; "
        f"ratio reweighted / HMC = {t_rw / t_hmc:.3f} (target <= 0.333)"
    )


if __name__ == "__main__":
    main()
