"""Names shown to readers: estimator labels with their method and flags, field labels, numbers ± SE.

One place for them, so the CLI tables, the reports and the figures say the same thing.
"""

from __future__ import annotations

import math

import numpy as np

NOT_CONVERGED = "not converged"

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
    "methods.n_samples": ("Monte Carlo samples", "MC samples"),
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
CUMULANT = "second cumulant"  # the MAP's method when its kernels come from the second cumulant


def result_failed(result) -> bool:
    """An E_result that is a failure ("" and None: the estimator did not run)."""
    return result is not None and str(result) not in (SUCCESS, "")


def failed(attrs, name: str) -> bool:
    """The estimator `name` ran and did not succeed (its E_result)."""
    return result_failed(attrs.get(f"{name}_result"))


def map_label(attrs) -> str:
    """ "MAP (adaptive importance)", "MAP (second cumulant)", "MAP (exact Gaussian)", ... from the
    MAP's method (map_method); "MAP" where it is not known."""
    method = str(attrs.get("map_method", ""))
    return f"MAP ({method})" if method else "MAP"


def map_is_cumulant(attrs) -> bool:
    """The MAP kernels came from the second-cumulant approximation (chosen or fallen back to)."""
    return str(attrs.get("map_method", "")) == CUMULANT


def sampled_failed(attrs) -> bool:
    """The sampled networks failed their diagnostics (R-hat of the CKA, acceptance)."""
    return failed(attrs, "sampled")


def map_failed(attrs) -> bool:
    return failed(attrs, "map")


def reweighted_failed(attrs) -> bool:
    """The reweighted estimator failed (ESS below its threshold, or no converged saddle point)."""
    return failed(attrs, "reweighted")


def shared(points: list[dict]) -> dict:
    """The text attrs (methods, results) every one of several points has with the same value: what
    a sweep's column headers and legends may say of all of them."""
    if not points:
        return {}
    return {k: v for k, v in points[0].items() if isinstance(v, str) and all(p.get(k) == v for p in points)}


def estimator_label(name: str, attrs=None, flag: bool = True) -> str:
    """The reader's name of an estimator with its method (E_method), and, if `flag`, ", not
    converged" or ", failed" where it did not succeed (E_result)."""
    attrs = attrs or {}
    method = str(attrs.get(f"{name}_method", ""))
    if name == "nngp":
        return "NNGP"
    if name == "perturbative":
        return "first order"
    if name == "map":
        label, flagged = map_label(attrs), NOT_CONVERGED
    elif name == "sampled":
        label, flagged = (f"sampled ({method})" if method else "sampled"), NOT_CONVERGED
    elif name == "reweighted":
        label, flagged = "reweighted" + (" (tempered SMC)" if method == "tempered SMC" else ""), "failed"
    elif name == "linear_exact":
        label, flagged = "exact (linear)", "failed"
    else:
        return name
    return label + (f", {flagged}" if flag and failed(attrs, name) else "")


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
