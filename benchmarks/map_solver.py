"""Benchmark: MAP forward-backward solver (T8-T12) with width annealing.

Cases (issue 4 targets): erf, L = 3, P = N = 200 in < 60 s; linear, L = 3, P = 2000 in < 10 s.
Prints iterations, residual, method and wall time (one solve each, compiled first on a smaller
problem), and as a baseline measured in the same run the first-order (perturbative) kernels of
the same network, which cost one sweep.

Run: python benchmarks/map_solver.py [--skip-linear]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)


def case(name: str, spec: ck.NetworkSpec, X, Y, **kwargs) -> None:
    start = time.perf_counter()
    res = ck.solve_map(spec, X, Y, **kwargs)
    t_map = time.perf_counter() - start
    start = time.perf_counter()
    ck.perturbative_kernels(spec, X, Y)
    t_pert = time.perf_counter() - start
    print(
        f"{name:<28} {res.method:<11} ok={res.ok!s:<5} sweeps={res.info.n_iter:<4} "
        f"residual={res.info.residual:.1e}  time {t_map:6.2f} s  "
        f"(first order {t_pert:5.2f} s, ratio {t_map / t_pert:5.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-linear", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    digits = ck.datasets.digits_binary((0, 3), n_train=200, seed=0)
    warm = ck.NetworkSpec(depth=3, width=200, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    ck.solve_map(warm, digits.X[:20], digits.Y[:20])  # compile
    spec = ck.NetworkSpec(depth=3, width=200, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    case("erf L=3 P=N=200 (digits)", spec, digits.X, digits.Y)  # 4096 samples per layer
    if not args.skip_linear:
        X = rng.standard_normal((2000, 50))
        Y = np.sign(X[:, :1] + 0.3 * rng.standard_normal((2000, 1)))
        lin = ck.NetworkSpec(depth=3, width=2000, activation="linear", g_w=1.0, g_b=0.1, kappa=0.1)
        ck.solve_map(lin, X[:50], Y[:50])  # compile
        case("linear L=3 P=2000", lin, X, Y)


if __name__ == "__main__":
    main()
