"""Benchmark (issue 36): the beyond-saddle estimator over many keys on one validation-bank case: is it
biased against sampled networks, and is its standard error honest?

One run of `reweighted_kernels` per key on the case's data and network (validation/cases.toml, 200
test rows), either with its defaults (mode "default": rounds of networks until the SE of the CKA
adaptation is 5 % of it), with a fixed 2048 networks (mode "fixed", rtol=None), or with the defaults
but every neuron's Metropolis-Hastings chain cut at 20 steps (mode "short", 0.8.1's default). Modes
run interleaved key by key, so their times compare under the same load. Each run's CKA per
hidden layer, its jackknife SE, the networks used, ESS and time go to OUT/CASE/MODE-keyK.json when it
ends (resumable; run it under nohup). The reference is the longer ground truth
validation/results/longer/CASE.json where there is one (validation/longer_reference.py), else the
mean of the bank's two samplers. `--summary` prints per mode and hidden layer, over the keys:

  captured: mean of (CKA - CKA_NNGP) / (CKA_ref - CKA_NNGP) ± its SE over the keys (the reference's
    own SE not included; it is printed beside);
  spread / SE: the run-to-run standard deviation of the CKA over the RMS of the reported SE;
  within: how many runs land within max(2 combined SE, 5 % of the adaptation) of the reference,
    the criterion of issue 36.

  nohup python benchmarks/reweighted_keys_bank.py relu0-mnist-L2-P30 --mode default short --keys 20 &
  python benchmarks/reweighted_keys_bank.py relu0-mnist-L2-P30 --summary
"""

from __future__ import annotations

import argparse
import json
import os
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
from build import load_cases, problem  # noqa: E402

MNIST = Path(os.environ.get("MNIST", ROOT.parent / "shared" / "data" / "mnist"))
OUT = ROOT / "benchmarks" / "results" / "reweighted_keys_bank"
RESULTS = ROOT / "validation" / "results"
MODES = {
    "default": ck.Reweighting(),
    "fixed": ck.Reweighting(n_samples=2048, rtol=None, tempering=None),
    "short": ck.Reweighting(
        max_mh=20
    ),  # 0.8.1's default: 20 Metropolis-Hastings steps, however heavy the tilt
}
FIRST_KEY = 100  # keys of their own: the bank comparison (compare.py) uses key 0


@limit_blas_threads
def run(case: str, mode: str, key: int) -> dict:
    spec, data = problem(load_cases()[case], MNIST)
    start = time.perf_counter()
    est = ck.reweighted_kernels(spec, data.X, data.Y, data.X_test, options=MODES[mode], key=key, throw=False)
    seconds = time.perf_counter() - start
    se = cka_layers_se(est.estimates.kernels, data.Y, kind=est.estimates.kind) if est.ok else None
    return {
        "result": est.result.name,
        "cka": cka_layers(est.kernels, data.Y)[1:].tolist(),
        "cka_se": se[1:].tolist() if se is not None else None,
        "n_samples": int(est.info.n_samples),
        "ess": float(est.info.ess),
        "var_log_weight": float(est.info.var_log_weight),
        "seconds": seconds,
        "mh_steps": np.asarray(est.info.mh_steps).tolist() if est.info.mh_steps is not None else None,
        "version": ck.__version__,
    }


def reference(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(CKA_NNGP, CKA_ref, SE_ref) per hidden layer and where the reference comes from."""
    stored = json.loads((RESULTS / f"{case}.json").read_text())
    nngp = np.asarray(stored["nngp"])[1:]
    longer = RESULTS / "longer" / f"{case}.json"
    if longer.exists():
        ref = json.loads(longer.read_text())
        return (
            nngp,
            np.asarray(ref["cka"])[1:],
            np.asarray(ref["cka_se"])[1:],
            f"longer reference {ref['chains']}",
        )
    return nngp, np.asarray(stored["bank"])[1:], np.asarray(stored["bank_se"])[1:], "the bank's two samplers"


def summary(case: str) -> None:
    nngp, ref, ref_se, source = reference(case)
    adaptation = ref - nngp
    print(f"{case}: reference {source}, adaptation {np.round(adaptation, 5).tolist()} ± "
          f"{np.round(ref_se, 5).tolist()} ({np.round(ref_se / adaptation, 3).tolist()} of it)")  # fmt: skip
    for mode in MODES:
        runs = [json.loads(p.read_text()) for p in sorted((OUT / case).glob(f"{mode}-key*.json"))]
        runs = [r for r in runs if r["result"] == "success"]
        if len(runs) < 2:
            continue
        cka, se = np.array([r["cka"] for r in runs]), np.array([r["cka_se"] for r in runs])
        captured = (cka - nngp) / adaptation
        spread = cka.std(axis=0, ddof=1) / np.sqrt(np.mean(se**2, axis=0))
        within = np.abs(cka - ref) <= np.maximum(2 * np.hypot(se, ref_se), 0.05 * adaptation)
        K = len(runs)
        median = {
            k: np.median([r[k] for r in runs]) for k in ("n_samples", "ess", "var_log_weight", "seconds")
        }
        print(
            f"{mode:8s} {K} keys: captured {np.round(captured.mean(0), 3).tolist()} ± "
            f"{np.round(captured.std(0, ddof=1) / np.sqrt(K), 3).tolist()}; spread/SE "
            f"{np.round(spread, 2).tolist()} (± {1 / np.sqrt(2 * (K - 1)):.2f}); SE/adaptation "
            f"{np.round(np.sqrt(np.mean(se**2, 0)) / adaptation, 3).tolist()}; within "
            f"{within.sum(0).tolist()} of {K}; networks {median['n_samples']:.0f}, ESS {median['ess']:.0f}, "
            f"Var R {median['var_log_weight']:.2f}, {median['seconds']:.0f} s (medians)"
        )  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("--mode", nargs="+", choices=list(MODES), default=["fixed", "default"])
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args(argv)
    if not args.summary:
        for key in range(FIRST_KEY, FIRST_KEY + args.keys):
            for mode in args.mode:
                path = OUT / args.case / f"{mode}-key{key}.json"
                if path.exists():
                    continue
                record = run(args.case, mode, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.with_suffix(".tmp").write_text(json.dumps(record, indent=1))
                os.replace(path.with_suffix(".tmp"), path)
                print(f"{mode} key {key}: {record['result']}, {record['seconds']:.0f} s", flush=True)
    summary(args.case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
