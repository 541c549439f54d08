"""Experiment configs, runs, run folders, reports, and the run/report commands."""

import json
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import critical_kernels as ck
from critical_kernels.cli import app
from critical_kernels.estimators import (
    LinearExactInfo,
    MAPInfo,
    PerturbativeInfo,
    ReweightedInfo,
    SamplingInfo,
)
from critical_kernels.estimators.options import as_dict
from critical_kernels.experiments import (
    ExperimentConfig,
    load_config,
    load_results,
    load_sweep,
    run,
    write_run,
)
from critical_kernels.experiments.config import MethodsConfig
from critical_kernels.experiments.io import atomic_write, resolved_toml
from critical_kernels.experiments.labels import estimator_label
from critical_kernels.experiments.runner import derived

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.toml"
FAST = [
    *(f"methods.{table}.n_samples=512" for table in ("monte_carlo", "importance", "cumulant")),
    "methods.chains.warmup=100",
    "methods.chains.n_samples=400",
]


def test_the_chains_checkpoint_is_not_a_config_setting():
    with pytest.raises(ck.InputError, match="methods.chains.checkpoint: not a config setting.*--resume"):
        load_config(TINY, ["methods.chains.checkpoint='chains.npz'"])


def test_config_overrides_and_errors_name_the_field(tmp_path):
    cfg = load_config(TINY, ["network.width=80", "methods.sampler='hmc'", "data.classes=[1, 7]"])
    assert cfg.network.width == 80 and cfg.methods.sampler == "hmc" and cfg.data.classes == (1, 7)
    with pytest.raises(ck.InputError, match=r"network.activation: must be one of .*'erf'.*got 'swish'"):
        load_config(TINY, ["network.activation=swish"])
    with pytest.raises(ck.InputError, match="network.depth"):
        load_config(TINY, ["network.depth=0"])
    with pytest.raises(ck.InputError, match="network.widht: not a field of network; did you mean 'width'\\?"):
        load_config(TINY, ["network.widht=3"])
    with pytest.raises(ck.InputError, match="methods.linear_exact: needs network.activation = 'linear'"):
        load_config(TINY, ["methods.linear_exact=true"])  # tiny.toml is erf
    with pytest.raises(ck.InputError, match="methods.hmc.space: must be one of .*'preactivation'"):
        load_config(TINY, ["methods.hmc.space=latent"])
    with pytest.raises(ck.InputError, match="methods.reweighting.n_samples: must be an integer >= 1, got 0"):
        load_config(TINY, ["methods.reweighting.n_samples=0"])
    bad = r"methods.reweighting.tempering: must be TemperedSMC\(...\) or None, got 'sometimes'"
    with pytest.raises(ck.InputError, match=bad):
        load_config(TINY, ["methods.reweighting.tempering=sometimes"])
    (tmp_path / "bad.toml").write_text("[network\nwidth = 3")
    with pytest.raises(ck.InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_config_option_tables_parse_into_the_options_and_round_trip(tmp_path):
    """[methods.solver] and [methods.reweighting.tempering] are the options objects themselves; the
    flat keys of tiny.toml set their fields; model_dump_json / model_validate_json and the resolved
    TOML give the same config back."""
    path = tmp_path / "tables.toml"
    path.write_text(
        TINY.read_text()
        + "[methods.solver]\nmax_steps = 50\ndamping = 0.3\nwidths = [500, 150, 50]\n"
        + "[methods.reweighting]\nn_samples = 1024\n"
        + "[methods.reweighting.tempering]\nn_particles = 32\nalways = true\n"
    )
    cfg = load_config(path)
    m = cfg.methods
    assert m.solver == ck.Anderson(max_steps=50, damping=0.3, widths=(500, 150, 50))
    assert m.reweighting == ck.Reweighting(
        n_samples=1024, tempering=ck.TemperedSMC(n_particles=32, always=True)
    )
    assert m.monte_carlo == ck.MonteCarlo(2048, rtol=None)  # tiny.toml: n_samples = 2048, rtol = 0
    assert m.cumulant == ck.SecondCumulant(2048, rtol=None)
    assert (
        m.chains == ck.Chains(chains=4, warmup=300, n_samples=2000, thin=10)
        and m.sampler_options == ck.HMC()  # tiny.toml: sampler = "hmc"
    )
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.model_dump_json() == cfg.model_dump_json()
    assert load_config(tomllib.loads(resolved_toml(cfg, derived(cfg)))) == cfg  # config.toml of a run
    off = load_config(TINY, ["methods.reweighting.tempering=false"])
    assert off.methods.reweighting.tempering is None
    assert ExperimentConfig.model_validate_json(off.model_dump_json()) == off


def test_config_defaults_are_the_runs_of_before_and_flat_keys_of_0_5_name_their_tables():
    """The defaults of [methods] are those of 0.6 (2000 steps per chain, 4096 reweighted networks,
    rtol 0.02, max_samples 131072, 16 leapfrog steps); a flat key of a 0.6 config fails with one line
    naming the table field that replaced it."""
    m = MethodsConfig()
    assert m.monte_carlo == ck.MonteCarlo(4096, rtol=0.02, max_samples=131072)
    assert m.importance == ck.ImportanceSampling(4096, rtol=0.02, max_samples=131072)
    assert m.reweighting == ck.Reweighting(n_samples=4096, tempering=ck.TemperedSMC(n_particles=128))
    assert m.chains == ck.Chains(chains=4, warmup=1000, n_samples=2000, thin=10) and m.hmc.n_leapfrog == 16
    old = {
        "samples=400": "methods.samples: a flat key of configs before 0.7; set methods.chains.n_samples "
        "instead",
        "tempering='never'": "methods.tempering: a flat key of configs before 0.7; set "
        "methods.reweighting.tempering (false: never; {always = true}: always) instead",
    }
    for override, line in old.items():
        with pytest.raises(ck.InputError) as err:
            load_config(TINY, [f"methods.{override}"])
        assert str(err.value) == line
    # the same rule from a config as from Python: any n_samples >= 1 (0.6 configs wanted a multiple of 16)
    assert load_config(TINY, ["methods.reweighting.n_samples=100"]).methods.reweighting == ck.Reweighting(
        n_samples=100
    )


def test_config_typos_and_conflicts_fail_with_one_line():
    with pytest.raises(ck.InputError) as err:
        load_config(TINY, ["methods.solver.max_step=3"])
    assert str(err.value) == "methods.solver.max_step: unknown field of Anderson; did you mean 'max_steps'?"
    with pytest.raises(ck.InputError, match="methods.chains.n_sample: .*did you mean 'n_samples'"):
        load_config(TINY, ["methods.chains.n_sample=512"])
    with pytest.raises(ck.InputError, match="netwrk: .*did you mean 'network'"):
        load_config(TINY, ["netwrk.width=3"])
    with pytest.raises(ck.InputError, match="methods.mapp: not a field of methods; did you mean 'map'"):
        load_config(TINY, ["methods.mapp=true"])
    with pytest.raises(ck.InputError, match="methods.reweighting.tempering.n_particles: must be an integer"):
        load_config(TINY, ["methods.reweighting.tempering.n_particles=2.5"])


def test_every_info_field_reaches_the_attrs_meta_json_and_the_report(tmp_path):
    """Every field of every estimator's info is an E_<field> attr of the run (or, for an array of two
    or more dimensions, a shape in meta.json's "arrays"), and every E_* attr reaches meta.json's
    "diagnostics" and report.md."""
    cfg = load_config(
        {
            "data": {"task": "xor", "n_train": 6, "n_test": 2, "dim": 3},
            "network": {"depth": 1, "width": 8, "activation": "linear", "kappa": 0.1},
            "methods": {
                **dict(perturbative=True, map=True, reweighted=True, linear_exact=True, sampled=True),
                **{table: dict(n_samples=256, rtol=0) for table in ("monte_carlo", "importance", "cumulant")},
                "reweighting": dict(n_samples=256, tempering=False),
                "sampler": "hmc",
                "chains": dict(chains=2, warmup=100, n_samples=200, thin=2),
            },
        }
    )
    ds = run(cfg, progress=False)
    write_run(ds, cfg, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    report = (tmp_path / "r" / "report.md").read_text()
    arrays = json.loads(ds.attrs["arrays"])
    infos = {
        "perturbative": PerturbativeInfo,
        "map": MAPInfo,
        "reweighted": ReweightedInfo,
        "linear_exact": LinearExactInfo,
        "sampled": SamplingInfo,
    }
    assert list(ds.estimator.values) == ["nngp", *infos]
    for name, info in infos.items():
        common = (
            "result",
            "method",
            "options",
            "approximation",
            "fallback",
            "message",
            "se_kind",
            "se_count",
        )
        for field in (*common, *info._fields):
            key = f"{name}_{field}"
            assert (key in ds.attrs) != (key in arrays), key  # an attr, or a listed array
            assert key in (meta["diagnostics"] if key in ds.attrs else meta["arrays"]), key
            assert f"- {key}: " in report, key
    estimator_keys = [k for k in ds.attrs if k.startswith(tuple(f"{name}_" for name in infos))]
    assert estimator_keys and all(k in meta["diagnostics"] and f"- {k}: " in report for k in estimator_keys)
    assert meta["arrays"] == arrays and arrays["map_conj_kernels"] == [2, 8, 8]
    hmc = {"options": "HMC", **as_dict(cfg.methods.hmc)}  # options as their table, in attrs and meta.json
    assert json.loads(ds.attrs["sampled_sampler"]) == hmc and meta["diagnostics"]["sampled_options"] == hmc
    assert ds.attrs["map_method"] == "exact Gaussian" and ds.attrs["map_approximation"] == 0
    assert ds.attrs["reweighted_saddle_ok"] in (0, 1) and ds.attrs["sampled_result"] in (
        "success",
        "diagnostics_failed",
    )
    again = load_results(tmp_path / "r")
    assert [k for k in again.attrs if k in estimator_keys] == estimator_keys  # results.nc keeps them all


def test_run_collects_every_method():
    cfg = load_config(TINY, FAST)
    ds = run(cfg)
    assert list(ds.estimator.values) == ["nngp", "perturbative", "map", "sampled"]
    data = ck.datasets.xor(n_train=10, n_test=20, dim=4, seed=0)
    spec = ck.NetworkSpec(depth=1, width=50, g_w=1.5, g_b=0.1, kappa=0.1)
    np.testing.assert_allclose(
        ds.cka.values[0], ck.cka_layers(ck.nngp_kernels(spec, data.X, data.X_test), data.Y), rtol=1e-12
    )
    assert ds.attrs["map_result"] == "success" and ds.kernel.shape == (4, 2, 30, 30)
    assert ds.cka_se.values[3, 1] > 0 and 0 <= ds.test_error.sel(estimator="sampled") <= 1
    # one kernel each: the predictive is the kernel predictor's (T21); the MAP's SE from its replicas
    for name in ("nngp", "map"):
        assert ds.test_mse.sel(estimator=name) == ds.test_mse_plugin.sel(estimator=name)
    assert ds.test_mse_se.sel(estimator="nngp") == 0 and ds.test_mse_se.sel(estimator="map") > 0
    assert (
        ds.f_test.shape == ds.f_test_var.shape == (4, 20, 1) and ds.test_loss_se.sel(estimator="sampled") > 0
    )
    loss = ds.test_mse + ds.f_test_var.mean(dim=("test", "output"))  # Pacelli et al.'s loss
    np.testing.assert_allclose(ds.test_loss.values, loss.values, rtol=1e-12)


@pytest.mark.slow  # statistical, every theory estimator (~16 s); the estimator alone: test_reweighted
def test_run_reweighted_against_the_exact_linear_posterior():
    """A linear run with every theory estimator and the exact posterior (T18) as reference: the
    reweighted CKA (T17) is within 3 of its SEs of the exact one in every layer, the MAP is not,
    and every estimator's CKA SE is what its kind says (exact: 0; Monte Carlo: positive)."""
    cfg = load_config(
        TINY,
        [
            "network.activation='linear'",
            "network.depth=2",
            "network.width=12",
            "data.n_train=10",
            "data.n_test=2",
            "methods.sampled=false",
            "methods.reweighted=true",
            "methods.linear_exact=true",
            "methods.reweighting.n_samples=4096",
        ],
    )
    ds = run(cfg, progress=False)
    names = list(ds.estimator.values)
    assert names == ["nngp", "perturbative", "map", "reweighted", "linear_exact"]
    se = ds.cka_se.sel(layer=[1, 2])
    assert np.all(se.sel(estimator=["nngp", "perturbative", "map", "linear_exact"]) == 0)  # exact for linear
    assert np.all(se.sel(estimator="reweighted") > 0)
    exact = ds.cka.sel(estimator="linear_exact", layer=[1, 2])
    adaptation = exact - ds.cka.sel(estimator="nngp", layer=[1, 2])
    z = (ds.cka.sel(estimator="reweighted", layer=[1, 2]) - exact) / se.sel(estimator="reweighted")
    assert np.all(np.abs(z) < 3), z.values
    # the saddle point misses O(alpha) of the adaptation here (P/N = 0.8): measured z = -5.2 / -4.4
    # (reweighted: 0.5 / 0.6), so this test tells the two apart
    z_map = (ds.cka.sel(estimator="map", layer=[1, 2]) - exact) / se.sel(estimator="reweighted")
    assert np.all(np.abs(z_map) > 3) and np.all(np.abs(adaptation) > 0), z_map.values
    assert ds.attrs["reweighted_result"] == "success" and ds.attrs["reweighted_ess"] > 1000


@pytest.mark.slow  # 14 s; the ladder's own tests (test_smc.py) stay in the fast tier
def test_run_with_tempered_smc_records_its_ladder(tmp_path):
    """methods.tempering = "always": the reweighted kernels come from tempered SMC; the run records
    its method, ladders and final ESS, labels it, writes them to results.nc, and the CKA agrees with the
    exact linear posterior (T18) within 4 SE (8 runs: a t_7 SE)."""
    overrides = ["network.activation='linear'", "network.depth=2", "network.width=12", "data.n_train=10"]
    overrides += ["data.n_test=2", "methods.sampled=false", "methods.perturbative=false"]
    overrides += ["methods.reweighted=true", "methods.linear_exact=true"]
    cfg = load_config(TINY, [*overrides, "methods.reweighting.tempering={always = true, n_particles = 16}"])
    ds = run(cfg, progress=False)
    attrs = ds.attrs
    assert attrs["reweighted_result"] == "success" and attrs["reweighted_method"] == "tempered SMC"
    runs = json.loads(attrs["reweighted_smc_runs"])
    ladders = [r["temperatures"] for r in runs]
    assert len(ladders) == 8 and all(lad[0] == 0 and lad[-1] == 1 and len(lad) >= 2 for lad in ladders)
    assert min(r["final_ess"] for r in runs) > 4 and sum(r["n_particles"] for r in runs) == 128
    assert estimator_label("reweighted", attrs) == "reweighted (tempered SMC)"
    exact = ds.cka.sel(estimator="linear_exact", layer=[1, 2])
    z = (ds.cka.sel(estimator="reweighted", layer=[1, 2]) - exact) / ds.cka_se.sel(
        estimator="reweighted", layer=[1, 2]
    )
    assert np.all(np.abs(z) < 4), z.values
    write_run(ds, cfg, tmp_path / "r")
    again = load_results(tmp_path / "r")
    assert again.attrs["reweighted_smc_runs"] == attrs["reweighted_smc_runs"]


def test_cli_run_and_report_write_the_run_folder(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,  # the MAP off: the run folder is the point here (the demo test runs the MAP through the CLI)
        [
            "run",
            str(TINY),
            "--out",
            str(tmp_path / "r"),
            *sum((["--set", s] for s in [*FAST, "methods.map=false"]), []),
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "r"
    for name in (
        "config.toml",
        "results.nc",
        "meta.json",
        "report.md",
        "report.html",
        "figures/cka_per_layer.png",
        "figures/kernels.png",
    ):
        assert (folder / name).exists(), name
    assert load_config(folder / "config.toml").methods.chains.n_samples == 400  # resolved config round-trips
    (folder / "report.md").unlink()
    assert runner.invoke(app, ["report", str(folder)]).exit_code == 0 and (folder / "report.md").exists()
    np.testing.assert_allclose(load_results(folder).cka.values[0, 0], load_results(folder).cka.values[1, 0])


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    runner = CliRunner()
    for args in (
        ["run", str(TINY), "--set", "network.activation=swish"],
        ["run", str(tmp_path / "none.toml")],
        ["report", str(tmp_path)],
    ):
        result = runner.invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write(target, b"old")

    with pytest.raises(TypeError):  # a write that fails midway
        atomic_write(target, object())
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_every_example_config_validates():
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))
    assert len(examples) >= 3
    for path in examples:
        if "[sweep]" in path.read_text():
            assert load_sweep(path).name == path.stem and len(load_sweep(path).points) > 1
        else:
            assert load_config(path).name == path.stem


def test_agreement_criterion_by_hand():
    """miss <= 2 SE + 15 % of the sampled adaptation, computed by hand for two layers."""
    import xarray as xr

    from critical_kernels.experiments.report import agreement

    est = ["nngp", "map", "sampled"]
    cka = xr.DataArray(
        [[0.5, 0.10, 0.20], [0.5, 0.12, 0.27], [0.5, 0.13, 0.30]],
        dims=("estimator", "layer"),
        coords={"estimator": est},
    )
    se = xr.DataArray(
        [[0, 0, 0], [0, 0, 0], [0, 0.001, 0.001]], dims=("estimator", "layer"), coords={"estimator": est}
    )
    rows = agreement(cka, se)
    assert [(r["estimator"], r["layer"]) for r in rows] == [("map", 1), ("map", 2)]
    # layer 1: adaptation 0.03, miss 0.01 > 0.002 + 0.0045; layer 2: adaptation 0.10, miss 0.03 > 0.017
    np.testing.assert_allclose([r["relative_miss"] for r in rows], [1 / 3, 0.3])
    np.testing.assert_allclose([r["theory_adaptation"] for r in rows], [0.02, 0.07])
    assert [r["within"] for r in rows] == [False, False]
    cka[1, 2] = 0.285  # miss 0.015 <= 0.017
    assert [r["within"] for r in agreement(cka, se)] == [False, True]
    assert agreement(cka.sel(estimator=["nngp", "map"]), se.sel(estimator=["nngp", "map"])) == []


def test_unconverged_map_is_reported_not_raised():
    """Far past alpha = P/N = 1 with little noise (P = 8, N = 3, kappa = 0.01) the MAP iterate leaves
    the positive-definite cone: the run keeps every other estimator, flags the MAP and gives it NaN
    CKA and test error instead of numbers from an unconverged iterate."""
    cfg = load_config(
        {
            "data": {"task": "xor", "n_train": 8, "n_test": 4, "dim": 3},
            "network": {"depth": 2, "width": 3, "g_w": 1.5, "g_b": 0.1, "kappa": 0.01},
            "methods": {"perturbative": False, "importance": {"n_samples": 256, "rtol": 0}},
        }
    )
    ds = run(cfg)
    assert ds.attrs["map_result"] != "success" and "positive definiteness" in ds.attrs["map_message"]
    assert np.isnan(ds.cka.sel(estimator="map")).all() and np.isnan(ds.test_error.sel(estimator="map"))
    assert np.isnan(ds.cka_se.sel(estimator="map")).all()  # no SE next to a NaN CKA (it was 0)
    assert np.isfinite(ds.cka.sel(estimator="nngp")).all() and np.isfinite(
        ds.test_error.sel(estimator="nngp")
    )
    assert ds.kernel.sel(estimator="map").shape == (3, 12, 12)


@pytest.mark.slow  # three CLI runs with sampled networks (~20 s); sample_posterior's own resume is fast-tier
def test_a_killed_cli_run_resumes_its_sampled_chains(tmp_path, monkeypatch):
    from critical_kernels.estimators import sampled

    settings = [*FAST, "methods.map=false", "methods.perturbative=false", "methods.chains.n_batches=4"]
    args = sum((["--set", s] for s in settings), [str(TINY)])
    runner = CliRunner()
    whole = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    save, seen = sampled.save_progress, []

    def save_then_die(path, mark, done):  # killed right after the checkpoint of batch 2
        save(path, mark, done)
        seen.append(len(done.sums))
        if len(done.sums) == 2 and seen.count(2) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(sampled, "save_progress", save_then_die)
    folder = tmp_path / "killed run"  # a space: the printed command quotes it
    killed = runner.invoke(app, ["run", *args, "--out", str(folder)], env={"COLUMNS": "400"})
    assert killed.exit_code == 130 and "1 sampled-chain checkpoint(s)" in killed.output, killed.output
    assert (folder / "checkpoints" / "sampled.chains").is_file()
    refused = runner.invoke(app, ["run", *args, "--out", str(folder)])
    assert refused.exit_code == 2 and "--resume" in refused.output
    command = shlex.split(killed.output.split("continue with: ")[1].strip())  # as printed
    assert command[:2] == ["critical-kernels", "run"] and command[-1] == "--resume"
    resumed = runner.invoke(app, command[1:])
    assert resumed.exit_code == 0, resumed.output
    finished = runner.invoke(app, command[1:])  # a finished run is not recomputed by --resume
    assert finished.exit_code == 2 and "finished run" in finished.output and "--force" in finished.output
    assert seen == [0, 1, 2, 3, 4]  # warm-up, batches 1-2, then 3-4 only
    assert not (folder / "checkpoints").exists()  # gone once the run folder is written
    a, b = (xr.open_dataset(tmp_path / name / "results.nc").load() for name in ("whole", "killed run"))
    for name in ("kernel", "f_test_var"):
        np.testing.assert_array_equal(a[name].sel(estimator="sampled"), b[name].sel(estimator="sampled"))
