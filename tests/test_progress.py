"""Progress: estimators report their long loops (sampling batches, MAP stages, reweighting rounds,
SMC temperatures) through one channel, which the CLI shows in its status line and a terminal as a bar."""

import numpy as np
import pytest

import critical_kernels as ck
from critical_kernels import progress


def test_bars_only_on_an_interactive_terminal_outside_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not progress.shown() and progress.shown(True)
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert not progress.shown() and not progress.shown(False)


def test_nested_tasks_share_one_bar():
    # a second live display on a console raises in rich; nested tasks add a line to the first bar
    with progress.task("outer", 2, show=True) as outer:
        with progress.task("inner", 3) as inner:
            inner(1, "one")
        outer(1)
    with progress.task("quiet", 2, show=False) as update:
        update(1)  # no bar, no error


@pytest.mark.slow  # four estimators on one problem (~20 s); the status line itself is tested above
def test_estimators_report_their_loops_to_the_status_line():
    lines = []
    data = ck.datasets.xor(n_train=10, n_test=0)
    spec = ck.NetworkSpec(depth=2, width=30, activation="erf", g_w=1.5, g_b=0.1)
    with progress.to_status(lines.append):
        ck.solve_map(spec, data.X, data.Y, tilted=ck.ImportanceSampling(256, replicas=0))
        chains = ck.Chains(chains=2, warmup=20, n_samples=40, thin=2, n_batches=4)
        ck.sample_posterior(spec, data.X, data.Y, sampler=ck.HMC(), chains=chains, throw=False)
    assert [line for line in lines if line.startswith("MAP stages: N = ")][0] == "MAP stages: N = 3000"
    batches = [line for line in lines if line.startswith("HMC: 2 chains: batch ")]
    assert batches[-1] == "HMC: 2 chains: batch 4 of 4", lines
    # the time left, from the warm-up's pace before the first batch, then from the batches'
    assert "HMC: 2 chains: warmed up, under a minute left" in lines
    assert batches[0] == "HMC: 2 chains: batch 1 of 4, under a minute left", lines


def test_the_time_left_follows_the_pace_of_the_batches_after_the_first():
    from critical_kernels.estimators.sampled import _time_left

    chains = ck.Chains(chains=2, warmup=500, n_samples=2000, thin=10, n_batches=10)
    # before any batch: warm-up seconds per step x the steps still to go (2000)
    assert _time_left({"warmup": 600.0, "batches": []}, chains, 0, 500) == ", about 40 min left"
    # the first batch compiles: the pace is the median of the others (300 s) x 6 batches to go
    paced = {"warmup": 600.0, "batches": [900.0, 300.0, 310.0, 290.0]}
    assert _time_left(paced, chains, 4, 500) == ", about 30 min left"
    assert _time_left({"warmup": 0.0, "batches": [4000.0]}, chains, 1, 500) == ", about 10.0 h left"
    assert _time_left(paced | {"batches": [1.0] * 10}, chains, 10, 500) == ""
    assert _time_left({"warmup": 5.0, "batches": []}, chains, 0, 0) == ""  # Langevin: no warm-up pace


@pytest.mark.slow  # an SMC compile (~15 s)
def test_reweighting_reports_its_rounds_and_smc_its_temperatures():
    lines = []
    data = ck.datasets.xor(n_train=8, n_test=0)
    spec = ck.NetworkSpec(depth=1, width=20, activation="erf", g_w=1.5, g_b=0.1)
    smc = ck.TemperedSMC(n_particles=32, n_runs=2, n_mcmc=2, n_final=2, always=True)
    options = ck.Reweighting(n_samples=64, rtol=None, tempering=smc)
    plain = ck.Reweighting(n_samples=64, rtol=None, tempering=None)
    with progress.to_status(lines.append):
        ck.reweighted_kernels(spec, data.X, data.Y, options=options)
        ck.reweighted_kernels(spec, data.X, data.Y, options=plain, throw=False)
    assert any(line.startswith("reweighting, round 1: ") for line in lines), lines
    betas = [float(line.split("beta = ")[1]) for line in lines if line.startswith("tempered SMC: beta")]
    # each of the two runs climbs its own ladder from beta > 0 to 1
    assert betas[-1] == 1.0 and betas.count(1.0) == 2 and np.sum(np.diff(betas) < 0) == 1, betas
