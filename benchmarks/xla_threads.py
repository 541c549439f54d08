"""Benchmark: the jaxlib < 0.11.2 batched-LAPACK deadlock, avoided two ways.

Baseline: the package at --baseline (a revision whose factorisations are JAX's own, vmapped into
batched LAPACK calls) with one XLA CPU thread (PJRT_NPROC=1, `use_one_xla_thread`), the setting it
needed. Against it: this tree, whose factorisations run one matrix at a time (linalg.py), with XLA's
default pool (no setting) and with one thread. Each runs in a fresh process, on MNIST 0 vs 3 at
alpha = P/N = 0.3, L = 2, erf: the median of 9 compiled gradients of the log posterior in weight and
in pre-activation space (T19) at each P, and a short pre-activation HMC run at the first P (4 chains,
50 warm-up + 200 steps; the second of two calls, so compiled). Prints each time and its ratio to
the baseline (> 1: slower than the baseline).

Run: python benchmarks/xla_threads.py [--P 100 300] [--baseline 0d7639c]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


def child(P: list[int], src: Path, threads: str | None) -> dict:
    """measure() in a fresh process on the package in `src`, with PJRT_NPROC = threads (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"} | {"PYTHONPATH": str(src)}
    env |= {"PJRT_NPROC": threads} if threads else {}
    cmd = [sys.executable, __file__, "--child", "--P", *map(str, P)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the run on {src} with PJRT_NPROC={threads} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--baseline", default="0d7639c", help="revision with JAX's own factorisations")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.P)))
        return
    root = HERE.parent
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "-C", str(root), "worktree", "add", "-f", tmp, args.baseline], check=True)
        try:
            runs = {
                f"baseline {args.baseline}, 1 thread": child(args.P, Path(tmp) / "src", "1"),
                "linalg.py, default pool": child(args.P, root / "src", None),
                "linalg.py, 1 thread": child(args.P, root / "src", "1"),
            }
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", tmp], check=False)
    (base_name, base), *others = runs.items()
    print(f"baseline: {base_name}; cores: {len(os.sched_getaffinity(0))}")
    for name, value in base.items():
        cells = [f"{runs[r][name]:8.1f} ({runs[r][name] / value:.2f})" for r, _ in others]
        print(f"  {name:38s} {value:8.1f} | " + " | ".join(cells))
    print("columns: " + " | ".join(r for r, _ in runs.items()) + "; (ratio to the baseline)")


if __name__ == "__main__":
    main()
