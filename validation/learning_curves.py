"""Learning curves for the docs (issue 25): the test loss of every estimator's posterior predictive
against P, from the sweeps of examples/learning_curve.toml (fixed width), learning_curve_alpha.toml
(fixed alpha = P/N) and pacelli_fig1a.toml (one hidden layer, with the scalar theory), as far as
each sweep has run: a sweep folder is read point by point, so a sweep still running shows its
finished points and the page says how many are missing.

Writes docs/learning_curves.md and its figures (docs/learning_curve_<sweep>.png, test loss against
P per task and activation; ..._change.png, the loss relative to the NNGP's).

  critical-kernels sweep examples/learning_curve.toml --out validation/sweeps/learning_curve \
      --resume --no-kernels   # hours; the points (kilobytes each without kernels) are committed
  python validation/learning_curves.py [--runs validation/sweeps]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from critical_kernels import plots
from critical_kernels.experiments.grid import load_sweep
from critical_kernels.experiments.labels import fmt_se
from critical_kernels.experiments.merge import merge

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SWEEPS = {  # folder under --runs -> what the page calls it, and the x-axis of its figures
    "learning_curve": ("fixed width N = 100, L = 2", "P"),
    "learning_curve_alpha": ("fixed α = P/N = 0.5, L = 2", "P"),
    "pacelli_fig1a": ("Pacelli et al.'s Fig. 1a setup, L = 1 (MNIST 0 vs 1)", "N"),  # a panel per P
}
X_LABELS = {"P": "P (training inputs)", "N": "N (hidden width)"}
NAMES = {  # estimator -> label, in the order of the table
    "nngp": "NNGP",
    "scalar": "scalar (T23)",
    "perturbative": "first order (T22)",
    "map": "MAP",
    "reweighted": "reweighted (T17)",
    "sampled": "sampled networks",
}


class Point(NamedTuple):
    """A sweep point: task, activation, P, N, status, per estimator (test loss, SE, seconds) and the
    result of every estimator that did not succeed (e.g. {"reweighted": "ess_collapsed"})."""

    task: str
    act: str
    P: int
    N: int
    status: str
    scores: dict
    failed: dict


def load(folder: Path) -> list[Point] | None:
    """Every point of the sweep in `folder`, finished or not (None: no sweep there)."""
    if not (folder / "sweep.toml").is_file():
        return None
    sweep = load_sweep(folder / "sweep.toml")
    ds = merge(sweep, folder)
    points = []
    for point in sweep.points:
        at = ds.isel(dict(zip(ds.status.dims, point.index, strict=True)))
        scores = {
            str(m): tuple(
                float(at[v].sel(estimator=m)) for v in ("test_loss", "test_loss_se", "estimator_seconds")
            )
            for m in ds.estimator.values
        }
        results = {str(m): str(at[f"{m}_result"].values) for m in ds.estimator.values if f"{m}_result" in at}
        c = point.config
        points.append(
            Point(
                c.data.task,
                c.network.activation,
                c.data.n_train,
                c.network.width,
                str(at.status.values),
                scores,
                {m: r for m, r in results.items() if r not in ("success", "")},
            )
        )
    return points


def _estimators(points: list[Point]) -> list[str]:
    """The estimators the sweep ran: those of NAMES in its order, then any other."""
    ran = list(dict.fromkeys(m for p in points for m in p.scores))
    return [m for m in NAMES if m in ran] + [m for m in ran if m not in NAMES]


def panels(points: list[Point], change: bool, x: str = "P") -> list:
    """Per (task, activation), and per P where x is "N": each estimator's test loss (or its change
    against the NNGP's) against x."""

    def group(p: Point) -> tuple:
        return (p.task, p.act) if x == "P" else (p.task, p.act, f"P = {p.P}")

    out = []
    for key in dict.fromkeys(map(group, points)):
        done = sorted((p for p in points if group(p) == key), key=lambda p: getattr(p, x))
        curves = []
        for k, m in enumerate(_estimators(points)):
            if m == "nngp" and change:
                continue
            rows = [p for p in done if np.isfinite(p.scores.get(m, (np.nan,))[0])]
            if not rows:
                continue
            y = np.array([p.scores[m][0] for p in rows])
            se = np.nan_to_num([p.scores[m][1] for p in rows])
            if change:  # relative to the NNGP's loss, which is exact
                base = np.array([p.scores["nngp"][0] for p in rows])
                y, se = y / base - 1, se / base
            style = {"fmt": "ks"} if m == "sampled" else {"fmt": "o-", "color": f"C{k}"}
            xs = [getattr(p, x) for p in rows]
            curves.append((NAMES.get(m, m), xs, y, se if se.any() else None, style))
        ylabel = "test loss / NNGP's - 1" if change else "test loss"
        out.append((", ".join(key), ylabel, curves))
    return out


