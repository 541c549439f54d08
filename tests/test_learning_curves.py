"""validation/learning_curves.py: the docs' learning-curve page from a sweep folder, finished or not."""

import importlib.util
from pathlib import Path

import pytest
from reference import gp_test_loss

import critical_kernels as ck
from critical_kernels.experiments.grid import load_sweep
from critical_kernels.experiments.sweep import Serial, run_sweep

_spec = importlib.util.spec_from_file_location(
    "learning_curves", Path(__file__).resolve().parents[1] / "validation" / "learning_curves.py"
)
curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(curves)

CONFIG = """
name = "learning_curve"
[data]
task = "xor"
n_test = 10
dim = 3
[network]
width = 40
kappa = 0.2
[methods]
map = false
perturbative = false
[sweep]
"data.n_train" = [6, 12, 24]
"""


@pytest.mark.slow  # a two-point sweep and a figure: ~15 s
def test_the_page_shows_each_finished_point_with_its_loss_and_names_the_missing(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "learning_curve").mkdir(parents=True)
    config = runs / "learning_curve" / "sweep.toml"
    config.write_text(CONFIG.replace("[6, 12, 24]", "[6, 12]"))
    run_sweep(load_sweep(config), runs / "learning_curve", executor=Serial())
    config.write_text(CONFIG)  # the sweep grew: its third point has not run
    monkeypatch.setattr(curves, "DOCS", tmp_path)
    page = "\n".join(curves.page(runs))
    assert "`examples/learning_curve.toml`. 2 of 3 points finished." in page
    assert "`examples/pacelli_fig1a.toml`. Not run yet." in page
    for P in (6, 12):  # the NNGP's loss (exact: no SE), from the GP predictive directly (T21)
        data = ck.datasets.xor(n_train=P, n_test=10, dim=3, seed=0)
        spec = ck.NetworkSpec(depth=2, width=40, g_w=1.5, g_b=0.1, kappa=0.2)
        C = ck.nngp_kernels(spec, data.X, data.X_test)[-1]
        loss = gp_test_loss(C, data.Y, data.Y_test, 0.2)  # GP predictive of f* (T21)
        row = next(line for line in page.splitlines() if line.startswith(f"| xor, erf | {P} | 40 | "))
        assert row.split(" | ")[3].startswith(f"{loss:.4f} (")
    assert (tmp_path / "learning_curve_learning_curve.png").stat().st_size > 5000
    assert not list(tmp_path.glob("*.pdf"))  # no PDF copies in docs/
    assert not (tmp_path / "learning_curve_learning_curve_change.png").exists()  # the NNGP alone


def test_a_point_without_an_answer_says_why():
    """An estimator that ran and failed shows its result code, not a number; one not run is blank."""
    nan = float("nan")
    scores = {"nngp": (0.5, 0.0, 0.1), "reweighted": (nan, nan, 40.0), "sampled": (nan, nan, nan)}
    point = curves.Point("xor", "erf", 80, 100, "ok", scores, {"reweighted": "ess_collapsed"})
    row = curves.table([point])[-1]
    assert row == "| xor, erf | 80 | 100 | 0.5000 (0 s) | ess collapsed |  |"


def test_a_width_scan_is_drawn_against_n_with_a_panel_per_p():
    """Pacelli's sweep varies N at each P: one panel per (task, φ, P), each curve against N in order."""
    points = [
        curves.Point(
            "mnist", "erf", P, N, "ok", {"nngp": (1.0 / P, 0.0, 0.1), "map": (1.0 / P + 1 / N, 0.01, 1)}, {}
        )
        for P in (300, 100)
        for N in (200, 50)
    ]
    drawn = curves.panels(points, change=False, x="N")
    assert [title for title, _, _ in drawn] == ["mnist, erf, P = 300", "mnist, erf, P = 100"]
    label, xs, ys, se, _ = drawn[1][2][1]
    assert label == "MAP" and xs == [50, 200] and list(ys) == [1 / 100 + 1 / 50, 1 / 100 + 1 / 200]
    assert list(se) == [0.01, 0.01]
