"""Sweeps: grids, the per-point cache, resume after SIGKILL, failed points, local and Dask executors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from reference import gp_test_loss
from typer.testing import CliRunner

import critical_kernels as ck
from critical_kernels.cli import app
from critical_kernels.experiments import (
    Dask,
    Local,
    Serial,
    load_sweep,
    load_sweep_results,
    run_sweep,
    write_sweep_report,
)
from critical_kernels.experiments.executors import executor_named

BASE = """
name = "grid"
[data]
task = "xor"
n_train = 8
n_test = 10
dim = 3
[network]
width = 40
kappa = 0.2
[methods]
map = false
[methods.monte_carlo]
n_samples = 256
"""
THEORY = ["cka", "cka_out", "test_error", "test_mse", "status", "error", "g_c"]  # all but timings


def _write(tmp_path, sweep_table: str, base: str = BASE):
    path = tmp_path / "sweep.toml"
    path.write_text(base + "[sweep]\n" + sweep_table)
    return path


def test_grid_product_and_zipped_axes(tmp_path):
    grid = load_sweep(
        _write(
            tmp_path, '"network.g_w" = [1.0, 2.0, 3.0]\n"network.width,data.n_train" = [[20, 6], [40, 12]]\n'
        )
    )
    assert grid.shape == (3, 2) and len(grid.points) == 6
    assert [a.name for a in grid.axes] == ["g_w", "width"]
    point = grid.points[5]
    assert point.index == (2, 1)
    assert (point.config.network.g_w, point.config.network.width, point.config.data.n_train) == (3.0, 40, 12)
    assert len({p.key for p in grid.points}) == 6  # distinct configs, distinct cache keys


def test_sweeps_over_option_table_fields(tmp_path):
    """Dotted fields of the option tables are swept like any other field."""
    axes = '"methods.solver.max_steps" = [50, 100]\n"methods.importance.n_samples" = [256, 512]'
    grid = load_sweep(_write(tmp_path, axes))
    assert [a.name for a in grid.axes] == ["max_steps", "n_samples"] and len(grid.points) == 4
    last = grid.points[3].config.methods
    assert last.solver.max_steps == 100 and last.importance.n_samples == 512 != last.cumulant.n_samples
    assert len({p.key for p in grid.points}) == 4
    with pytest.raises(ck.InputError, match=r"sweep point \(max_steps=0\): methods.solver.max_steps"):
        load_sweep(_write(tmp_path, '"methods.solver.max_steps" = [0]\n'))


def test_grid_errors_name_the_point_and_field(tmp_path):
    with pytest.raises(ck.InputError, match=r"sweep point \(depth=0\): network.depth"):
        load_sweep(_write(tmp_path, '"network.depth" = [1, 0]\n'))
    with pytest.raises(ck.InputError, match="sweep.network.width: must be a non-empty list"):
        load_sweep(_write(tmp_path, '"network.width" = 50\n'))
    with pytest.raises(ck.InputError, match="sweep.network.depth: a value is repeated"):
        load_sweep(_write(tmp_path, '"network.depth" = [1, 2, 1]\n'))
    with pytest.raises(ck.InputError, match="one per field"):
        load_sweep(_write(tmp_path, '"network.width,data.n_train" = [[20, 6], [40]]\n'))
    with pytest.raises(ck.InputError, match=r"\[sweep\] table"):
        load_sweep(_write(tmp_path, ""))
    with pytest.raises(ck.InputError, match=r"executor: pass Serial\(\), Local\(workers\) .*not 'serial'"):
        run_sweep(load_sweep(_write(tmp_path, '"network.depth" = [1]\n')), tmp_path / "o", executor="serial")
    with pytest.raises(ck.InputError, match="--executor: must be one of local, dask, serial"):
        executor_named("ray")
    with pytest.raises(ck.InputError, match="--workers: must be at least 1"):
        Local(workers=0)


def test_merged_values_equal_independent_nngp_and_failed_point_is_recorded(tmp_path):
    """Two good points and one whose data file does not exist: the sweep finishes, records the
    failure, and the good points' NNGP CKA equals a direct computation."""
    base = BASE.replace('task = "xor"', 'task = "xor"\npath = "missing.npz"')
    path = _write(tmp_path, '"data.task" = ["xor", "file"]\n"network.depth" = [1, 2]\n', base)
    ds = run_sweep(load_sweep(path, ["methods.perturbative=false"]), tmp_path / "out", executor=Serial())
    assert ds.status.values.tolist() == [["ok", "ok"], ["failed", "failed"]]
    assert any((tmp_path / "out" / "figures").glob("*.png"))  # run_sweep writes the figures and report
    assert "missing.npz" in str(ds.error.values[1, 0])
    data = ck.datasets.xor(n_train=8, n_test=10, dim=3, seed=0)
    for j, depth in enumerate((1, 2)):
        spec = ck.NetworkSpec(depth=depth, width=40, g_w=1.5, g_b=0.1, kappa=0.2)
        expected = ck.cka_layers(ck.nngp_kernels(spec, data.X, data.X_test), data.Y)
        got = ds.cka.sel(estimator="nngp").values[0, j]
        np.testing.assert_allclose(got[: depth + 1], expected, rtol=1e-12)
        assert np.isnan(got[depth + 1 :]).all()  # padded past the point's depth
        assert ds.cka_out.sel(estimator="nngp").values[0, j] == expected[-1]
    assert np.isnan(ds.cka_out.values[1]).all()
    # each estimator's wall time, adding up to the point's (none for a failed point)
    per_estimator = ds.estimator_seconds.values
    assert np.all(per_estimator[0] > 0) and np.isnan(per_estimator[1]).all()
    np.testing.assert_allclose(per_estimator[0].sum(axis=-1), ds.seconds.values[0], rtol=1e-12)
    assert xr.open_dataset(tmp_path / "out" / "sweep.nc", engine="scipy").load().identical(ds)


