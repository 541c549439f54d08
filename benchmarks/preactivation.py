"""Benchmark: pre-activation (T19) against weight-space posterior sampling with HMC (issue 13).

MNIST 0 vs 3, P = 30 training inputs (plus --n-test test inputs), N = 100, L = 2, erf, g_w = 1.5,
g_b = 0.1, kappa = 0.1, the same chain schedule in both spaces. For each space and each number of
leapfrog steps: the number of parameters, acceptance, step size, trajectory length, R-hat of the CKA,
the CKA of every hidden layer with its batch-means SE, and the sampling wall time t (compilation
excluded: the first batch, which includes it, is replaced by the median batch). SE^2 falls as
1 / (sampling time), so t * SE^2 is the invariant cost of an accuracy; the ratio of the best
t * SE^2 of each space, weights / preactivation, is the speed-up at equal CKA SE (target >= 3), per
layer. Several leapfrog counts because a trajectory of length ~pi in whitened units maps prior-dominated
coordinates u -> -u, which leaves the kernels (quadratic in u) unchanged: the best count differs between
the spaces, whose adapted step sizes differ. Both sample the same posterior: the CKA difference of the
best runs in combined SE is printed.

Run: python benchmarks/preactivation.py [--chains 4] [--samples 1000] [--warmup 300] [--leapfrog 4 8 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before the imports below start JAX's backend (runtime.py)

from critical_kernels.estimators import Network, Preactivation  # noqa: E402
from critical_kernels.metrics import cka_layers, cka_layers_se  # noqa: E402

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--thin", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=0)
    parser.add_argument("--leapfrog", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    data = ck.datasets.mnist_binary((0, 3), path=MNIST, n_train=30, n_test=args.n_test, seed=0)
    spec = ck.NetworkSpec(depth=2, width=100, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    chains = ck.Chains(chains=args.chains, warmup=args.warmup, n_samples=args.samples, thin=args.thin)
    X_test = data.X_test if args.n_test else None
    rows, d = 30 + args.n_test, data.X.shape[1]
    print(
        f"HMC, MNIST 0 vs 3, P = 30 (+{args.n_test} test), N = 100, L = 2, erf; "
        f"{args.chains} chains x {args.samples} steps after {args.warmup} warm-up, thin {args.thin}"
    )
    best = {}
    for space in ("weights", "preactivation"):
        model = Network(spec, d) if space == "weights" else Preactivation(spec, d, rows)
        layers = "" if space == "weights" else f" (pre-activation layers {model.preactivation_layers})"
        print(f"{space}: {model.dim} parameters{layers}")
        for n_leapfrog in args.leapfrog:
            est = ck.sample_posterior(
                spec,
                data.X,
                data.Y,
                X_test,
                sampler=ck.HMC(n_leapfrog, space=space),
                chains=chains,
                key=0,
                throw=False,
            )
            info = est.info
            batches = info.timings["batches"]
            seconds = float(np.median(batches)) + sum(batches[1:])  # the first batch includes compilation
            cka, se = cka_layers(est.kernels, data.Y)[1:], cka_layers_se(est.estimates.kernels, data.Y)[1:]
            cost = seconds * se**2
            if space not in best or np.sum(cost) < np.sum(best[space][0]):
                best[space] = (cost, cka, se)
            step, rate, acc = info.step_size.mean(), info.grad_evals / seconds, info.acceptance.mean()
            print(
                f"  {n_leapfrog:3d} leapfrog: sampling {seconds:7.1f} s, {rate:7.0f} grad evals/s; "
                f"acceptance {acc:.2f}, step {step:.3f}, trajectory {n_leapfrog * step:.2f}, "
                f"R-hat(CKA) {np.round(info.rhat_cka[1:], 3)}; CKA {np.round(cka, 4)} +- {np.round(se, 4)}; "
                f"t * SE^2 {np.array2string(cost, formatter={'float_kind': '{:.2e}'.format})}"
            )
    (cost_w, c_w, se_w), (cost_p, c_p, se_p) = best["weights"], best["preactivation"]
    speedup = np.array2string(cost_w / cost_p, precision=2)
    print(f"speed-up at equal CKA SE, best t * SE^2 weights / preactivation, per layer: {speedup}")
    z = np.array2string((c_p - c_w) / np.sqrt(se_p**2 + se_w**2), precision=2)
    print(f"CKA difference of the best runs / combined SE per layer: {z}")


if __name__ == "__main__":
    main()
