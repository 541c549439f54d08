"""Benchmark (issue 36): wall time until the standard error of the CKA adaptation is 5 % of the
adaptation, for the beyond-saddle estimator (T17) and for pre-activation HMC (T19), on the same bank
case in the same run, one process on one core.

The adaptation of hidden layer l is CKA_bank(l) - CKA_NNGP(l), from the validation bank (the mean of
its two samplers). Each method's cost splits into a fixed part and a part whose SE falls as
1/sqrt(time):

  reweighted: the saddle point (`solve_map`, fixed) + the networks (`reweighted_kernels` with its
    defaults, rounds until the SE meets rtol = 0.05); t_5% = t_saddle + t_networks r^2 / 0.05^2 with
    r the largest SE / adaptation over hidden layers;
  HMC: warm-up (fixed) + sampling (the bank's pre-activation sampler: 4 leapfrog steps, 4 chains of
    the project's default `Chains`); t_5% = t_warmup + t_sampling r^2 / 0.05^2 (the batch-means SE).

The first call of each compiles; every method runs once untimed on the case first (`--no-warm` skips
it). Results go to benchmarks/results/time_to_five_percent.json.

  python benchmarks/time_to_five_percent.py [--case relu-mnist-L2-P30] [--keys 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import critical_kernels as ck

ck.use_one_xla_thread()  # before JAX's backend starts (jaxlib < 0.11.2)

import numpy as np  # noqa: E402

from critical_kernels.metrics import cka_layers, cka_layers_se  # noqa: E402
from critical_kernels.numerics import limit_blas_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation"))
from build import HERE, load_cases, problem  # noqa: E402
from compare import bank_cka  # noqa: E402

MNIST = ROOT / ".." / "shared" / "data" / "mnist"
OUT = ROOT / "benchmarks" / "results" / "time_to_five_percent.json"
TARGET = 0.05
HMC = ck.HMC(n_leapfrog=4, space="preactivation")


def _ratio(est, Y, adaptation) -> float:
    """The largest SE / |adaptation| of the CKA over the hidden layers."""
    se = cka_layers_se(est.estimates.kernels, Y, kind=est.estimates.kind)[1:]
    return float(np.max(se / np.abs(adaptation)))


def reweighted(spec, data, adaptation, key: int) -> dict:
    start = time.perf_counter()
    saddle = ck.solve_map(spec, data.X, data.Y, data.X_test, key=key)
    t_saddle = time.perf_counter() - start
    est = ck.reweighted_kernels(spec, data.X, data.Y, data.X_test, saddle=saddle, key=key, throw=False)
    t_networks = time.perf_counter() - start - t_saddle
    ratio = _ratio(est, data.Y, adaptation)
    return {
        "result": est.result.name,
        "networks": int(est.info.n_samples),
        "ess": float(est.info.ess),
        "se_over_adaptation": ratio,
        "fixed_s": t_saddle,
        "sampling_s": t_networks,
        "to_5pc_s": t_saddle + t_networks * (ratio / TARGET) ** 2,
        "cka": cka_layers(est.kernels, data.Y).tolist(),
    }


def hmc(spec, data, adaptation, key: int) -> dict:
    est = ck.sample_posterior(spec, data.X, data.Y, data.X_test, sampler=HMC, key=key, throw=False)
    t_warm, t_sample = est.info.timings["warmup"], est.info.timings["sampling"]
    ratio = _ratio(est, data.Y, adaptation)
    return {
        "result": est.result.name,
        "rhat_cka": np.asarray(est.info.rhat_cka).tolist(),
        "se_over_adaptation": ratio,
        "fixed_s": t_warm,
        "sampling_s": t_sample,
        "to_5pc_s": t_warm + t_sample * (ratio / TARGET) ** 2,
        "cka": cka_layers(est.kernels, data.Y).tolist(),
    }


@limit_blas_threads
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="relu-mnist-L2-P30")
    parser.add_argument("--keys", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--no-warm", action="store_true", help="skip the untimed compile run")
    args = parser.parse_args()
    case = load_cases()[args.case]
    spec, data = problem(case, args.mnist)
    summary = json.loads((HERE / "cases" / f"{args.case}.json").read_text())
    bank, _ = bank_cka(summary)
    adaptation = (bank - cka_layers(ck.nngp_kernels(spec, data.X), data.Y))[1:]
    methods = {"reweighted": reweighted, "hmc-preactivation": hmc}
    if not args.no_warm:
        for run in methods.values():
            run(spec, data, adaptation, key=1000)  # compiles every shape the timed runs use
    runs = {name: [run(spec, data, adaptation, key) for key in args.keys] for name, run in methods.items()}
    medians = {name: float(np.median([r["to_5pc_s"] for r in rs])) for name, rs in runs.items()}
    record = {
        "case": args.case,
        "adaptation": adaptation.tolist(),
        "keys": args.keys,
        "runs": runs,
        "median_to_5pc_s": medians,
        "hmc_over_reweighted": medians["hmc-preactivation"] / medians["reweighted"],
        "versions": {"critical_kernels": ck.__version__},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1))
    for name, rs in runs.items():
        parts = ", ".join(
            f"{r['fixed_s']:.0f} + {r['sampling_s']:.0f} s, SE/adapt {r['se_over_adaptation']:.3f} -> "
            f"{r['to_5pc_s']:.0f} s"
            for r in rs
        )
        print(f"{name}: {parts}; median to 5 %: {medians[name]:.0f} s")
    print(f"HMC / reweighted: {record['hmc_over_reweighted']:.2f}")


if __name__ == "__main__":
    main()
