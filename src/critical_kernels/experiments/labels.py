"""Names shown to readers: estimator labels with their method and flags, field labels, numbers ± SE.

One place for them, so the CLI tables, the reports and the figures say the same thing.
"""

from __future__ import annotations

import math

import numpy as np

_TILTED = {"linear": "exact Gaussian", "importance": "importance", "cumulant": "second cumulant"}
_SAMPLERS = {"mala": "MALA", "hmc": "HMC", "nuts": "NUTS", "langevin": "Langevin", "ula": "Langevin"}

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


def map_label(attrs) -> str:
    """ "MAP (adaptive importance)", "MAP (importance)", "MAP (second cumulant)" or "MAP (exact
    Gaussian)" from a run's attrs."""
    method = str(attrs.get("map_method", ""))
    tilted = method.split(" ")[0]
    if tilted == "importance" and "(adaptive)" in method:
        return "MAP (adaptive importance)"
    return f"MAP ({_TILTED[tilted]})" if tilted in _TILTED else "MAP"


def map_is_cumulant(attrs) -> bool:
    """The MAP kernels came from the second-cumulant approximation (chosen or fallen back to)."""
    return "cumulant" in str(attrs.get("map_method", ""))


def sampled_failed(attrs) -> bool:
    """The sampled networks failed their diagnostics (R-hat of the CKA, acceptance)."""
    ok = attrs.get("sampled_ok")
    if ok is not None and np.isfinite(float(ok)):
        return not bool(int(ok))
    rhat, acc = float(attrs.get("rhat_cka", np.nan)), float(attrs.get("acceptance", np.nan))
    return (np.isfinite(rhat) and rhat > 1.01) or (np.isfinite(acc) and acc < 0.1)


def map_failed(attrs) -> bool:
    return _flag_failed(attrs, "map_converged")


def _flag_failed(attrs, key: str) -> bool:
    value = attrs.get(key)
    return value is not None and np.isfinite(float(value)) and not bool(int(value))


def reweighted_failed(attrs) -> bool:
    """The reweighted estimator failed (ESS below its threshold, or no converged saddle point)."""
    return _flag_failed(attrs, "reweighted_ok")


def estimator_label(name: str, attrs=None, flag: bool = True) -> str:
    """The reader's name of an estimator, with its method and, if `flag`, ", not converged"."""
    attrs = attrs or {}
    if name == "nngp":
        return "NNGP"
    if name == "perturbative":
        return "first order"
    if name == "map":
        label = map_label(attrs)
        return label + (f", {NOT_CONVERGED}" if flag and map_failed(attrs) else "")
    if name == "sampled":
        sampler = _SAMPLERS.get(str(attrs.get("sampler", "")), "")
        space = ", pre-activations" if str(attrs.get("sampled_space", "")) == "preactivation" else ""
        label = f"sampled ({sampler}{space})" if sampler else "sampled"
        return label + (f", {NOT_CONVERGED}" if flag and sampled_failed(attrs) else "")
    if name == "reweighted":
        smc = " (tempered SMC)" if str(attrs.get("reweighted_method", "")) == "tempered SMC" else ""
        return f"reweighted{smc}" + (", failed" if flag and reweighted_failed(attrs) else "")
    if name == "linear_exact":
        return "exact (linear)" + (", failed" if flag and _flag_failed(attrs, "linear_exact_ok") else "")
    return name


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
    return f"{value:.{digits}g}" if np.isfinite(value) else "NaN"
