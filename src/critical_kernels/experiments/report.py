"""Run folders and their reports: config.toml, results.nc, meta.json, figures, report.md and
report.html (tables rendered by markdown-it-py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from markdown_it import MarkdownIt
from pydantic import ValidationError

from ..errors import InputError
from ..estimators.registry import REGISTRY
from .attrs import estimator_attrs, plain
from .config import ExperimentConfig
from .figures import run_figures
from .io import atomic_write, check_kind, mark_folder, resolved_toml
from .labels import (
    approximated,
    estimator_label,
    failed,
    fmt_number,
    fmt_se,
    layer_kernel,
    reference_failed,
    se_caption,
)
from .runner import derived, versions


def write_run(ds: xr.Dataset, config: ExperimentConfig, out: Path) -> Path:
    """Write the run folder of DESIGN.md and return it (files of an earlier run there are replaced;
    InputError if `out` is a sweep or demo folder)."""
    out = Path(out)
    check_kind(out, "run")
    values = derived(config, int(ds.attrs["n_train"]))
    atomic_write(out / "config.toml", resolved_toml(config, values).encode())
    mark_folder(out, "run")
    atomic_write(out / "results.nc", bytes(ds.to_netcdf(engine="scipy")))
    atomic_write(out / "meta.json", json.dumps(run_meta(ds, config, values), indent=2).encode())
    write_report(out, ds)
    return out


def run_meta(ds: xr.Dataset, config: ExperimentConfig, values: dict) -> dict:
    """meta.json of a run: name, seed, derived values, timings, versions, every estimator attr
    (E_*) under "diagnostics" and the shapes of the info arrays that are no attrs under "arrays"."""
    estimators = [str(m) for m in ds.estimator.values]
    return {
        "name": config.name,
        "seed": config.seed,
        "derived": {k: None if v != v else v for k, v in values.items()},  # NaN -> null
        "timings": json.loads(ds.attrs["timings"]),
        "versions": versions(),
        "diagnostics": {k: plain(v) for k, v in estimator_attrs(ds.attrs, estimators).items()},
        "arrays": json.loads(ds.attrs.get("arrays", "{}")),
    }


def write_report(out: Path, ds: xr.Dataset) -> None:
    """Figures and report.md / report.html from a results Dataset: the resolved configuration with
    its derived values, CKA ± SE per estimator and layer, test errors, theory against sampled
    networks, convergence and diagnostics, timings and versions."""
    out = Path(out)
    run_figures(ds, out / "figures")
    attrs = ds.attrs
    lines = [
        f"# {attrs['name']}",
        "",
        *summary_lines(ds),
        "",
        *[f"> **Warning:** {w}\n" for w in run_warnings(attrs)],
        *cka_table(ds),
        *prediction_table(ds),
        "",
        "![CKA per layer](figures/cka_per_layer.png)",
        "",
        "![Kernels](figures/kernels.png)",
        "",
        *agreement_lines([(attrs["name"], ds.cka, ds.cka_se, not reference_failed(attrs))]),
        "## Configuration",
        "",
        *config_table(ds),
        "",
        "## Convergence and diagnostics",
        "",
        *diagnostics_lines(ds),
        f"- timings [s]: {', '.join(f'{k} {v:.2f}' for k, v in json.loads(attrs['timings']).items())}",
        "",
        "## Versions",
        "",
        versions_line(attrs),
    ]
    write_markdown(out, lines)


def cka_table(ds: xr.Dataset) -> list[str]:
    """The CKA ± SE of every estimator and layer, with the test error."""
    estimators = [str(m) for m in ds.estimator.values]
    cka, se, errors = ds.cka.values, ds.cka_se.values, ds.test_error.values  # rows follow `estimators`
    rows = [
        f"| {estimator_label(m, ds.attrs)} | "
        + " | ".join(fmt_se(c, e) for c, e in zip(cka[i], se[i], strict=True))
        + f" | {_fmt(errors[i], 3)} |"
        for i, m in enumerate(estimators)
    ]
    return [
        "## CKA with the target kernel YYᵀ per layer (T16)",
        "",
        "CKA(C⁽ˡ⁾, YYᵀ) on the training inputs; C⁽⁰⁾ is the input kernel. "
        + se_caption(ds.attrs, estimators),
        "",
        "| estimator | " + " | ".join(layer_kernel(l) for l in ds.layer.values) + " | test error |",
        "|" + "---|" * (len(ds.layer) + 2),
        *rows,
    ]


def prediction_table(ds: xr.Dataset) -> list[str]:
    """Test scores of every estimator's posterior predictive (T21) with their SEs, and the shortcut."""
    if "test_loss" not in ds or np.all(np.isnan(ds.test_mse_plugin.values)):
        return []  # no test rows
    rows = [
        f"| {estimator_label(str(m), ds.attrs)} | "
        + " | ".join(
            fmt_se(float(ds[name].values[i]), float(ds[f"{name}_se"].values[i]))
            for name in ("test_mse", "test_loss", "test_error")
        )
        + f" | {_fmt(float(ds.test_mse_plugin.values[i]), 4)} |"
        for i, m in enumerate(ds.estimator.values)
    ]
    return [
        "",
        "## Test predictions (T21)",
        "",
        "The posterior predictive of the network output f* on the test rows: mse = mean (E[f*] - y)², "
        "loss = mse + mean Var[f*] (Pacelli et al. 2023), class error of sign E[f*]; ± the estimator's "
        "own standard error on these rows (not the sampling error of the test set). The last column is "
        "the kernel predictor at the mean kernel, the shortcut that is not the network's prediction "
        "at finite N (T22). NaN: the estimator gives no predictive.",
        "",
        "| estimator | mse | loss | class error | kernel predictor mse |",
        "|---|---|---|---|---|",
        *rows,
    ]


