"""Reports and folders a reader can trust: flags for failed references and the second-cumulant MAP,
numbers with their SE, the resolved config with derived values, versions, and no silent overwrite."""

import json
from pathlib import Path

import numpy as np
import xarray as xr
from typer.testing import CliRunner

import critical_kernels as ck
from critical_kernels.cli import app
from critical_kernels.experiments import load_config, run, write_run
from critical_kernels.experiments.labels import estimator_label, field_label, fmt_se
from critical_kernels.experiments.report import agreement, agreement_lines
from critical_kernels.experiments.runner import make_spec

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.toml"
NNGP_ONLY = ["methods.perturbative=false", "methods.map=false", "methods.sampled=false"]


def _flagged_run(ratio: float | None = None) -> tuple[xr.Dataset, object]:
    """An NNGP-only run of the tiny config, with MAP and sampled rows added by hand: the MAP from
    the second cumulant, the sampled networks failing their R-hat check."""
    overrides = NNGP_ONLY + ([f"network.g_w_over_g_c={ratio}"] if ratio else [])
    cfg = load_config(TINY, overrides)
    ds = run(cfg)
    extra = ds.isel(estimator=[0, 0]).assign_coords(estimator=["map", "sampled"])
    ds = xr.concat(
        [ds, extra],
        dim="estimator",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )
    ds["cka"][1:, 1] += [0.03, 0.032]
    ds["cka_se"][2, 1] = 0.00123
    ds.attrs.update(
        map_result="success",
        map_method="second cumulant",
        map_approximation=1,
        map_fallback="importance sampling: ESS fell to 0.001 (< min_ess_fraction=0.05) at N=50",
        map_message="",
        map_n_iter=3,
        map_residual=1e-9,
        sampled_result="diagnostics_failed",
        sampled_method="HMC",
        sampled_message="sampled: R-hat of the CKA 1.200 > 1.01; run longer",
        sampled_warnings='["R-hat of the CKA 1.200 > 1.01"]',
        sampled_rhat_cka=np.array([1.0, 1.2]),
        sampled_acceptance=np.array([0.7, 0.7]),
    )
    return ds, cfg


def test_report_flags_failed_reference_and_cumulant_map_and_shows_config(tmp_path):
    ds, cfg = _flagged_run(ratio=1.0)
    write_run(ds, cfg, tmp_path / "r")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "sampled (HMC), not converged" in report and "MAP (second cumulant)" in report
    assert "reference failed" in report and "| yes |" not in report  # no verdict against a failed reference
    assert "0.1628 ± 0.0012" in report or "± 0.0012" in report  # the SE's two significant digits
    assert "**Warning:** the sampled (HMC) estimate is not converged" in report
    for text in ("g_w used", "g_c (edge of chaos", "χ₁", "α = P/N", "κ", "jaxlib", "blackjax"):
        assert text in report, text
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<table>" in html and "reference failed" in html
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert set(meta["versions"]) >= {
        "critical_kernels",
        "jax",
        "jaxlib",
        "blackjax",
        "numpy",
        "xarray",
        "python",
    }
    g_c = ck.criticality("erf", g_b=0.1).g_c
    np.testing.assert_allclose(meta["derived"]["g_w"], g_c, rtol=1e-12)
    written = (tmp_path / "r" / "config.toml").read_text()
    assert "g_w_over_g_c" in written and "# " in written  # the ratio kept as a comment
    again = load_config(tmp_path / "r" / "config.toml")
    assert again.network.g_w_over_g_c is None and make_spec(again) == make_spec(cfg)  # same network


