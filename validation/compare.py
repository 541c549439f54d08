"""Every estimator against every usable case of the validation bank: captured fractions per layer.

For each finished case (cases/CASE.json whose verdict is usable) this runs the NNGP, the first order,
the MAP, the reweighted estimator (tempered SMC where its ESS is low) and, for linear networks, the
exact posterior (T18), on the case's own data and network, and compares the CKA of every hidden layer
with the bank's: captured = (CKA_theory - CKA_NNGP) / (CKA_bank - CKA_NNGP) with its standard error
(both SEs, independent estimates), and the time each estimator took. Results are kept per case in
results/CASE.json (a case is not computed twice) and summed up, with a figure, on the docs page
docs/bank.md (`--summary`: rewrite it from the results alone).

  python validation/compare.py [CASE ...] [--estimators perturbative map reweighted linear_exact]
  python validation/compare.py CASE --again --estimators reweighted   # recompute one estimator
  python validation/compare.py --summary
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


def diagnostics(est) -> dict:
    """What says whether an estimate can be trusted: the reweighted estimator's ESS, Var R, networks,
    tolerance and tempered-SMC ladders; the MAP's sweeps and residual."""
    info = est.info
    if isinstance(info, ck.estimators.reweighted.ReweightedInfo):
        return {
            "ess": float(info.ess),
            "var_log_weight": float(info.var_log_weight),
            "n_samples": int(info.n_samples),
            "rtol_met": info.rtol_met,
            "smc_ladders": [len(run.temperatures) for run in info.smc_runs],
            "smc_final_ess": [float(run.final_ess) for run in info.smc_runs],
        }
    if isinstance(info, ck.estimators.map.MAPInfo):
        return {"n_iter": int(info.n_iter), "residual": float(info.residual), "rtol_met": info.rtol_met}
    return {}


def compare_case(name: str, case: dict, summary: dict, mnist: Path, names: list[str], previous=None) -> dict:
    """Every estimator in `names` on the case (the others kept from `previous`, an earlier result)."""
    spec, data = problem(case, mnist)
    nngp = cka_layers(ck.nngp_kernels(spec, data.X, data.X_test), data.Y)
    bank, bank_se = bank_cka(summary)
    out = {"case": name, "nngp": nngp.tolist(), "bank": bank.tolist(), "bank_se": bank_se.tolist()}
    out |= {k: v for k, v in (previous or {}).items() if k in ESTIMATORS and k not in names}
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
            "version": ck.__version__,
            **diagnostics(est),
        }
        print(f"{name}: {estimator} ({out[estimator]['method']}) {seconds:.0f} s, captured "
              f"{np.round(captured[1:], 3).tolist()}", flush=True)  # fmt: skip
    return out


LABELS = {
    "perturbative": "first order",
    "map": "MAP",
    "reweighted": "reweighted",
    "linear_exact": "exact (T18)",
}
DOCS = HERE.parent / "docs"


def _cell(result: dict) -> str:
    """ "0.86 ± 0.02 / 0.91 ± 0.01": captured fraction ± SE of every hidden layer; the failure if any."""
    if result["result"] != "success":
        return f"failed ({result['result']})"
    return " / ".join(
        f"{c:.2f} ± {e:.2f}" for c, e in zip(result["captured"], result["captured_se"], strict=True)
    )


def _time(seconds) -> str:
    return "–" if seconds is None else f"{seconds:.0f}"  # None: not measured (a paused process)


def summary(results: list[dict]) -> list[str]:
    """The docs page: one row per case, the bank's adaptation per layer, captured fractions, times."""
    names = [n for n in LABELS if any(n in r for r in results)]
    lines = [
        "# Validation bank",
        "",
        "Every estimator against finite networks sampled from their exact posterior (`validation/`:",
        "`build.py` samples each case with HMC on the weights and HMC on the pre-activations, units of",
        "chains checkpointed to disk until the pooled R-hat of the CKA of every layer is at most 1.01;",
        "`compare.py` runs the estimators). Cases: α = P/N = 0.3, κ = 0.1, 200 test rows, MNIST 0 vs 3 or",
        "XOR (d = 10). Captured fraction = (CKA_theory − CKA_NNGP) / (CKA_bank − CKA_NNGP) per hidden",
        "layer (1 is perfect), ± its SE from both estimates' SEs; the bank's CKA is the mean of its two",
        "samplers. Times: one process, one XLA thread, beside the bank builder on a 2-core machine;",
        "seconds in the order of the estimator columns (– where not measured). relu0: ReLU without",
        "biases (g_b = 0); every other case has g_b = 0.1.",
        "",
        "| case | bank adaptation per layer | " + " | ".join(LABELS[n] for n in names) + " | seconds |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in results:
        adaptation = np.asarray(r["bank"]) - np.asarray(r["nngp"])
        cells = [_cell(r[n]) if n in r else "" for n in names]
        seconds = " / ".join(_time(r[n]["seconds"]) for n in names if n in r)
        row = [r["case"], " / ".join(f"{a:.4f}" for a in adaptation[1:]), *cells, seconds]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "![Captured fraction per case and layer](bank_captured.png)", ""]
    return lines + _reweighted_lines(results)