def diagnostics_lines(ds: xr.Dataset) -> list[str]:
    """Every estimator attr (E_*: result, method, fallback, message, info fields), then the shapes of
    the info arrays that are no attrs."""
    found = estimator_attrs(ds.attrs, [str(m) for m in ds.estimator.values])
    lines = [f"- {k}: {_attr_text(v)}" for k, v in found.items()]
    shapes = json.loads(ds.attrs.get("arrays", "{}"))
    return lines + [f"- {k}: array of shape {tuple(shape)} (not stored)" for k, shape in shapes.items()]


def _attr_text(value) -> str:
    return fmt_number(value.tolist() if isinstance(value, np.ndarray | np.generic) else value, 6)


def run_warnings(attrs) -> list[str]:
    """Lines a reader must see: an estimator that failed (a ground truth that is no reference, kernels
    kept but flagged, or NaN), one whose kernels come from an approximation or needed jitter, a Monte
    Carlo tolerance not met."""
    out = []
    for name, record in REGISTRY.items():
        label = estimator_label(name, attrs, flag=False)
        if failed(attrs, name):
            kept = "its numbers are flagged" if record.keeps_flagged else "its CKA is NaN"
            line = f"the {label} estimate is {record.failure} ({attrs.get(f'{name}_message', '')}); {kept}"
            line += "; it is no reference" if record.reference else ""
            out.append(line + (f" ({record.remedy})" if record.remedy else ""))
        elif approximated(attrs, name):
            why = str(attrs.get(f"{name}_fallback", ""))
            out.append(f"the {label} kernels come from an approximation" + (f" ({why})" if why else ""))
        jitter = attrs.get(f"{name}_jitter")
        if isinstance(jitter, int | float | np.number) and jitter > 0:
            out.append(f"the {label} estimate needed Cholesky jitter {jitter:.3g} to be positive definite")
        met = attrs.get(f"{name}_rtol_met")
        if met is not None and not isinstance(met, str) and int(met) == 0:
            out.append(
                f"the {label} estimate: the SE of its CKA adaptation is above its rtol after "
                f"{attrs.get(f'{name}_n_samples')} samples (raise max_samples)"
            )
    return out


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "NaN"


def summary_lines(ds: xr.Dataset) -> list[str]:
    """One paragraph: data, P, network, L, N, alpha, g_w (and g_w/g_c), chi_1, kappa."""
    config, values = _config_and_derived(ds)
    net = config.network
    P = int(ds.attrs["n_train"])
    n_test = ds.sizes["row"] - P
    ratio = _ratio_text(values)
    return [
        f"Data: {ds.attrs['data']}, P = {P} training and {n_test} test inputs. Network: {net.activation}, "
        f"L = {net.depth} hidden layers of width N = {net.width}, α = P/N = {values['alpha']:.3g}, "
        f"g_w = {fmt_number(values['g_w'])}{ratio}, g_b = {fmt_number(net.g_b)}, "
        f"χ₁ = {fmt_number(values['chi_1'], 4)}, κ = {fmt_number(net.kappa)}."
    ]


def _ratio_text(values: dict) -> str:
    if np.ndim(values["g_w"]) == 0 and np.isfinite(values["g_c"]):
        return f" = {values['g_w'] / values['g_c']:.3g} g_c"
    return ""


def _config_and_derived(ds: xr.Dataset):
    try:
        config = ExperimentConfig.model_validate_json(ds.attrs.get("config", ""))
    except ValidationError:
        raise InputError("DIR: results.nc has no readable config; run the experiment again") from None
    return config, derived(config, int(ds.attrs["n_train"]))


def config_table(ds: xr.Dataset) -> list[str]:
    """The resolved configuration, every field, and the values derived from it."""
    config, values = _config_and_derived(ds)
    rows = [
        ("P (training inputs)", values["P"]),
        ("P_test (test inputs)", ds.sizes["row"] - values["P"]),
        ("L (hidden layers)", config.network.depth),
        ("N (width)", config.network.width),
        ("α = P/N", values["alpha"]),
        ("g_w used", fmt_number(values["g_w"], 8) + _ratio_text(values)),
        ("g_c (edge of chaos, this activation and g_b)", values["g_c"]),
        ("χ₁ = g_w ⟨φ′²⟩ (1 at the edge of chaos)", values["chi_1"]),
        ("κ (observation noise variance)", config.network.kappa),
    ]
    dump = config.model_dump(mode="json")
    if config.network.g_w_over_g_c is not None:  # the g_w field is not used then
        dump["network"]["g_w"] = f"{fmt_number(values['g_w'], 8)} (from g_w_over_g_c)"
    for section in ("data", "network", "methods"):
        rows += _flat(section, dump[section])
    rows += [(k, dump[k]) for k in ("name", "seed")]
    lines = ["| quantity | value |", "|---|---|"]
    return lines + [f"| {name} | {fmt_number(value, 8)} |" for name, value in rows]


