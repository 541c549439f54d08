"""Run Dataset attrs of an estimate, made by one generic function, and read back by name.

For an estimator E that ran: E_result (the Result member's name), E_method, E_fallback, E_message,
and E_<field> for every field of its info: bool -> int; None -> "none"; int, float, str as they
are; 1-D numeric arrays and tuples of numbers -> float arrays; dicts and other tuples (of strings, of
NamedTuples such as the SMC runs) -> JSON text; options objects -> repr. Arrays of two or more
dimensions are no attrs: their shapes are listed (the "arrays" attr, meta.json's "arrays").
"""

from __future__ import annotations

import json
import numbers

import numpy as np

from ..estimators.base import KernelEstimate
from ..estimators.options import Options

NONE = "none"


class _Shape(tuple):
    """The shape of an info array of two or more dimensions (listed, not stored)."""


def estimate_attrs(estimate: KernelEstimate) -> tuple[dict, dict]:
    """(attrs, shapes) of one estimate: its E_* attrs, and {E_field: shape} of its >= 2-D info arrays."""
    name = estimate.estimator
    attrs = {
        f"{name}_result": estimate.result.name,
        f"{name}_method": estimate.method,
        f"{name}_fallback": estimate.fallback,
        f"{name}_message": estimate.message,
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
        return repr(value)
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
        return repr(value)
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def estimator_attrs(attrs, estimators) -> dict:
    """Every E_* attr of the `estimators` (names) that ran, in the attrs' order."""
    prefixes = tuple(f"{name}_" for name in estimators if name != "nngp")
    return {k: v for k, v in attrs.items() if prefixes and k.startswith(prefixes)}


def plain(value):
    """An attr as a JSON value: arrays as lists, NumPy scalars as numbers, NaN and inf as null."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
