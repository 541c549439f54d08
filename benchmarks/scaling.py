"""Benchmark: cost against P at alpha = P/N = 0.3 for the NNGP, first order (T13), MAP (T8-T12)
and one posterior-sampling gradient, erf, L = 2, MNIST (0 vs 3; 0 vs 1 above P = 1990, where t10k
runs out of zeros and threes), 4096 Monte Carlo samples per layer.

For the MAP it also times the compute floor in the same run: sweeps x layers x the three
(M x P)(P x P) products of one forward/backward pair (targets, issue 16: MAP at P = 400 <= 15 s and
within 3x the floor; at P = 2000 first order <= 2 min, MAP <= 15 min). Prints the BLAS library and
thread count, fits log-log exponents, writes docs/scaling.png and, with --json, the raw numbers.
Each size runs in a fresh process so that the peak resident memory is that size's. NNGP and first
order are timed warm (a second call); the MAP once, cold: its first stage includes compilation.

Run: python benchmarks/scaling.py [--sizes 100 200 400 800 2000] [--sampling-max 400] [--json F]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_size(P: int, sampling: bool, warm: bool, mnist: Path) -> dict:
    """Every timing at one P (called in a fresh process)."""
    import jax
    import jax.numpy as jnp

    import critical_kernels as ck

    ck.use_one_xla_thread()  # PJRT_NPROC=1 before the import below starts JAX's backend (runtime.py)
    from critical_kernels.estimators import Network
    from critical_kernels.numerics import limit_blas_threads

    classes = (0, 3) if P <= 1990 else (0, 1)
    data = ck.datasets.mnist_binary(classes, path=mnist, n_train=P, n_test=0, seed=0)
    N = int(round(P / 0.3))
    spec = ck.NetworkSpec(depth=2, width=N, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
    out = {"P": P, "N": N, "classes": classes, "backend": jax.default_backend()}
    ck.nngp_kernels(spec, data.X)  # compile at this shape, then time warm calls
    out["nngp"] = _seconds(lambda: ck.nngp_kernels(spec, data.X))
    out["first_order_cold"] = _seconds(lambda: ck.perturbative_kernels(spec, data.X, data.Y))
    out["first_order"] = _seconds(lambda: ck.perturbative_kernels(spec, data.X, data.Y))
    start = time.perf_counter()
    est = ck.solve_map(spec, data.X, data.Y, throw=False)
    out["map"] = time.perf_counter() - start
    out["map_first_stage"] = est.info.timings[f"N={100 * N}"]  # includes compilation
    out.update(map_ok=est.ok, map_sweeps=est.info.n_iter, map_tilted=est.method)
    if warm:  # a second solve with the compiled stage: the time against the floor without compilation
        out["map_warm"] = _seconds(lambda: ck.solve_map(spec, data.X, data.Y, throw=False))
    # compute floor: the three (M x P)(P x P) products of one forward/backward pair, per layer and sweep
    phi = jax.random.normal(jax.random.PRNGKey(0), (4096, P))
    A = jnp.eye(P)
    product = limit_blas_threads(jax.jit(lambda phi, A: phi @ A))
    product(phi, A).block_until_ready()
    one = np.median([_seconds(lambda: product(phi, A).block_until_ready()) for _ in range(5)])
    out["floor"] = est.info.n_iter * spec.depth * 3 * float(one)
    if sampling:
        net = Network(spec, data.X.shape[1])
        X, Y = jnp.asarray(data.X), jnp.asarray(data.Y)
        grad = jax.jit(jax.grad(lambda u: net.log_density(u, X, Y)))
        u = jnp.zeros(net.dim)
        grad(u).block_until_ready()
        out["gradient"] = float(np.median([_seconds(lambda: grad(u).block_until_ready()) for _ in range(3)]))
        out["parameters"] = net.dim
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def blas_report() -> str:
    import threadpoolctl

    import critical_kernels  # noqa: F401  (loads NumPy's and SciPy's BLAS)
    from critical_kernels.numerics import blas_threads

    libraries = sorted({f"{d['internal_api']} {d.get('version')}" for d in threadpoolctl.threadpool_info()})
    return f"BLAS: {', '.join(libraries)}; the package runs them with {blas_threads()} thread(s)"


def fit(P, t) -> float:
    """Log-log slope of t against P over the largest sizes (the asymptotic exponent)."""
    P, t = np.asarray(P, float)[-3:], np.asarray(t, float)[-3:]
    return float(np.polyfit(np.log(P), np.log(t), 1)[0])


def figure(rows: list[dict], path: Path, overlay: list[dict] | None = None) -> None:
    """Log-log wall time against P; `overlay` (e.g. the same benchmark on a GPU) drawn dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.subplots()
    series = (("nngp", "NNGP"), ("first_order", "first order"), ("map", "MAP"), ("gradient", "one gradient"))
    for runs, style in ((rows, "o-"), (overlay or [], "s--")):
        for k, (key, label) in enumerate(series):
            points = [(r["P"], r[key]) for r in runs if key in r]
            if len(points) >= 2:
                P, t = zip(*points, strict=True)
                name = f"{label}, {runs[0]['backend']} (slope {fit(P, t):.2f})"
                ax.loglog(P, t, style, color=f"C{k}", ms=4, label=name)
    P = [r["P"] for r in rows]
    ax.loglog(P, [r["floor"] for r in rows], "k:", label=f"MAP compute floor, {rows[0]['backend']}")
    ax.set_xlabel(r"training inputs $P$  ($N = P/0.3$)")
    ax.set_ylabel("wall time [s]")
    ax.set_title(r"erf, $L = 2$, 4096 samples per layer; slopes over the 3 largest $P$", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400, 800, 2000])
    parser.add_argument("--sampling-max", type=int, default=400, help="largest P for the gradient timing")
    parser.add_argument("--warm-max", type=int, default=400, help="largest P for a second, warm MAP solve")
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--figure", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "scaling.png"
    )
    parser.add_argument("--overlay", type=Path, default=None, help="another run's --json, drawn dashed")
    parser.add_argument("--plot-only", type=Path, default=None, help="replot a --json file, run nothing")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # the child process
        print(
            json.dumps(
                one_size(args.one, args.one <= args.sampling_max, args.one <= args.warm_max, args.mnist)
            )
        )
        return
    overlay = json.loads(args.overlay.read_text()) if args.overlay else None
    if args.plot_only:
        figure(json.loads(args.plot_only.read_text()), args.figure, overlay)
        return
    print(blas_report())
    rows = []
    for P in args.sizes:
        child = [sys.executable, __file__, "--one", str(P), "--sampling-max", str(args.sampling_max)]
        child += ["--warm-max", str(args.warm_max)]
        done = subprocess.run(
            child + ["--mnist", str(args.mnist)], capture_output=True, text=True, check=True
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"P = {P:5d}, N = {r['N']:5d}: NNGP {r['nngp']:7.3f} s, first order {r['first_order']:7.2f} s "
            f"(cold {r['first_order_cold']:.2f} s), "
            f"MAP {r['map']:7.2f} s ({r['map_sweeps']} sweeps, {r['map_tilted']}, ok={r['map_ok']}; first "
            f"stage incl. compile {r['map_first_stage']:.2f} s), floor {r['floor']:6.2f} s, "
            f"MAP / floor {r['map'] / r['floor']:5.2f}"
            + (
                f", warm MAP {r['map_warm']:6.2f} s ({r['map_warm'] / r['floor']:4.2f} x floor)"
                if "map_warm" in r
                else ""
            )
            + (
                f", gradient {r['gradient'] * 1e3:8.2f} ms ({r['parameters']} parameters)"
                if "gradient" in r
                else ""
            )
            + f", peak RSS {r['peak_rss_gb']:.2f} GB",
            flush=True,
        )
    P = [r["P"] for r in rows]
    if len(rows) >= 2:
        slopes = {k: round(fit(P, [r[k] for r in rows]), 2) for k in ("nngp", "first_order", "map")}
        print(f"log-log slopes over the largest sizes: {slopes}")
        figure(rows, args.figure, overlay)
        print(f"wrote {args.figure}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
