"""Run Dataset attrs of an estimate, made by one generic function, and read back by name.

For an estimator E that ran: E_result (the Result member's name), E_method (its method's label),
E_options (the method's options), E_approximation (1 where the method approximates what E
estimates), E_se_kind and E_se_count (the kind and number of the estimates behind its SE: "", 0 if
none), E_fallback ("<label of the abandoned method>: why", or ""), E_message, and E_<field> for
every field of its info: bool -> int; None -> "none"; int, float, str as they are; 1-D numeric
arrays and tuples of numbers -> float arrays; dicts and other tuples (of strings, of NamedTuples such
as the SMC runs) -> JSON text; options objects -> JSON text of their table ({"options": class name,
field: value, ...}; `options_table`). Arrays of two or more dimensions are no attrs: their shapes are
listed (the "arrays" attr, meta.json's "arrays").
"""

from __future__ import annotations

import json
import numbers

import numpy as np

from ..estimators.base import KernelEstimate
from ..estimators.options import Options, as_dict

NONE = "none"


class _Shape(tuple):
    """The shape of an info array of two or more dimensions (listed, not stored)."""


def estimate_attrs(estimate: KernelEstimate) -> tuple[dict, dict]:
    """(attrs, shapes) of one estimate: its E_* attrs, and {E_field: shape} of its >= 2-D info arrays."""
    name, method, fallback = estimate.estimator, estimate.method, estimate.fallback
    attrs = {
        f"{name}_result": estimate.result.name,
        f"{name}_method": method.label if method is not None else "",
        f"{name}_options": attr_value(method),
        f"{name}_approximation": int(method is not None and method.approximation),
        f"{name}_fallback": f"{fallback[0].label}: {fallback[1]}" if fallback else "",
        f"{name}_message": estimate.message,
        f"{name}_se_kind": estimate.estimates.kind if estimate.estimates is not None else "",
        f"{name}_se_count": len(estimate.estimates.kernels) if estimate.estimates is not None else 0,
    }
    shapes = {}
    for field, value in estimate.info._asdict().items():
        value = attr_value(value)
        if isinstance(value, _Shape):
            shapes[f"{name}_{field}"] = list(value)
        else:
            attrs[f"{name}_{field}"] = value
    return attrs, shapes


def attr_value(value):
    """A NetCDF attr for one info value (the conversion rules of the module docstring)."""
    if value is None:
        return NONE
    if isinstance(value, Options):
        return json.dumps(options_table(value))
    if isinstance(value, dict):
        return json.dumps(jsonable(value))
    if isinstance(value, tuple) and not hasattr(value, "_asdict"):
        numeric = value and all(isinstance(v, numbers.Real) for v in value)
        return np.asarray(value, dtype=float) if numeric else json.dumps(jsonable(value))
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim >= 2:
        return _Shape(array.shape)
    if array.ndim == 1:
        return array.astype(float) if array.size else "[]"
    item = array.item()
    if isinstance(item, bool):
        return int(item)
    return item if isinstance(item, int | float | str) else repr(value)


def jsonable(value):
    """Plain JSON values: NamedTuples as objects, arrays as lists, NumPy scalars as numbers."""
    if hasattr(value, "_asdict"):
        return {k: jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Options):
        return options_table(value)
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def options_table(options: Options) -> dict:
    """An options object as a plain table: {"options": its class name, field: value, ...}."""
    return {"options": type(options).__name__, **as_dict(options)}


def estimator_attrs(attrs, estimators) -> dict:
    """Every E_* attr of the `estimators` (names) that ran, in the attrs' order."""
    prefixes = tuple(f"{name}_" for name in estimators if name != "nngp")
    return {k: v for k, v in attrs.items() if prefixes and k.startswith(prefixes)}


def plain(value):
    """An attr as a JSON value: arrays as lists, NumPy scalars as numbers, NaN and inf as null, JSON
    text of a table (options, dicts) as that table."""
    if isinstance(value, str) and value.startswith("{"):
        return json.loads(value)
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