def _flat(prefix: str, table: dict) -> list[tuple[str, object]]:
    """(dotted field, value) of a config table, nested option tables included."""
    rows = []
    for key, value in table.items():
        if isinstance(value, dict):
            rows += _flat(f"{prefix}.{key}", value)
        elif value is not None:
            rows.append((f"{prefix}.{key}", value))
    return rows


def versions_line(attrs) -> str:
    found = json.loads(attrs["versions"]) if "versions" in attrs else versions()
    return ", ".join(f"{k} {v}" for k, v in found.items())


def agreement(cka: xr.DataArray, cka_se: xr.DataArray, reference_ok: bool = True) -> list[dict]:
    """Theory against sampled networks, per theory estimator and layer l >= 1 of one experiment.

    Adaptation a = CKA - CKA_NNGP; captured = a_theory / a_sampled with its SE; miss = |CKA_theory -
    CKA_sampled|; the criterion is miss <= 2 SE + 0.15 |a_sampled|, SE the combined standard error
    sqrt(SE_theory^2 + SE_sampled^2) (independent estimates; the NNGP is exact). `within` is True,
    False, or None where the sampled reference failed its diagnostics (`reference_ok` False: no
    verdict against a reference that is not one) or the theory estimator failed (CKA NaN).
    """
    names = [str(e) for e in cka.estimator.values]
    if "sampled" not in names or "nngp" not in names:
        return []
    sampled, se_s = cka.sel(estimator="sampled").values, cka_se.sel(estimator="sampled").values
    adaptation = sampled - cka.sel(estimator="nngp").values
    rows = []
    for name in (n for n in names if n not in ("nngp", "sampled")):
        theory = cka.sel(estimator=name).values
        se_t = np.nan_to_num(cka_se.sel(estimator=name).values)  # NaN: no SE known
        for l in range(1, len(sampled)):
            if not np.isfinite(sampled[l]):
                continue
            a, a_t = adaptation[l], theory[l] - (sampled[l] - adaptation[l])
            combined = float(np.hypot(se_t[l], se_s[l]))
            captured = a_t / a
            ok = reference_ok and np.isfinite(theory[l])
            rows.append(
                dict(
                    estimator=name,
                    layer=l,
                    adaptation=a,
                    se=se_s[l],
                    theory_adaptation=a_t,
                    theory_se=se_t[l],
                    captured=captured,
                    captured_se=abs(captured) * float(np.hypot(se_t[l] / a_t, se_s[l] / a)),
                    relative_miss=abs(theory[l] - sampled[l]) / abs(a),
                    within=bool(abs(theory[l] - sampled[l]) <= 2 * combined + 0.15 * abs(a)) if ok else None,
                    failed=not np.isfinite(theory[l]),
                )
            )
    return rows


def agreement_lines(items) -> list[str]:
    """Markdown table of `agreement` for (label, cka, cka_se, reference_ok) items; empty when nothing
    was sampled."""
    rows = [(label, r) for label, cka, cka_se, ok in items for r in agreement(cka, cka_se, ok)]
    if not rows:
        return []
    lines = [
        "## Theory against sampled networks",
        "",
        "Adaptation = CKA − CKA_NNGP ± SE; captured = theory adaptation / sampled adaptation (1 is "
        "perfect); criterion: |CKA_theory − CKA_sampled| ≤ 2 combined SE + 15 % of the sampled adaptation.",
        "",
        "| point | estimator | layer | sampled adaptation | theory adaptation | captured | within |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        if r["failed"]:
            verdict = "estimator failed"
        elif r["within"] is None:
            verdict = "reference failed"
        else:
            verdict = "yes" if r["within"] else "NO"
        lines.append(
            f"| {label} | {estimator_label(r['estimator'], flag=False)} | {r['layer']} | "
            f"{fmt_se(r['adaptation'], r['se'])} | {fmt_se(r['theory_adaptation'], r['theory_se'])} | "
            f"{fmt_se(r['captured'], r['captured_se'], 3)} | {verdict} |"
        )
    return [*lines, ""]


_STYLE = (
    "<style>body{font-family:sans-serif;max-width:60em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px}td{white-space:nowrap}img{max-width:720px}</style>"
)


def write_markdown(out: Path, lines: list[str]) -> None:
    """report.md and, rendered from it with real tables, report.html."""
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = MarkdownIt("commonmark").enable("table").render(text)
    page = f"<!doctype html><html><head><meta charset='utf-8'>{_STYLE}</head><body>{body}</body></html>\n"
    atomic_write(out / "report.html", page.encode())
