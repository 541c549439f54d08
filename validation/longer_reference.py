"""A longer ground truth for one bank case: more units of both samplers, pooled with the bank's own.

Where an estimator misses a bank case by a few SE and the bank's two samplers themselves differ by
~2 SE (relu0-mnist-L2-P30, docs/results.md), the question is which side is off. This adds `--units`
units per sampler (new keys: unit indices from 10 on, each checkpointed like the builder's) to the
case's units in work/CASE/, and prints per sampler the pooled CKA per layer with its SE, R-hat and
ESS, the samplers' agreement, and the captured fraction of every estimator in results/CASE.json
against the longer reference (their mean). Units go to work/CASE/extra/ (resumable); the reference
itself (CKA per layer, SE, chains, agreement) to results/longer/CASE.json, committed, for benchmarks
that compare against it (benchmarks/reweighted_keys_bank.py).

  python validation/longer_reference.py relu0-mnist-L2-P30 --units 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import build
import numpy as np
from build import HERE, SAMPLERS, load_cases, pooled, problem, run_unit, units

FIRST_INDEX = 10  # the bank's own units are 0..MAX_UNITS - 1: new keys from here


def extra_units(case: dict, mnist: Path, n: int) -> None:
    """n more units per sampler into work/CASE/extra/, each written when it ends."""
    folder = HERE / "work" / case["name"] / "extra"
    folder.mkdir(parents=True, exist_ok=True)
    for sampler in SAMPLERS:
        for index in range(FIRST_INDEX, FIRST_INDEX + n):
            path = folder / f"{sampler}-{index:02d}.npz"
            if path.exists():
                continue
            chains = folder / f"{sampler}-{index:02d}.chains"
            unit = run_unit(case, sampler, index, mnist, chains)
            build._atomic_save(path, lambda f, u=unit: np.savez(f, **u))
            chains.unlink()
            print(f"{sampler} unit {index}: {unit['seconds']:.0f} s", flush=True)


def report(case: dict, mnist: Path) -> None:
    spec, data = problem(case, mnist)
    work = HERE / "work" / case["name"]
    results = {s: pooled(units(work, s) + units(work / "extra", s), data.Y) for s in SAMPLERS}
    for s, r in results.items():
        print(
            f"{s:18s} {r['chains']} chains: CKA {np.round(r['cka'][1:], 5).tolist()} "
            f"+- {np.round(r['cka_se'][1:], 5).tolist()}, R-hat {np.round(r['rhat_cka'][1:], 4).tolist()}, "
            f"ESS {np.round(r['ess_cka'][1:]).tolist()}"
        )
    z = build.verdict(results)["z_cka"]
    print(f"samplers' z per layer: {np.round(z[1:], 2).tolist()}")
    a, b = results.values()
    reference, reference_se = (a["cka"] + b["cka"]) / 2, np.hypot(a["cka_se"], b["cka_se"]) / 2
    record = {
        "case": case["name"],
        "cka": reference.tolist(),
        "cka_se": reference_se.tolist(),
        "chains": {s: int(r["chains"]) for s, r in results.items()},
        "samplers_z": np.asarray(z).tolist(),
    }
    (HERE / "results" / "longer").mkdir(exist_ok=True)
    build._atomic_save(
        HERE / "results" / "longer" / f"{case['name']}.json",
        lambda f: f.write(json.dumps(record, indent=1).encode()),
    )
    stored = json.loads((HERE / "results" / f"{case['name']}.json").read_text())
    nngp = np.asarray(stored["nngp"])
    adaptation = reference - nngp
    shown = [np.round(v[1:], 5).tolist() for v in (adaptation, reference_se)]
    print(f"longer reference: adaptation {shown[0]} +- {shown[1]}")
    for name, est in stored.items():
        if not isinstance(est, dict) or "cka" not in est:
            continue
        cka, se = np.asarray(est["cka"]), np.asarray(est["cka_se"])
        miss = cka - reference
        z = miss / np.hypot(se, reference_se)
        captured = (cka - nngp) / adaptation
        print(
            f"{name:14s} captured {np.round(captured[1:], 3).tolist()}, z {np.round(z[1:], 1).tolist()}"
            f" (bank: {np.round(est['captured'], 3).tolist()})"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("--units", type=int, default=4, help="more units per sampler (default 4)")
    args = parser.parse_args(argv)
    mnist = Path(os.environ.get("MNIST", HERE.parents[1] / "shared" / "data" / "mnist"))
    case = load_cases()[args.case]
    extra_units(case, mnist, args.units)
    report(case, mnist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
