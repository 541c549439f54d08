"""The estimator registry: an estimator registered in one place runs through a run, its report, a
sweep and the sweep report, and the CLI, with its own label, method and failure word."""

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from typer.testing import CliRunner

import critical_kernels as ck
from critical_kernels.cli import app
from critical_kernels.estimators.base import Outcome, Result, finish
from critical_kernels.estimators.options import Options, count
from critical_kernels.estimators.registry import REGISTRY, Estimator, register, unregister
from critical_kernels.experiments import (
    Serial,
    load_config,
    load_sweep,
    run,
    run_sweep,
    write_run,
    write_sweep_report,
)
from critical_kernels.experiments.io import resolved_toml
from critical_kernels.experiments.labels import estimator_label
from critical_kernels.experiments.runner import derived

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.toml"

OFF = ["methods.perturbative=false", "methods.map=false", "methods.sampled=false"]


@dataclass(frozen=True)
class Doubled(Options):
    """The toy's options: `fail` fails it on purpose."""

    copies: int = count(2)
    fail: bool = False

    @property
    def label(self) -> str:
        return f"{self.copies} copies"


class DoubledInfo(NamedTuple):
    copies: int


def doubled_kernels(spec, X, Y, X_test=None, *, options=Doubled(), key=0, throw=True):
    """A toy estimator: the NNGP kernels times `copies`, with a set of `copies` equal estimates."""
    kernels = options.copies * ck.nngp_kernels(spec, X, X_test)
    outcome = Outcome(Result.max_steps_reached if options.fail else Result.success, "toy", method=options)
    estimates = ck.Estimates("batches", np.stack([kernels] * options.copies))
    return finish(
        "doubled",
        kernels,
        0 * kernels,
        DoubledInfo(options.copies),
        outcome,
        estimates=estimates,
        throw=throw,
    )


@pytest.fixture
def toy():
    """The toy registered with its failure word, failing where the config's methods.solver.max_steps is
    7 (any field would do: the registry decides what a config gives it), removed afterwards."""
    record = Estimator(
        "doubled",
        "toy",
        doubled_kernels,
        lambda m, spec, earlier: {"options": Doubled(fail=m.solver.max_steps == 7)},
        failure="broke",
    )
    register(record)
    yield record
    unregister("doubled")
    assert "doubled" not in REGISTRY


def test_a_registered_estimator_runs_reports_and_sweeps(toy, tmp_path):
    cfg = load_config(TINY, [*OFF, "methods.doubled=true"])
    assert cfg.methods.runs("doubled") and "doubled = true" in resolved_toml(cfg, derived(cfg))
    ds = run(cfg, progress=False)
    assert list(ds.estimator.values) == ["nngp", "doubled"]
    np.testing.assert_allclose(ds.kernel.sel(estimator="doubled"), 2 * ds.kernel.sel(estimator="nngp"))
    np.testing.assert_allclose(ds.cka.sel(estimator="doubled"), ds.cka.sel(estimator="nngp"), rtol=1e-12)
    assert ds.attrs["doubled_method"] == "2 copies" and ds.attrs["doubled_se_count"] == 2
    assert estimator_label("doubled", ds.attrs) == "toy (2 copies)"
    write_run(ds, cfg, tmp_path / "r")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| toy (2 copies) |" in report and "toy (2 copies): spread of 2 batch means" in report

    failing = run(load_config(TINY, [*OFF, "methods.doubled=true", "methods.solver.max_steps=7"]))
    assert failing.attrs["doubled_result"] == "max_steps_reached"
    assert np.isnan(failing.cka.sel(estimator="doubled").values).all()  # not usable: no CKA
    assert estimator_label("doubled", failing.attrs) == "toy (2 copies), broke"

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(TINY.read_text() + '\n[sweep]\n"methods.solver.max_steps" = [300, 7]\n')
    merged = run_sweep(load_sweep(sweep, [*OFF, "methods.doubled=true"]), tmp_path / "s", executor=Serial())
    assert list(merged.estimator.values) == ["nngp", "doubled"]
    assert merged.status.values.tolist() == ["ok", "partial"]  # the toy broke at max_steps = 7: no answer
    write_sweep_report(tmp_path / "s", merged)
    table = [line for line in (tmp_path / "s" / "report.md").read_text().splitlines() if "| 7 |" in line]
    assert len(table) == 1 and "(broke)" in table[0]


def test_the_cli_shows_a_registered_estimator(toy, tmp_path):
    args = ["run", str(TINY), "--out", str(tmp_path / "r"), "--set", "methods.doubled=true"]
    args += [a for o in OFF for a in ("--set", o)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "toy (2 copies)" in result.output


def test_config_switches_follow_the_registry(toy):
    with pytest.raises(ck.InputError, match="methods.doubeld: .*did you mean 'doubled'"):
        load_config(TINY, ["methods.doubeld=true"])
    unregister("doubled")
    with pytest.raises(ck.InputError, match="methods.doubled"):
        load_config(TINY, ["methods.doubled=true"])
    register(toy)