def test_points_without_kernels_merge_to_the_same_sweep(tmp_path):
    """`sweep --no-kernels`: every stored point lacks its kernel matrices, the merged sweep equals the
    one that kept them, and --resume finds its points finished."""
    path = _write(tmp_path, '"network.depth" = [1, 2]\n')
    nngp_only = ["methods.perturbative=false"]
    full = run_sweep(load_sweep(path, nngp_only), tmp_path / "full", executor=Serial())
    args = [
        "sweep",
        str(path),
        "--set",
        nngp_only[0],
        "--out",
        str(tmp_path / "slim"),
        "--executor",
        "serial",
    ]
    assert CliRunner().invoke(app, [*args, "--no-kernels"]).exit_code == 0
    slim = xr.open_dataset(tmp_path / "slim" / "sweep.nc", engine="scipy").load()
    xr.testing.assert_identical(_theory(slim), _theory(full))
    for point in load_sweep(path, nngp_only).points:
        kept = xr.open_dataset(tmp_path / "full" / "points" / f"{point.key}.nc", engine="scipy")
        dropped = xr.open_dataset(tmp_path / "slim" / "points" / f"{point.key}.nc", engine="scipy")
        assert set(kept.data_vars) - set(dropped.data_vars) == {"kernel"}
    again = CliRunner().invoke(app, [*args, "--no-kernels", "--resume"])
    assert again.exit_code == 0 and "0 computed, 2 cached" in again.output


