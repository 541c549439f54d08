"""The validation bank (validation/) against the exact posterior of deep linear networks (T18), an
independent route: both of its samplers must agree with the quadrature, in the CKA of every hidden
layer and entry by entry in units of their own Monte Carlo standard errors (which tests the errors
bars too). And every committed case must carry the verdict its own diagnostics give."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST

import critical_kernels as ck
from critical_kernels.metrics import cka_layers

BANK = Path(__file__).resolve().parents[1] / "validation"
_spec = importlib.util.spec_from_file_location("validation_build", BANK / "build.py")
build = importlib.util.module_from_spec(_spec)  # by path: PyPI's `build` may be importable too
_spec.loader.exec_module(build)
AGREE_Z, RHAT_MAX, problem = build.AGREE_Z, build.RHAT_MAX, build.problem

CASES = build.load_cases()
DONE = sorted(p.stem for p in (BANK / "cases").glob("*.json"))
LINEAR = [name for name in DONE if CASES[name]["activation"] == "linear"]


def _summary(name: str) -> dict:
    return json.loads((BANK / "cases" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", LINEAR)
def test_linear_cases_agree_with_the_exact_posterior(name):
    case = CASES[name]
    if case["task"] == "mnist" and not MNIST.is_dir():
        pytest.skip("MNIST files not found")
    spec, data = problem(case, MNIST)
    exact = ck.linear_posterior_kernels(spec, data.X, data.Y, data.X_test)
    exact_cka = cka_layers(exact.kernels, data.Y)
    stored = np.load(BANK / "cases" / f"{name}.npz")
    upper = np.triu_indices(len(data.X) + len(data.X_test))
    for sampler, result in _summary(name)["samplers"].items():
        # CKA of every hidden layer within 3 of the sampler's SE (batch means); the quadrature error is
        # below 1e-6 of the kernel scale, far below these SEs
        z = (np.asarray(result["cka"]) - exact_cka)[1:] / np.asarray(result["cka_se"])[1:]
        assert np.all(np.abs(z) <= 3), (sampler, z)
        # entry by entry (float32 means, float16 MCSE): honest error bars give mean z^2 near 1; a
        # factor 2 too small (large) gives ~4 (~0.25)
        K, se = stored[f"{sampler}/kernels"].astype(float), stored[f"{sampler}/mcse"].astype(float)
        entries = (K - exact.kernels[:, upper[0], upper[1]])[1:] / se[1:]
        assert np.all((entries**2).mean(axis=1) >= 0.3) and np.all((entries**2).mean(axis=1) <= 2.5)
        assert np.mean(np.abs(entries) > 4) < 0.01


@pytest.mark.parametrize("name", DONE)
def test_each_case_carries_the_verdict_of_its_own_diagnostics(name):
    summary = _summary(name)
    samplers = summary["samplers"]
    converged = {
        s: bool(np.all(np.asarray(r["rhat_cka"]) <= RHAT_MAX) and min(r["acceptance"]) >= 0.1)
        for s, r in samplers.items()
    }
    a, b = (samplers[s] for s in samplers)
    combined = np.hypot(a["cka_se"], b["cka_se"])[1:]
    agree = bool(np.all(np.abs(np.subtract(a["cka"], b["cka"])[1:]) <= AGREE_Z * combined))
    verdict = summary["verdict"]
    assert verdict["agree"] == agree
    # ESS >= 400 is part of convergence too: a case may fail on ESS alone, never pass with bad R-hat
    assert not verdict["usable"] or (agree and all(converged.values()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu-mnist-L2-P30", "tanh-mnist-L2-P30"])
def test_reweighted_with_defaults_lands_on_the_bank(name):
    """The beyond-saddle estimator with its defaults (rounds of networks until the SE of the CKA
    adaptation is 5 % of it) against both samplers of a bank case, per hidden layer: within
    max(2 combined SE, 5 % of the sampled adaptation), its SE at most 10 % of that adaptation."""
    if not MNIST.is_dir():
        pytest.skip("MNIST files not found")
    summary = _summary(name)
    assert summary["verdict"]["usable"]
    spec, data = problem(CASES[name], MNIST)
    est = ck.reweighted_kernels(spec, data.X, data.Y, key=0)
    cka = cka_layers(est.kernels, data.Y)[1:]
    se = ck.metrics.cka_layers_se(est.estimates.kernels, data.Y, kind=est.estimates.kind)[1:]
    nngp = cka_layers(ck.nngp_kernels(spec, data.X), data.Y)[1:]
    samplers = summary["samplers"].values()
    bank = np.mean([s["cka"] for s in samplers], axis=0)[1:]  # the mean of two independent samplers
    bank_se = 0.5 * np.hypot(*[s["cka_se"] for s in samplers])[1:]
    adaptation = np.abs(bank - nngp)
    assert np.all(se <= 0.10 * adaptation), (se, adaptation)
    assert np.all(np.abs(cka - bank) <= np.maximum(2 * np.hypot(se, bank_se), 0.05 * adaptation)), (
        (cka - nngp) / (bank - nngp),
        np.hypot(se, bank_se) / adaptation,
    )


def test_the_builder_checkpoints_each_unit_and_keeps_only_finished_units(tmp_path, monkeypatch):
    case = {"name": "tiny", "activation": "erf", "task": "xor", "depth": 1, "n_train": 6, "n_test": 3}
    case |= {"alpha": 1.0, "g_w": 1.5, "g_b": 0.1, "kappa": 0.1, "seed": 0}
    monkeypatch.setattr(build, "UNIT", ck.Chains(chains=2, warmup=20, n_samples=40, thin=2, n_batches=2))
    monkeypatch.setattr(build, "MAX_UNITS", 2)
    monkeypatch.setattr(build, "SAMPLERS", {"hmc-weights": build.SAMPLERS["hmc-weights"]})  # one compile
    saved = []
    save = build.ck.estimators.sampled.save_progress
    monkeypatch.setattr(
        build.ck.estimators.sampled,
        "save_progress",
        lambda path, mark, done: (save(path, mark, done), saved.append((path.name, len(done.sums)))),
    )
    results = build.sample_case(case, MNIST, tmp_path, log=lambda message: None)
    folder = tmp_path / "tiny"
    # the chain checkpoints are gone once their unit is written
    assert sorted(p.name for p in folder.iterdir()) == ["hmc-weights-00.npz", "hmc-weights-01.npz"]
    assert saved == [(f"hmc-weights-0{i}.chains", b) for i in (0, 1) for b in (0, 1, 2)]  # warm-up, batches
    assert results["hmc-weights"]["chains"] == 4
