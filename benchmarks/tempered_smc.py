"""Benchmark: tempered SMC from the saddle point against long HMC where plain reweighting fails (issue 13).

Unstandardised XOR inputs (input kernel scale 0.24), P = 30, N = 100, L = 2, erf, g_w = 1.5, g_b = 0.1,
kappa = 0.1. The saddle point (MAP, adaptive importance sampling) is solved once; then plain reweighting
of 2048 of its networks (T17), tempered SMC from its measure (8 runs x 128 particles), and weight-space
HMC (4 chains x --hmc-steps after 1000 warm-up steps) as ground truth. Printed: CKA of every hidden layer
with its SE, the miss of each estimate against HMC as a fraction of the adaptation CKA - CKA_NNGP and
in combined SE, SMC's temperature ladders and final ESS, and wall times. Time to equal SE: t * SE^2
(SE^2 falls as 1 / time), SMC over HMC, per layer.

Run: python benchmarks/tempered_smc.py [--hmc-steps 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import critical_kernels as ck
from critical_kernels.metrics import cka_layers, cka_layers_se

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hmc-steps", type=int, default=10000)
    args = parser.parse_args()
    data = ck.datasets.xor(n_train=30, n_test=0, seed=0, standardise=False)
    spec = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    nngp = cka_layers(ck.nngp_kernels(spec, data.X), data.Y)[1:]

    def timed(f):
        start = time.perf_counter()
        out = f()
        return out, time.perf_counter() - start

    always = ck.TemperedSMC(always=True)  # tempered SMC without trying plain reweighting first
    saddle, t_saddle = timed(lambda: ck.solve_map(spec, data.X, data.Y, key=0))
    plain, t_plain = timed(
        lambda: ck.reweighted_kernels(
            spec, data.X, data.Y, saddle=saddle, options=ck.Reweighting(2048, tempering=None), throw=False
        )
    )
    smc, t_smc = timed(
        lambda: ck.reweighted_kernels(
            spec, data.X, data.Y, saddle=saddle, options=ck.Reweighting(tempering=always), key=0
        )
    )
    chains = ck.Chains(chains=4, warmup=1000, n_samples=args.hmc_steps, thin=10)
    hmc, t_hmc = timed(
        lambda: ck.sample_posterior(spec, data.X, data.Y, sampler=ck.HMC(), chains=chains, key=5)
    )
    print(f"saddle point (MAP): {t_saddle:.0f} s, {saddle.method}")
    c_hmc = cka_layers(hmc.kernels, data.Y)[1:]
    se_hmc = cka_layers_se(hmc.estimates.kernels, data.Y)[1:]
    print(
        f"HMC (weights), 4 chains x {args.hmc_steps}: {t_hmc:.0f} s, "
        f"R-hat {np.round(hmc.info.rhat_cka[1:], 4)}, "
        f"CKA {np.round(c_hmc, 5)} +- {np.round(se_hmc, 5)}, adaptation {np.round(c_hmc - nngp, 5)}"
    )
    for name, est, seconds in (("plain reweighting", plain, t_plain), ("tempered SMC", smc, t_smc)):
        c = cka_layers(est.kernels, data.Y)[1:]
        se = cka_layers_se(est.estimates.kernels, data.Y, kind="jackknife")[1:]
        miss = (c - c_hmc) / (c_hmc - nngp)
        z = (c - c_hmc) / np.hypot(se, se_hmc)
        print(
            f"{name}: {seconds:.0f} s, ESS {est.info.ess:.3g} of {est.info.n_samples} (Var R "
            f"{est.info.var_log_weight:.3g}), CKA {np.round(c, 5)} +- {np.round(se, 5)}; "
            f"miss / adaptation {np.round(miss, 3)}, z {np.round(z, 2)}"
        )
    for i, run in enumerate(smc.info.smc_runs):
        print(
            f"  run {i}: temperatures {np.round(run.temperatures, 3).tolist()}, acceptance "
            f"{np.round(run.acceptance, 2).tolist()}, final ESS {run.final_ess:.0f} of {run.n_particles}"
        )
    se_smc = cka_layers_se(smc.estimates.kernels, data.Y, kind="jackknife")[1:]
    ratio = (t_smc * se_smc**2) / (t_hmc * se_hmc**2)
    print(f"time to equal CKA SE, SMC / HMC (t * SE^2), per layer: {np.round(ratio, 2)}")


if __name__ == "__main__":
    main()