@pytest.mark.slow  # two sweep points with the first-order predictive and the figure (~20 s)
def test_learning_curve_over_p_at_fixed_alpha(tmp_path):
    """P and N swept together: the merged test loss of the NNGP equals Pacelli et al.'s loss computed
    directly from the GP predictive, and the learning-curve figure is drawn."""
    path = _write(tmp_path, '"network.width,data.n_train" = [[20, 6], [40, 12]]\n')
    ds = run_sweep(load_sweep(path), tmp_path / "out", executor=Serial())
    assert (tmp_path / "out" / "figures" / "learning_curve.png").stat().st_size > 5000
    for j, P in enumerate((6, 12)):
        data = ck.datasets.xor(n_train=P, n_test=10, dim=3, seed=0)
        spec = ck.NetworkSpec(depth=2, width=20 * (j + 1), g_w=1.5, g_b=0.1, kappa=0.2)  # config defaults
        C = ck.nngp_kernels(spec, data.X, data.X_test)[-1]
        loss = gp_test_loss(C, data.Y, data.Y_test, 0.2)  # GP predictive of f* (T21)
        assert ds.test_loss.sel(estimator="nngp").values[j] == pytest.approx(loss, rel=1e-10)
        assert ds.test_loss_se.sel(estimator="perturbative").values[j] > 0  # first order: Monte Carlo


def _theory(ds):
    return ds[THEORY]


