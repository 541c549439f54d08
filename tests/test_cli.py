"""Every CLI command once; bad input exits 2 with one line and no traceback."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from critical_kernels.cli import app
from critical_kernels.experiments.labels import fmt_se

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.toml"

runner = CliRunner()


def test_criticality_command_prints_g_c():
    result = runner.invoke(app, ["criticality", "--activation", "erf", "--g-b", "0.1"])
    assert result.exit_code == 0, result.output
    assert "1.552117" in result.output and "critical" in result.output


def test_criticality_with_g_w_reports_phase():
    result = runner.invoke(app, ["criticality", "--g-b", "0.1", "--g-w", "3.0"])
    assert result.exit_code == 0 and "chaotic" in result.output


def test_demo_runs_and_writes(tmp_path):
    result = runner.invoke(
        app, ["demo", "--out", str(tmp_path), "--depth", "1"], env={"COLUMNS": "80"}, terminal_width=80
    )
    assert result.exit_code == 0, result.output
    assert (
        "digits 0 vs 3" in result.output
        and "xor" in result.output
        and "MAP (adaptive importance)" in result.output
    )
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output  # fits a terminal
    assert "…" not in result.output  # no truncated numbers
    assert f"report: {tmp_path / 'report.md'}" in result.output.replace("\n", "")
    rows = (tmp_path / "cka.csv").read_text().strip().splitlines()
    assert len(rows) == 19 and rows[0].startswith("task,estimator,g_w")  # 2 tasks x 3 gains x 3 kernels
    assert rows[0].endswith("test_error,cka_se_0,cka_se_1")  # depth 1: the fast tier's
    assert all(len(row.split(",")) == 5 + 2 + 1 + 2 for row in rows)  # 5 labels, C0, C1, test error, SEs
    se = np.array([[float(v) for v in row.split(",")[-2:]] for row in rows[1:]])
    assert np.all(se[0::3] == 0) and np.all(se[1::3, 1:] > 0)  # NNGP exact; Monte Carlo first order
    words = " ".join(result.output.split())  # the footer wraps at 80 columns
    bound = float(words.split("SE of every CKA above <= ")[1].split(";")[0])
    assert se.max() <= bound <= 1.1 * se.max()  # rounded up to two significant digits
    for name in ("figures/cka_per_layer.png", "figures/cka_vs_g_w_over_g_c.png", "sweep.nc", "report.md"):
        assert (tmp_path / name).stat().st_size > 500, name
    for task in ("digits", "xor"):  # a run folder with kernel heat maps per task at g_c
        for name in ("results.nc", "report.html", "figures/kernels.png", "meta.json"):
            assert (tmp_path / f"{task}_at_g_c" / name).exists(), (task, name)
    report = (tmp_path / "report.md").read_text()  # every layer, the per-layer figure, the task reports
    for line in rows[1:]:
        task, label, _, ratio, _, *ckas = line.split(",")
        ses = [float(v) for v in ckas[-2:]]
        assert f"| {float(ratio):g} | " in report and f" | {label} | " in report
        assert fmt_se(float(ckas[1]), ses[1]) in report  # the last layer's CKA ± SE
    assert "| C⁽⁰⁾ | C⁽¹⁾ | test error |" in report
    assert "![CKA per layer](figures/cka_per_layer.png)" in report
    assert "(digits_at_g_c/report.html)" in report and "(xor_at_g_c/report.html)" in report
    task_report = (tmp_path / "digits_at_g_c" / "report.md").read_text()
    assert task_report.startswith("# demo: digits 0 vs 3 at g_c") and "^(" not in task_report + report
    refused = runner.invoke(app, ["demo", "--out", str(tmp_path), "--depth", "1"])  # never recompute silently
    assert refused.exit_code == 2 and "--resume" in refused.output and "--force" in refused.output
    assert len(refused.output.strip().splitlines()) == 1, refused.output


@pytest.mark.slow
def test_demo_resume_reproduces_the_table(tmp_path):
    first = runner.invoke(app, ["demo", "--out", str(tmp_path), "--depth", "2"])
    assert first.exit_code == 0, first.output
    rows = (tmp_path / "cka.csv").read_text().splitlines()
    again = runner.invoke(app, ["demo", "--out", str(tmp_path), "--depth", "2", "--resume"])
    assert again.exit_code == 0 and (tmp_path / "cka.csv").read_text().splitlines() == rows


def test_bad_input_exits_2_with_one_line():
    for args in (["criticality", "--activation", "swish"], ["criticality", "--g-b", "-1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output


def test_se_summary_bounds_the_known_ses_and_counts_the_unknown():
    from critical_kernels.cli import _se_summary

    assert _se_summary(np.array([0.0, 0.00951, 0.002])).endswith("<= 0.0096")  # rounded up, not 0.0095
    assert _se_summary(np.array([0.0, 0.0149, np.nan, np.nan])).endswith("<= 0.015 (2 unknown)")
    assert _se_summary(np.zeros(3)).endswith("<= 0")  # exact estimators only


def test_demo_tables_fit_80_columns_at_the_default_depth():
    """The default demo (L = 4, the longest estimator label) renders in 80 columns untruncated."""
    from rich.console import Console

    from critical_kernels.cli import _demo_tables

    rows = [
        (task, 1.0, ratio, 0.612345, label, [0.123456] * 5, 0.25, [0.001] * 5)
        for task in ("digits 0 vs 3", "xor")
        for ratio in (0.5, 1.0, 2.0)
        for label in ("NNGP", "first order", "MAP (second cumulant)")
    ]
    console = Console(width=80, record=True)
    for table in _demo_tables(rows, depth=4):
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    assert text.count("0.123") == 2 * 3 * 3 * 5  # every CKA printed in full


def test_run_exits_3_when_an_estimator_has_no_answer(tmp_path):
    # two Anderson steps per stage cannot converge: the MAP has no answer, the run folder is still written
    sets = ["methods.sampled=false", "methods.perturbative=false", "methods.solver.max_steps=2"]
    args = ["run", str(TINY), "--out", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "no answer from: map" in result.output and "max_steps" in result.output
    assert (tmp_path / "run" / "results.nc").exists()
    ok = runner.invoke(
        app, ["run", str(TINY), "--out", str(tmp_path / "ok")] + ["--set", sets[0], "--set", sets[1]]
    )
    assert ok.exit_code == 0, ok.output


@pytest.mark.slow  # the MAP of L = 3 relu at P = N = 200: ~5 minutes on one idle core
def test_deep_relu_config_converges_with_default_settings(tmp_path):
    """Issue 36's case: XOR, relu, L = 3, P = N = 200, g_w = 2, g_b = 0.1, kappa = 0.1, every MAP setting
    at its default (examples/xor_relu_deep.toml). With the earlier fixed tolerance (relative residual 1e-8)
    it ended max_steps_reached at the last stage; the rule tied to the map's Monte Carlo error
    (0.01 / sqrt(M)) converges through every stage, with finite SEs from its replicas."""
    import xarray as xr

    config = TINY.parent / "xor_relu_deep.toml"
    out = tmp_path / "run"
    args = ["run", str(config), "--out", str(out), "--set", "methods.perturbative=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out / "results.nc")
    assert ds.attrs["map_result"] == "success" and ds.attrs["map_se_count"] == 5
    assert ds.attrs["map_residual"] <= ds.attrs["map_stopping_rtol"]
    assert list(ds.attrs["map_widths"])[-1] == 200  # annealed down to the network's own width
    se = ds.cka_se.sel(estimator="map").values[1:]
    adaptation = (ds.cka.sel(estimator="map") - ds.cka.sel(estimator="nngp")).values[1:]
    assert np.all(np.isfinite(se) & (se > 0)), se
    assert np.all(adaptation > 10 * se), (adaptation, se)  # measured 0.0095 / 0.025 / 0.058, SE <= 4.4e-4


def test_demo_ctrl_c_names_the_points_kept_and_the_resume_command(tmp_path, monkeypatch):
    import critical_kernels.cli as cli

    def interrupted_demo(out, settings, *, resume, force, on_point):
        grid = cli.load_sweep(cli.demo_sweep(settings))
        on_point(grid.points[0], "cached")
        on_point(grid.points[1], "ok")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_demo", interrupted_demo)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--depth", "2"])
    assert result.exit_code == 130
    assert f"interrupted: 2 of 6 points kept in {tmp_path / 'd'}" in result.output
    assert "continue with: critical-kernels demo --out" in result.output and "--depth 2" in result.output
    assert result.output.rstrip().endswith("--resume")


def test_run_tables_fit_80_columns_without_cutting_numbers():
    from rich.console import Console

    from critical_kernels.cli import _layer_tables

    labels = ["NNGP", "first order", "MAP (second cumulant)", "sampled (HMC, pre-activations)"]
    cells = [[f"0.{l}12345 ± 0.000{l + 1}" for l in range(5)] for _ in labels]
    console = Console(width=80, record=True)
    for table in _layer_tables("tiny: CKA per layer", labels, cells, ["0.125"] * 4, console.width):
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    for l in range(5):
        assert text.count(f"0.{l}12345 ± 0.000{l + 1}") == 4, text  # every cell, whole
    assert text.count("0.125") == 4


def test_an_unmet_tolerance_is_one_warning_line_not_a_python_warning(tmp_path):
    sets = ["methods.sampled=false", "methods.map=false", "methods.monte_carlo.rtol=1e-9"]
    sets += ["methods.monte_carlo.n_samples=256", "methods.monte_carlo.max_samples=512"]
    args = ["run", str(TINY), "--out", str(tmp_path / "run")] + [a for s in sets for a in ("--set", s)]
    with warnings.catch_warnings(record=True) as shown:  # what Python would print on stderr
        warnings.simplefilter("always")
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not [w for w in shown if "rtol" in str(w.message)], [str(w.message) for w in shown]
    words = " ".join(result.output.split())  # the console wraps at its width
    assert words.count("rtol") == 1 and "warning: the first order estimate: the SE of its CKA" in words, words