def _reweighted_lines(results: list[dict]) -> list[str]:
    """The reweighted estimator's own diagnostics, where they were recorded (runs since 0.7)."""
    rows = [(r["case"], r["reweighted"]) for r in results if "ess" in r.get("reweighted", {})]
    if not rows:
        return []
    lines = [
        "## The reweighted estimator's diagnostics",
        "",
        "Networks drawn (rounds until the SE of the CKA adaptation is 5 % of it, `Reweighting(rtol=0.05)`),",
        "their Kish ESS, the variance of the log weights R, whether the tolerance was met, and the",
        "tempered-SMC ladders (number of temperatures, final ESS) where the ESS collapsed; for the runs",
        "since 0.7 (the cases re-run with the default tolerance).",
        "",
        "| case | method | networks | ESS | Var R | rtol met | SMC ladder (final ESS) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in rows:
        ladders = ", ".join(
            f"{n} ({e:.0f})" for n, e in zip(r["smc_ladders"], r["smc_final_ess"], strict=True)
        )
        lines.append(
            f"| {case} | {r['method']} | {r['n_samples']} | {r['ess']:.0f} | {r['var_log_weight']:.2f} | "
            f"{r['rtol_met']} | {ladders or '–'} | {r['seconds']:.0f} |"
        )
    return lines + [""]


def figure(results: list[dict], path: Path) -> None:
    """Captured fraction ± 2 SE of every estimator, case and hidden layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in LABELS if any(n in r for r in results)]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(results) + 1.5))
    for k, name in enumerate(names):
        for i, r in enumerate(results):
            if name not in r or r[name]["result"] != "success":
                continue
            c, e = np.asarray(r[name]["captured"]), np.asarray(r[name]["captured_se"])
            y = i + 0.15 * (k - len(names) / 2) + 0.04 * np.arange(len(c))
            ax.errorbar(
                c, y, xerr=2 * e, fmt="o", ms=3, color=f"C{k}", label=LABELS[name] if i == 0 else None
            )
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvspan(0.95, 1.05, color="0.9", zorder=0)
    ax.set_yticks(range(len(results)), [r["case"] for r in results])
    ax.set_xlabel("captured fraction of the sampled adaptation (± 2 SE), hidden layers 1..L")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary() -> None:
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = list(load_cases())
    results.sort(key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))
    figure(results, DOCS / "bank_captured.png")
    (DOCS / "bank.md").write_text("\n".join(summary(results)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    parser.add_argument("--summary", action="store_true", help="only rewrite docs/bank.md and its figure")
    parser.add_argument("--again", action="store_true", help="recompute --estimators where a result exists")
    args = parser.parse_args(argv)
    if args.summary:
        write_summary()
        return 0
    mnist = Path(os.environ.get("MNIST", HERE.parents[1] / "shared" / "data" / "mnist"))
    cases = load_cases()
    RESULTS.mkdir(exist_ok=True)
    for name in args.cases or list(cases):
        summary_path = HERE / "cases" / f"{name}.json"
        target = RESULTS / f"{name}.json"
        if not summary_path.is_file() or (target.is_file() and not args.again):
            continue
        summary = json.loads(summary_path.read_text())
        if not summary["verdict"]["usable"]:
            print(f"{name}: flagged in the bank, no reference ({summary['verdict']})")
            continue
        previous = json.loads(target.read_text()) if target.is_file() else None
        result = compare_case(name, cases[name], summary, mnist, args.estimators, previous)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, target)
    write_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
