"""Benchmark (issue 36): how much the closed-form control variates cut the Monte Carlo error of the
MAP's tilted averages (T9 forward, T10 backward) on ReLU, where the untilted averages are the
arc-cosine kernel and its derivative pieces.

At the converged MAP of a bank case (relu, MNIST 0 vs 3, L = 2, P = 60, N = 200; and the erf case
beside it), each layer's forward average C(l) = g <phi phi^T>_tilted + g_b and backward average
C~(l-1) are estimated `--replicas` times with fresh common random numbers of M draws, by the
estimator the solver uses (self-normalised weights, the exact untilted average as control variate,
`tilted.layer_forward` / `layer_backward`) and by the plain self-normalised average of the same
draws. Printed per layer: the replica variance of the entries, summed, without over with the
control variate (> 1: the control variate helps), for the untilted and the adaptive proposal.

  python benchmarks/tilted_control_variates.py [--replicas 64] [--samples 4096]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import critical_kernels as ck

ck.use_one_xla_thread()  # before JAX's backend starts (jaxlib < 0.11.2)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from critical_kernels.estimators import tilted  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation"))
from build import load_cases, problem  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "tilted_control_variates.json"


def _plain_forward(g, g_b, Ct, samples, ones, log_ratio):
    """The self-normalised tilted average of g phi phi^T without control variate."""
    s = g * jnp.einsum("mp,pq,mq->m", samples.phi, Ct, samples.phi)
    w = jax.nn.softmax(s if log_ratio is None else s + log_ratio)
    return g * (samples.phi * w[:, None]).T @ samples.phi + g_b * jnp.outer(ones, ones)


def _plain_backward(g, A, samples, log_ratio):
    """The self-normalised tilted average of the T10 integrand without control variate."""
    phi, d1, d2 = samples.phi, samples.d1, samples.d2
    A_phi = phi @ A
    s = g * jnp.sum(phi * A_phi, axis=1)
    w = jax.nn.softmax(s if log_ratio is None else s + log_ratio)
    u = d1 * A_phi
    first = g * A * ((d1 * w[:, None]).T @ d1) + jnp.diag(g * jnp.sum(w[:, None] * d2 * A_phi, axis=0))
    return first + 2.0 * g**2 * (u * w[:, None]).T @ u


def _variance_ratio(with_cv: list, plain: list) -> float:
    """Summed replica variance of the entries, plain over with the control variate."""
    return float(np.var(np.stack(plain), axis=0).sum() / np.var(np.stack(with_cv), axis=0).sum())


def measure(case_name: str, replicas: int, M: int, mnist: Path) -> dict:
    spec, data = problem(load_cases()[case_name], mnist)
    est = ck.solve_map(spec, data.X, data.Y, key=0, throw=False)
    P = len(data.X)
    C, Ct = est.kernels, est.info.conj_kernels
    out = {"case": case_name, "method": est.method.label, "ok": est.ok, "layers": []}
    for l in range(1, spec.depth + 1):
        g, g_b = spec.gains[l - 1], spec.bias_vars[l]
        ones = jnp.ones(P)
        row = {"layer": l}
        S = None if est.info.proposals is None else est.info.proposals[l - 1]
        for name, q in (
            ("untilted", None),
            ("adaptive", None if S is None else tilted.proposal(S - np.eye(P))),
        ):
            if name == "adaptive" and q is None:
                continue
            method = tilted.ADAPTIVE if q is not None else "importance"
            fwd_cv, fwd_plain, bwd_cv, bwd_plain = [], [], [], []
            for key in jax.random.split(jax.random.PRNGKey(l), replicas):
                z = jax.random.normal(key, (M, P))
                samples = tilted.layer_samples(spec.act, jnp.asarray(C[l - 1]), z, P, q)
                lr = samples.log_ratio
                fwd_cv.append(
                    tilted.layer_forward(spec.act, method, g, g_b, Ct[l], C[l - 1], samples, ones)[0]
                )
                fwd_plain.append(_plain_forward(g, g_b, Ct[l], samples, ones, lr))
                if l >= 2:  # C~(l-1) for l - 1 >= 1 (the input layer's conjugate is not needed)
                    bwd_cv.append(tilted.layer_backward(spec.act, method, g, Ct[l], C[l - 1], samples)[0])
                    bwd_plain.append(_plain_backward(g, Ct[l], samples, lr))
            row[f"forward_{name}"] = _variance_ratio(fwd_cv, fwd_plain)
            if bwd_cv:
                row[f"backward_{name}"] = _variance_ratio(bwd_cv, bwd_plain)
        out["layers"].append(row)
        print(case_name, row, flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--cases", nargs="+", default=["relu-mnist-L3-P60", "erf-mnist-L3-P60"])
    args = parser.parse_args(argv)
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    results = [measure(c, args.replicas, args.samples, mnist) for c in args.cases]
    OUT.write_text(
        json.dumps({"replicas": args.replicas, "samples": args.samples, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
