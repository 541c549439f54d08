"""Names shown to readers: estimator labels with their method and flags, field labels, numbers ± SE.

One place for them, so the CLI tables, the reports and the figures say the same thing.
"""

from __future__ import annotations

import math

import numpy as np

from ..estimators.registry import REGISTRY

# dotted config fields -> axis labels (matplotlib mathtext) and plain text (tables, terminals)
_FIELDS = {
    "network.width": ("width $N$", "width N"),
    "network.depth": ("depth $L$", "depth L"),
    "network.g_w": ("$g_w$", "g_w"),
    "network.g_w_over_g_c": ("$g_w/g_c$", "g_w/g_c"),
    "network.g_b": ("$g_b$", "g_b"),
    "network.g_in": (r"$g_\mathrm{in}$", "g_in"),
    "network.kappa": (r"noise $\kappa$", "kappa"),
    "network.activation": (r"activation $\phi$", "activation"),
    "data.n_train": ("training inputs $P$", "P"),
    "data.n_test": (r"test inputs $P_\mathrm{test}$", "P_test"),
    "data.task": ("task", "task"),
    "data.classes": ("classes", "classes"),
    "data.dim": ("input dimension $d$", "d"),
    "data.noise": ("XOR noise", "XOR noise"),
    "data.seed": ("data seed", "data seed"),
    "seed": ("seed", "seed"),
    "methods.importance.n_samples": ("MAP importance samples", "MAP IS samples"),
    "methods.sampler": ("sampler", "sampler"),
    "methods.map_method": ("MAP method", "MAP method"),
    "methods.monte_carlo.n_samples": ("first-order Monte Carlo samples", "first-order MC samples"),
    "methods.solver.max_steps": ("MAP solver steps per stage", "MAP max steps"),
    "methods.reweighting.n_samples": ("reweighted networks", "reweighted networks"),
    "methods.chains.n_samples": ("steps per chain", "steps per chain"),
}


def field_label(field: str, math: bool = True) -> str:
    """A reader's name for a dotted config field, e.g. "network.width" -> "width $N$"."""
    if field in _FIELDS:
        return _FIELDS[field][0 if math else 1]
    leaf = field.split(".")[-1].replace("_", " ")
    return leaf


_SYMBOLS = {
    "network.width": "$N$",
    "network.depth": "$L$",
    "data.n_train": "$P$",
    "network.g_w_over_g_c": "$g_w/g_c$",
    "network.g_w": "$g_w$",
    "network.g_b": "$g_b$",
    "network.kappa": r"$\kappa$",
}


def field_symbol(field: str) -> str:
    """The mathematical symbol of a field for legends ("$N$"), else its reader's name."""
    return _SYMBOLS.get(field, field_label(field))


CKA_LABEL = r"$\mathrm{CKA}(C^{(\ell)}, YY^\top)$"
CKA_OUT_LABEL = r"$\mathrm{CKA}(C^{(L)}, YY^\top)$"
ADAPTATION_LABEL = r"$\mathrm{CKA} - \mathrm{CKA}_\mathrm{NNGP}$"
LAYER_LABEL = r"layer $\ell$"


SUCCESS = "success"  # Result.success.name: the E_result of an estimate that succeeded
THEORIES = {"nngp": "NNGP"}  # kernels of the run that come from no estimator (no E_* attrs)


def result_failed(result) -> bool:
    """An E_result that is a failure ("" and None: the estimator did not run)."""
    return result is not None and str(result) not in (SUCCESS, "")


def failed(attrs, name: str) -> bool:
    """The estimator `name` ran and did not succeed (its E_result)."""
    return result_failed(attrs.get(f"{name}_result"))


def approximated(attrs, name: str) -> bool:
    """The estimator `name` succeeded with a method that approximates what it estimates (E_approximation:
    the MAP from the second cumulant)."""
    value = attrs.get(f"{name}_approximation", 0)
    return not failed(attrs, name) and not isinstance(value, str) and int(value) == 1


def references(names) -> list[str]:
    """The ground-truth estimators (Estimator.reference) among `names`."""
    return [str(n) for n in names if str(n) in REGISTRY and REGISTRY[str(n)].reference]


def reference_failed(attrs) -> bool:
    """A ground-truth estimator ran and failed its diagnostics: it is no reference."""
    return any(failed(attrs, name) for name in references(REGISTRY))


def shared(points: list[dict]) -> dict:
    """The text attrs (methods, results) every one of several points has with the same value: what
    a sweep's column headers and legends may say of all of them."""
    if not points:
        return {}
    return {k: v for k, v in points[0].items() if isinstance(v, str) and all(p.get(k) == v for p in points)}


def estimator_label(name: str, attrs=None, flag: bool = True) -> str:
    """The reader's name of an estimator (Estimator.label) with its method (E_method) where it shows
    one, and, if `flag`, its failure word (Estimator.failure) where it did not succeed (E_result)."""
    attrs = attrs or {}
    record = REGISTRY.get(name)
    if record is None:
        return THEORIES.get(name, name)
    method = str(attrs.get(f"{name}_method", ""))
    label = f"{record.label} ({method})" if record.show_method and method else record.label
    return label + (f", {record.failure}" if flag and failed(attrs, name) else "")


_SE_KINDS = {  # numerics.SE_KINDS in words
    "batches": "spread of {n} batch means",
    "jackknife": "jackknife over {n} leave-one-out estimates",
    "replicas": "spread of {n} independent replicas",
}


def se_caption(attrs, names) -> str:
    """What the ± of a table means, from each estimator's own SE kind and count (E_se_kind, E_se_count)."""
    parts = []
    for name in names:
        kind, n = str(attrs.get(f"{name}_se_kind", "")), attrs.get(f"{name}_se_count")
        if kind in _SE_KINDS and n is not None:  # a count, or its text in a sweep's shared attrs
            parts.append(f"{estimator_label(name, attrs, flag=False)}: {_SE_KINDS[kind].format(n=int(n))}")
    if not parts:
        return "No estimator has a standard error here."
    return f"± one standard error where the estimator has one ({'; '.join(parts)})."


_SUPERSCRIPT = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")


def layer_kernel(layer) -> str:
    """C⁽ˡ⁾ of a layer in plain text (reports): C⁽⁰⁾ the input kernel."""
    return "C" + f"({layer})".translate(_SUPERSCRIPT)


def fmt_se(value: float, se: float | None = None, digits: int = 4) -> str:
    """`value ± se` rounded to the second significant digit of the SE; `value` to `digits`
    decimals where there is no SE (exact estimators and theories without one)."""
    if value is None or not np.isfinite(value):
        return "NaN"
    if se is None or not np.isfinite(se) or se <= 1e-9 * max(abs(value), 1e-300) or se < 1e-12:
        return f"{value:.{digits}f}"  # no SE, or one at rounding level (the input kernel C0)
    decimals = min(12, max(0, 1 - math.floor(math.log10(se))))
    return f"{value:.{decimals}f} ± {se:.{decimals}f}"


def fmt_number(value, digits: int = 5) -> str:
    """A number with `digits` significant digits; lists element-wise; text as it is."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_number(v, digits) for v in value) + "]"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.{digits}g}" if np.isfinite(value) else ("NaN" if np.isnan(value) else str(value))