@pytest.mark.slow
def test_sigkill_midway_then_resume_equals_uninterrupted(tmp_path):
    """Kill the sweep process group with SIGKILL after two points, truncate one finished file,
    resume: the result is bitwise the uninterrupted sweep's, each point cached exactly once."""
    path = _write(tmp_path, '"network.g_w" = [0.8, 1.2, 1.6, 2.0, 2.4, 2.8]\n"network.depth" = [1, 2]\n')
    n_points = len(load_sweep(path).points)
    cli = [sys.executable, "-m", "critical_kernels.cli", "sweep", str(path), "--workers", "1"]
    reference = subprocess.run([*cli, "--out", str(tmp_path / "ref")], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([*cli, "--out", str(out)], start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((out / "points").glob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.with_suffix(".nc") for p in (out / "points").glob("*.json"))  # manifest written last
    assert 2 <= len(finished) < n_points and not (out / "sweep.nc").exists()
    blob = finished[0].read_bytes()
    finished[0].write_bytes(blob[: len(blob) // 2])  # a truncated cache file must be recomputed

    resumed = subprocess.run([*cli, "--out", str(out), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_points - len(finished) + 1} computed, {len(finished) - 1} cached" in resumed.stdout
    manifests = list((out / "points").glob("*.json"))
    assert len(manifests) == n_points and not list((out / "points").glob(".*"))
    assert all(json.loads(m.read_text())["bytes"] > 0 for m in manifests)
    ref, got = load_sweep_results(tmp_path / "ref"), load_sweep_results(out)
    assert _theory(got).identical(_theory(ref))
    assert (got.status.values == "ok").all()


@pytest.mark.slow  # three CLI processes (~40 s); the demo's Ctrl-C line is checked in the fast tier
def test_ctrl_c_keeps_finished_points_and_says_how_to_resume(tmp_path):
    """SIGINT to the sweep (its worker still busy): exit 130 at once with one line naming the points
    kept and the resume command; that command finishes the sweep from the cache."""
    path = _write(tmp_path, '"network.g_w" = [0.8, 1.2, 1.6, 2.0, 2.4, 2.8]\n')
    out = tmp_path / "s"
    cli = [sys.executable, "-m", "critical_kernels.cli", "sweep", str(path), "--workers", "1"]
    proc = subprocess.Popen(
        [*cli, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while len(list((out / "points").glob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the main process only, as a terminal's Ctrl-C reaches it first
    _, stderr = proc.communicate(timeout=60)  # the running worker is stopped, not waited for
    kept = len(list((out / "points").glob("*.json")))
    assert proc.returncode == 130, stderr
    assert f"interrupted: {kept} of 6 points kept in {out}" in stderr and stderr.count("\n") == 1, stderr
    resume = stderr.split("continue with: ")[1].split()
    assert resume[:2] == ["critical-kernels", "sweep"] and resume[-1] == "--resume"
    resumed = subprocess.run([*cli, *resume[3:]], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - kept} computed, {kept} cached" in resumed.stdout


@pytest.mark.slow
def test_dask_local_cluster_equals_local_executor(tmp_path):
    """Two Dask workers and two local worker processes give identical numbers, sampled included
    (same seeds, one core per worker)."""
    pytest.importorskip("dask.distributed")
    base = BASE.replace(
        "map = false\n[methods.monte_carlo]",
        'map = true\nsampled = true\nsampler = "mala"\n'
        + "[methods.chains]\nchains = 2\nwarmup = 50\nn_samples = 60\nthin = 2\n[methods.monte_carlo]",
    )
    grid = load_sweep(_write(tmp_path, '"network.g_w" = [1.0, 2.0]\n', base))
    local = run_sweep(grid, tmp_path / "local", executor=Local(workers=2))
    dask = run_sweep(grid, tmp_path / "dask", executor=Dask(workers=2))
    assert (local.status.values == "ok").all()
    assert _theory(dask).identical(_theory(local))
    assert np.isfinite(local.cka_out.sel(estimator="sampled").values).all()
    write_sweep_report(tmp_path / "local", local)  # theory against sampled: figure and table
    assert (tmp_path / "local" / "figures" / "theory_vs_sampled.png").exists()
    report = (tmp_path / "local" / "report.md").read_text()
    assert "## Theory against sampled networks" in report
    assert report.count("| g_w=") == 8  # 2 points x 2 theories x 2 layers


@pytest.mark.slow  # four first-order points (~20 s); the CLI sweep itself: the --no-kernels test
def test_cli_sweep_report_and_exit_status(tmp_path):
    """The sweep command writes the folder and figures; a failed point gives exit status 1;
    report rebuilds the sweep report."""
    path = _write(tmp_path, '"network.width" = [20, 80]\n"network.g_w_over_g_c" = [0.5, 2.0]\n')
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "s"), "--executor", "serial"])
    assert result.exit_code == 0, result.output
    assert "4 computed, 0 cached, 0 failed" in result.output
    for name in (
        "sweep.nc",
        "sweep.toml",
        "report.md",
        "report.html",
        "figures/cka_vs_width.png",
        "figures/cka_vs_g_w_over_g_c.png",
        "figures/delta_cka_vs_inv_width.png",
    ):
        assert (tmp_path / "s" / name).exists(), name
    (tmp_path / "s" / "report.md").unlink()
    assert runner.invoke(app, ["report", str(tmp_path / "s")]).exit_code == 0
    assert (tmp_path / "s" / "report.md").exists()
    failing = _write(tmp_path, '"data.n_train" = [8, 1]\n')
    result = runner.invoke(app, ["sweep", str(failing), "--out", str(tmp_path / "f"), "--executor", "serial"])
    assert result.exit_code == 2 and "data.n_train" in result.output  # invalid grid: nothing runs
    base = BASE.replace('task = "xor"', 'task = "file"')
    broken = _write(tmp_path, '"network.depth" = [1]\n', base)
    result = runner.invoke(app, ["sweep", str(broken), "--out", str(tmp_path / "b"), "--executor", "serial"])
    assert result.exit_code == 1 and "1 failed" in result.output


def test_a_point_whose_estimator_gave_no_answer_is_partial_not_ok(tmp_path):
    """P = 8, N = 3, kappa = 0.01: the MAP iterate leaves the positive-definite cone (its CKA is NaN);
    that point is "partial" with the MAP's message as its error, never "ok" next to a NaN."""
    base = BASE.replace("map = false", "map = true\nperturbative = false")
    base = base.replace("kappa = 0.2", "kappa = 0.01")
    path = _write(tmp_path, '"network.width" = [3]\n', base)
    ds = run_sweep(load_sweep(path), tmp_path / "out", executor=Serial())
    assert ds.status.values.tolist() == ["partial"]
    assert np.isnan(ds.cka_out.sel(estimator="map").values).all()
    assert "map:" in str(ds.error.values[0]) and "positive definiteness" in str(ds.error.values[0])
    # run_sweep itself writes the report and figures (from Python as from the CLI)
    assert "partial (an estimator without an answer) 1" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "report.html").exists()
