"""Benchmark: NNGP kernel stack (T1), erf, L = 10, float64, against plain NumPy.

Prints the median wall time of `critical_kernels.nngp_kernels` (compiled, warm) and of a NumPy
implementation of the same recursion measured in the same run, and their ratio.
Target (issue 2): faster than NumPy at every size, <= 1 s at P = 4000.

Run: python benchmarks/nngp.py [--sizes 500 2000 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import median_time

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before JAX's backend starts (runtime.py)


def numpy_nngp(X: np.ndarray, depth: int, g_w: float, g_b: float) -> np.ndarray:
    """The erf NNGP recursion (T1) in NumPy, in place where it can be."""
    P, d = X.shape
    out = np.empty((depth + 1, P, P))
    out[0] = X @ X.T / d + g_b
    for l in range(depth):
        s = 1.0 / np.sqrt(1.0 + 2.0 * np.diagonal(out[l]))
        u = np.multiply(out[l], 2.0 * s[:, None] * s[None, :], out=out[l + 1])
        np.clip(u, -1.0, 1.0, out=u)
        np.arcsin(u, out=u)
        u *= g_w * 2.0 / np.pi
        u += g_b
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    args = parser.parse_args()
    g_w, g_b = 1.5, 0.1
    spec = ck.NetworkSpec(depth=args.depth, activation="erf", g_w=g_w, g_b=g_b)
    print(f"NNGP stack, erf, L = {args.depth}, float64; median of {args.repeats} (warm)")
    print(f"{'P':>6} {'jax [s]':>10} {'numpy [s]':>10} {'numpy/jax':>10} {'max |diff|':>11}")
    for P in args.sizes:
        X = np.random.default_rng(P).standard_normal((P, 20))
        ours = np.asarray(ck.nngp_kernels(spec, X))  # compile + reference for the check
        diff = np.max(np.abs(ours - numpy_nngp(X, args.depth, g_w, g_b)))
        t_jax = median_time(lambda: ck.nngp_kernels(spec, X), args.repeats)
        t_np = median_time(lambda: numpy_nngp(X, args.depth, g_w, g_b), args.repeats)
        print(f"{P:>6} {t_jax:>10.3f} {t_np:>10.3f} {t_np / t_jax:>10.2f} {diff:>11.1e}")
        del ours


if __name__ == "__main__":
    main()