def test_cli_run_warns_and_flags_when_the_sampler_failed(tmp_path, monkeypatch):
    ds, _ = _flagged_run()
    monkeypatch.setattr("critical_kernels.cli.run", lambda cfg, status=None, checkpoints=None: ds)
    runner = CliRunner()
    args = ["run", str(TINY), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "warning: the sampled (HMC) estimate is not converged" in result.output
    assert "MAP (second cumulant) kernels come from an approximation" in result.output
    assert "MAP (second cumulant)" in result.output
    refused = runner.invoke(app, args)  # a second run into the same folder needs --force
    assert refused.exit_code == 2 and "--force" in refused.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_agreement_against_a_failed_reference_has_no_verdict():
    est = ["nngp", "map", "sampled"]
    cka = xr.DataArray(
        [[0.5, 0.1], [0.5, 0.13], [0.5, 0.13]], dims=("estimator", "layer"), coords={"estimator": est}
    )
    se = xr.zeros_like(cka)
    assert [r["within"] for r in agreement(cka, se)] == [True]
    assert [r["within"] for r in agreement(cka, se, reference_ok=False)] == [None]
    text = "\n".join(agreement_lines([("p", cka, se, False)]))
    assert "reference failed" in text and "| yes |" not in text


def test_labels_and_numbers_with_their_se():
    assert fmt_se(0.030712, 0.000123) == "0.03071 ± 0.00012"
    assert fmt_se(0.5, 0.0) == "0.5000" and fmt_se(0.13, 4e-18) == "0.1300" and fmt_se(np.nan, 0.1) == "NaN"
    assert (
        field_label("network.width") == "width $N$" and field_label("network.width", math=False) == "width N"
    )
    assert estimator_label("map", {"map_method": "second cumulant"}) == "MAP (second cumulant)"
    failed = {"map_method": "importance", "map_result": "max_steps_reached"}
    assert estimator_label("map", failed).endswith("not converged")
    assert (
        estimator_label("sampled", {"sampled_method": "NUTS", "sampled_result": "success"})
        == "sampled (NUTS)"
    )


def test_captured_fraction_figure_marks_unconverged_references(tmp_path, monkeypatch):
    """The captured-fraction figure of a sweep over (N, P) at fixed alpha: one panel per hidden layer with
    theory adaptation / sampled adaptation, x ticks that say N and P, and a star on a width whose sampled
    reference failed its diagnostics."""
    import json

    import xarray as xr

    from critical_kernels.experiments import figures

    widths, estimators = [100, 333], ["nngp", "map", "sampled"]
    nngp, sampled = 0.60, np.array([[0.60, 0.62, 0.64], [0.60, 0.61, 0.63]])
    cka = np.stack([np.full((2, 3), nngp), nngp + 0.8 * (sampled - nngp), sampled], axis=1)
    ds = xr.Dataset(
        {
            "cka": (("width", "estimator", "layer"), cka),
            "cka_se": (("width", "estimator", "layer"), np.full((2, 3, 3), 1e-3)),
            "status": (("width",), np.array(["ok", "ok"])),
            "sampled_result": (("width",), np.array(["success", "diagnostics_failed"])),
            "sampled_rhat_cka": (("width", "layer"), np.array([[1.0, 1.001, 1.001], [1.0, 1.02, 1.02]])),
        },
        coords={
            "width": widths,
            "n_train": ("width", [30, 100]),
            "estimator": estimators,
            "layer": [0, 1, 2],
        },
        attrs={"name": "alpha", "fields": json.dumps({"width": ["network.width", "data.n_train"]})},
    )
    drawn = {}
    line_panels = figures.plots.line_panels

    def spy(panels, path, axes, title=""):
        drawn.update(panels=panels, xticks=axes.xticks, title=title)
        return line_panels(panels, path, axes, title=title)

    monkeypatch.setattr(figures.plots, "line_panels", spy)
    assert figures._captured_figure(ds, "width", tmp_path / "captured.png").exists()
    assert drawn["xticks"][1] == ["100\n(P = 30)", "333\n(P = 100) *"] and "failed" in drawn["title"]
    assert [p[0] for p in drawn["panels"]] == ["layer 1", "layer 2"]
    ((label, x, y, yerr, _),) = drawn["panels"][1][2]  # the MAP only: NNGP and sampled are not theories
    np.testing.assert_allclose(y, [0.8, 0.8])  # captured = 0.8 by construction
    np.testing.assert_allclose(yerr, np.sqrt(2) * 1e-3 / np.array([0.04, 0.03]))  # combined SE / adaptation