def table(points: list[Point]) -> list[str]:
    """Markdown: per finished point the test loss ± SE of every estimator and its seconds."""
    present = _estimators(points)
    lines = [
        "| task, φ | P | N | " + " | ".join(NAMES.get(m, m) for m in present) + " |",
        "|---" * (3 + len(present)) + "|",
    ]
    for p in sorted(points, key=lambda p: (p.task, p.act, p.P, p.N)):
        if p.status not in ("ok", "partial"):
            continue
        cells = []
        for m in present:
            loss, se, seconds = p.scores.get(m, (np.nan, np.nan, np.nan))
            if not np.isfinite(loss):
                cells.append(p.failed.get(m, "no answer").replace("_", " ") if np.isfinite(seconds) else "")
            else:
                shown = fmt_se(loss, se) if se > 0 else f"{loss:.4f}" + (" ± ?" if np.isnan(se) else "")
                cells.append(f"{shown} ({seconds:.0f} s)")
        lines.append(f"| {p.task}, {p.act} | {p.P} | {p.N} | " + " | ".join(cells) + " |")
    return lines


def page(runs: Path) -> list[str]:
    lines = [
        "# Learning curves",
        "",
        "The test loss of each estimator's posterior predictive (T21; Pacelli et al.'s ε_g: the mse of",
        "the predictive mean plus the predictive variance, `test_loss` of a run) against the number of",
        "training inputs P, ± the estimator's own SE, with each estimator's wall time on one core of a",
        "shared 2-core machine. Sampled networks (pre-activation HMC, 4 chains) are the ground truth",
        "where they were run. Generated by `python validation/learning_curves.py` from the sweeps of the",
        "example configs named below; a sweep still running shows its finished points. What the",
        "Pacelli sweep shows, with a sampled reference, is discussed on the",
        "[Results](results.md#the-scalar-theory-and-the-full-kernel-theories) page.",
        "",
    ]
    for name, (what, x) in SWEEPS.items():
        ds = load(runs / name)  # the sweep's points
        lines += [f"## {what}", "", f"`examples/{name}.toml`. "]
        if ds is None:
            lines[-1] += "Not run yet."
            lines.append("")
            continue
        done = sum(p.status in ("ok", "partial") for p in ds)
        lines[-1] += f"{done} of {len(ds)} points finished."
        lines.append("")
        if done:
            for change, suffix in ((False, ""), (True, "_change")):
                drawn = [panel for panel in panels(ds, change, x) if panel[2]]  # those with points
                if not drawn:  # only the NNGP: no change to show
                    continue
                figure = DOCS / f"learning_curve_{name}{suffix}.png"
                axes = plots.PanelAxes(X_LABELS[x], logx=True, logy=not change, integer=True)
                plots.line_panels(drawn, figure, axes)
                figure.with_suffix(".pdf").unlink()  # the site shows the PNG
                lines += [f"![{name}{suffix}]({figure.name})", ""]
            lines += table(ds) + [""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=ROOT / "validation" / "sweeps", help="folder of the sweep folders"
    )
    args = parser.parse_args(argv)
    (DOCS / "learning_curves.md").write_text("\n".join(page(args.runs)))
    print(f"wrote {DOCS / 'learning_curves.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
