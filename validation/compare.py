"""Every estimator against every usable case of the validation bank: captured fractions per layer.

For each finished case (cases/CASE.json whose verdict is usable) this runs the NNGP, the first order,
the MAP, the reweighted estimator (tempered SMC where its ESS is low) and, for linear networks, the
exact posterior (T18), on the case's own data and network, and compares the CKA of every hidden layer
with the bank's: captured = (CKA_theory - CKA_NNGP) / (CKA_bank - CKA_NNGP) with its standard error
(both SEs, independent estimates), and the time each estimator took. Results are kept per case in
results/CASE.json (a case is not computed twice) and summed up in results/README.md and a figure.

  python validation/compare.py [CASE ...] [--estimators perturbative map reweighted linear_exact]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import critical_kernels as ck

ck.use_one_xla_thread()  # one XLA thread: this runs beside the bank builder, a process per core

import numpy as np  # noqa: E402
from build import HERE, load_cases, problem  # noqa: E402

from critical_kernels.metrics import cka_layers, cka_layers_se  # noqa: E402

RESULTS = HERE / "results"
ESTIMATORS = {
    "perturbative": lambda spec, d: ck.perturbative_kernels(spec, d.X, d.Y, d.X_test, key=0, throw=False),
    "map": lambda spec, d: ck.solve_map(spec, d.X, d.Y, d.X_test, key=0, throw=False),
    "reweighted": lambda spec, d: ck.reweighted_kernels(spec, d.X, d.Y, d.X_test, key=0, throw=False),
    "linear_exact": lambda spec, d: ck.linear_posterior_kernels(spec, d.X, d.Y, d.X_test, throw=False),
}


def bank_cka(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    """The bank's CKA per layer: the mean of its two samplers, SE half their combined SE."""
    ckas = [np.asarray(s["cka"]) for s in summary["samplers"].values()]
    ses = [np.asarray(s["cka_se"]) for s in summary["samplers"].values()]
    return np.mean(ckas, axis=0), 0.5 * np.hypot(*ses)


def compare_case(name: str, case: dict, summary: dict, mnist: Path, names: list[str]) -> dict:
    spec, data = problem(case, mnist)
    nngp = cka_layers(ck.nngp_kernels(spec, data.X, data.X_test), data.Y)
    bank, bank_se = bank_cka(summary)
    out = {"case": name, "nngp": nngp.tolist(), "bank": bank.tolist(), "bank_se": bank_se.tolist()}
    for estimator in names:
        if estimator == "linear_exact" and case["activation"] != "linear":
            continue
        start = time.perf_counter()
        est = ESTIMATORS[estimator](spec, data)
        seconds = time.perf_counter() - start
        cka = cka_layers(est.kernels, data.Y) if est.ok else np.full(spec.depth + 1, np.nan)
        se = (
            cka_layers_se(est.estimates.kernels, data.Y, kind=est.estimates.kind)
            if est.estimates is not None
            else np.zeros(spec.depth + 1)
        )
        adaptation = bank - nngp
        captured = (cka - nngp) / adaptation
        captured_se = np.hypot(se, captured * bank_se) / np.abs(adaptation)
        out[estimator] = {
            "method": est.method.label if est.method is not None else "",
            "result": est.result.name,
            "cka": cka.tolist(),
            "cka_se": se.tolist(),
            "captured": captured[1:].tolist(),
            "captured_se": captured_se[1:].tolist(),
            "seconds": seconds,
        }
        print(f"{name}: {estimator} ({out[estimator]['method']}) {seconds:.0f} s, captured "
              f"{np.round(captured[1:], 3).tolist()}", flush=True)  # fmt: skip
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    args = parser.parse_args(argv)
    mnist = Path(os.environ.get("MNIST", HERE.parents[1] / "shared" / "data" / "mnist"))
    cases = load_cases()
    RESULTS.mkdir(exist_ok=True)
    for name in args.cases or list(cases):
        summary_path = HERE / "cases" / f"{name}.json"
        target = RESULTS / f"{name}.json"
        if not summary_path.is_file() or target.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        if not summary["verdict"]["usable"]:
            print(f"{name}: flagged in the bank, no reference ({summary['verdict']})")
            continue
        result = compare_case(name, cases[name], summary, mnist, args.estimators)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
