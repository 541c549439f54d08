"""Reports of run and sweep folders: report.md and report.html (tables rendered by markdown-it-py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xarray as xr
from markdown_it import MarkdownIt

from .figures import run_figures, sweep_figures
from .io import _plain, atomic_write
from .labels import (
    NOT_CONVERGED,
    estimator_label,
    field_label,
    fmt_number,
    fmt_se,
    map_failed,
    map_is_cumulant,
    reweighted_failed,
    sampled_failed,
)


def write_report(out: Path, ds: xr.Dataset) -> None:
    """Figures and report.md / report.html from a results Dataset: the resolved configuration with
    its derived values, CKA ± SE per estimator and layer, test errors, theory against sampled
    networks, convergence and diagnostics, timings and versions."""
    out = Path(out)
    run_figures(ds, out / "figures")
    attrs = ds.attrs
    estimators = [str(m) for m in ds.estimator.values]
    cka, se, errors = ds.cka.values, ds.cka_se.values, ds.test_error.values  # rows follow `estimators`
    rows = [
        f"| {estimator_label(m, attrs)} | "
        + " | ".join(fmt_se(c, e) for c, e in zip(cka[i], se[i], strict=True))
        + f" | {_fmt(errors[i], 3)} |"
        for i, m in enumerate(estimators)
    ]
    header = "| estimator | " + " | ".join(f"C^({l})" for l in ds.layer.values) + " | test error |"
    warnings = run_warnings(attrs)
    lines = [
        f"# {attrs['name']}",
        "",
        *summary_lines(ds),
        "",
        *[f"> **Warning:** {w}\n" for w in warnings],
        "## CKA with the target kernel YYᵀ per layer (T16)",
        "",
        "CKA(C^(l), YYᵀ) on the training inputs; C^(0) is the input kernel. ± one standard error "
        "where the estimator has one (first order: spread over 16 blocks of its random numbers; "
        "reweighted: jackknife over 16 batches; sampled networks: batch means).",
        "",
        header,
        "|" + "---|" * (len(ds.layer) + 2),
        *rows,
        "",
        "![CKA per layer](figures/cka_per_layer.png)",
        "",
        "![Kernels](figures/kernels.png)",
        "",
        *agreement_lines([(attrs["name"], ds.cka, ds.cka_se, not sampled_failed(attrs))]),
        "## Configuration",
        "",
        *config_table(ds),
        "",
        "## Convergence and diagnostics",
        "",
        *[
            f"- {k}: {_plain(v)}"
            for k, v in attrs.items()
            if k.startswith(("map_", "reweighted_", "linear_exact_", "sampl", "rhat", "acc"))
        ],
        f"- timings [s]: {', '.join(f'{k} {v:.2f}' for k, v in json.loads(attrs['timings']).items())}",
        "",
        "## Versions",
        "",
        _versions_line(attrs),
    ]
    write_markdown(out, lines)


def run_warnings(attrs) -> list[str]:
    """Lines a reader must see: failed sampler diagnostics, an unconverged MAP, a MAP from the
    second-cumulant approximation."""
    out = []
    if "sampled_ok" in attrs and sampled_failed(attrs):
        detail = str(attrs.get("sampled_warnings", "")) or "diagnostics failed"
        out.append(
            f"the sampled networks are {NOT_CONVERGED} ({detail}); their numbers are not a reference "
            "(sample longer: methods.warmup, methods.samples)"
        )
    if map_failed(attrs):
        out.append(f"the MAP solve is {NOT_CONVERGED} ({attrs.get('map_message', '')}); its CKA is NaN")
    elif map_is_cumulant(attrs):
        why = str(attrs.get("map_message", ""))
        ess = re.search(r"ESS fell to ([0-9.e-]+) \(< min_ess=([0-9.e-]+)\)", why)
        reason = f" (importance-sampling ESS fell to {ess[1]} < {ess[2]})" if ess else ""
        out.append(f"the MAP kernels come from the second-cumulant approximation{reason}")
    for name, label in (("perturbative", "first-order"), ("map", "MAP")):
        if int(attrs.get(f"{name}_rtol_met", 1)) == 0:
            out.append(
                f"the {label} CKA adaptation's SE is above methods.rtol after "
                f"{attrs.get(f'{name}_n_samples')} samples (raise methods.max_samples)"
            )
    if reweighted_failed(attrs):
        out.append(f"the reweighted estimator failed: {attrs.get('reweighted_message', '')}; its CKA is NaN")
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
    from pydantic import ValidationError

    from ..errors import InputError
    from .config import ExperimentConfig
    from .run import derived

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
        rows += [(f"{section}.{k}", v) for k, v in dump[section].items() if v is not None]
    rows += [(k, dump[k]) for k in ("name", "seed")]
    lines = ["| quantity | value |", "|---|---|"]
    return lines + [f"| {name} | {fmt_number(value, 8)} |" for name, value in rows]


def _versions_line(attrs) -> str:
    from .run import versions

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
            verdict = f"reference failed ({NOT_CONVERGED})"
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
    "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:720px}</style>"
)


def write_markdown(out: Path, lines: list[str]) -> None:
    """report.md and, rendered from it with real tables, report.html."""
    text = "\n".join(lines) + "\n"
    atomic_write(out / "report.md", text.encode())
    body = MarkdownIt("commonmark").enable("table").render(text)
    page = f"<!doctype html><html><head><meta charset='utf-8'>{_STYLE}</head><body>{body}</body></html>\n"
    atomic_write(out / "report.html", page.encode())


def write_sweep_report(out: Path, ds: xr.Dataset) -> None:
    """Sweep figures (CKA and adaptation against every swept parameter, ΔCKA against 1/N, theory
    against sampled) and report.md / report.html from a merged sweep Dataset: per point the swept
    values, the g_w used, the output CKA ± SE of every estimator (flagged where the MAP used the
    second cumulant or the sampled networks failed their diagnostics), and the status."""
    out = Path(out)
    fields = json.loads(ds.attrs["fields"])
    dims = list(fields)
    estimators = [str(m) for m in ds.estimator.values]
    images = sweep_figures(ds, out / "figures")
    counts = {s: int((ds.status.values == s).sum()) for s in ("ok", "failed", "missing")}
    flat = ds.stack(point=dims)
    n = flat.sizes["point"]
    columns = [(f, d if j == 0 else _zipped_name(ds, d, f)) for d in dims for j, f in enumerate(fields[d])]
    columns = [(f, name) for f, name in columns if name in flat.coords]
    point_attrs = [_point_attrs(flat, j) for j in range(n)]
    map_methods = {
        m for a, s in zip(point_attrs, flat.status.values, strict=True) if s == "ok" for m in [a["map"]]
    }
    headers = [field_label(f, math=False) for f, _ in columns] + ["g_w used"]
    for m in estimators:
        label = estimator_label(
            m, {"map_method": next(iter(map_methods))} if len(map_methods) == 1 else {}, flag=False
        )
        headers.append(f"CKA out: {label}")
    headers.append("status")
    rows = []
    for j in range(n):
        p, attrs = flat.isel(point=j), point_attrs[j]
        cells = [str(flat[name].values[j]) for _, name in columns]
        cells.append(fmt_number(float(p.g_w_used), 5) if "g_w_used" in p else "")
        for k, m in enumerate(estimators):
            cell = fmt_se(float(p.cka_out.values[k]), float(p.cka_out_se.values[k]))
            if m == "sampled" and sampled_failed(attrs) and p.status.item() == "ok":
                cell += f" ({NOT_CONVERGED})"
            if m == "reweighted" and reweighted_failed(attrs) and p.status.item() == "ok":
                cell += " (failed)"
            if m == "map" and len(map_methods) > 1 and map_is_cumulant(attrs):
                cell += " (second cumulant)"
            cells.append(cell)
        cells.append(str(p.status.item()))
        rows.append("| " + " | ".join(cells) + " |")
    failed_reference = sum(
        1 for a, s in zip(point_attrs, flat.status.values, strict=True) if s == "ok" and sampled_failed(a)
    )
    cumulant = sum(
        1 for a, s in zip(point_attrs, flat.status.values, strict=True) if s == "ok" and map_is_cumulant(a)
    )
    notes = []
    if "sampled" in estimators and failed_reference:
        notes.append(
            f"> **Warning:** the sampled networks of {failed_reference} point(s) are {NOT_CONVERGED} "
            "(R-hat of the CKA or acceptance); they are no reference there."
        )
    if "map" in estimators and cumulant:
        notes.append(
            f"> **Note:** the MAP kernels of {cumulant} point(s) come from the second-cumulant approximation."
        )
    config_text = (out / "sweep.toml").read_text() if (out / "sweep.toml").is_file() else ""
    lines = [
        f"# Sweep {ds.attrs['name']}",
        "",
        f"Grid: {', '.join(f'{field_label(fields[d][0], math=False)} ({ds.sizes[d]})' for d in dims)}; "
        f"points ok {counts['ok']}, failed {counts['failed']}, missing {counts['missing']}.",
        "",
        *[note + "\n" for note in notes],
        "## CKA of the output kernel with YYᵀ (T16)",
        "",
        "± one standard error where the estimator has one (first order: spread over 16 blocks of its "
        "random numbers; reweighted: jackknife over 16 batches; sampled networks: batch means).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *rows,
        "",
        *[f"![{p.stem}](figures/{p.name})\n" for p in images],
        "",
        *agreement_lines(
            (
                _point_label(flat, j, dims),
                flat.cka.isel(point=j),
                flat.cka_se.isel(point=j),
                not sampled_failed(point_attrs[j]),
            )
            for j in range(n)
            if flat.status.values[j] == "ok"
        ),
        *[f"- failed: {e}" for e in np.unique(ds.error.values) if e],
        "",
        "## Configuration",
        "",
        *(
            ["The sweep as resolved (`sweep.toml`):", "", "```toml", config_text.rstrip(), "```"]
            if config_text
            else []
        ),
        "",
        "## Versions",
        "",
        _versions_line(ds.attrs),
    ]
    write_markdown(out, lines)


def _zipped_name(ds: xr.Dataset, dim: str, field: str) -> str:
    """The coordinate name merge gives a zipped field (its leaf, or its full path on a collision)."""
    leaf = field.split(".")[-1]
    return leaf if leaf in ds.coords and ds[leaf].dims == (dim,) else field.replace(".", "_")


def _point_attrs(flat: xr.Dataset, j: int) -> dict:
    """The diagnostics of one point as run attrs (for the labels and flags of labels.py)."""
    out = {}
    for name in (
        "sampled_ok",
        "rhat_cka",
        "acceptance",
        "map_converged",
        "map_method",
        "sampler",
        "reweighted_ok",
    ):
        if name in flat:
            value = flat[name].values[j]
            out[name] = str(value) if name in ("map_method", "sampler") else float(value)
    out["map"] = out.get("map_method", "")
    return out


def _point_label(flat: xr.Dataset, j: int, dims: list[str]) -> str:
    return ", ".join(f"{d}={flat[d].values[j]}" for d in dims)
