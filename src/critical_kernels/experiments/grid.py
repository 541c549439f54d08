"""The grid of a sweep: a sweep config is an experiment config with a [sweep] table whose keys are
dotted fields and whose values are lists; the grid is their product. A key naming several fields,
"network.width,data.n_train", varies them together (each value a list with one entry per field),
e.g. width and P at fixed alpha. Every point is validated before anything runs, and is identified by
the hash of its resolved config (its cache key).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from .config import ExperimentConfig, apply_overrides, read_toml, set_field, validate

CACHE_FORMAT = 2  # bump when the Dataset a point stores changes, so old caches are recomputed


@dataclass(frozen=True)
class Axis:
    """One grid dimension: the fields it sets and one tuple of values per grid index."""

    name: str
    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Point:
    """One grid point: its index along every axis, its resolved config and that config's hash."""

    index: tuple[int, ...]
    config: ExperimentConfig

    @cached_property
    def key(self) -> str:
        return config_hash(self.config)


@dataclass(frozen=True)
class Sweep:
    name: str
    axes: tuple[Axis, ...]
    points: tuple[Point, ...]
    raw: dict

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(axis.values) for axis in self.axes)


def config_hash(config: ExperimentConfig) -> str:
    """Hash of a resolved config, the package version and the cache format (the cache key of a point)."""
    identity = {"version": __version__, "format": CACHE_FORMAT, "config": config.model_dump(mode="json")}
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_sweep(source: str | Path | dict, overrides: Sequence[str] = ()) -> Sweep:
    """Parse and validate a sweep config: every grid point is validated before anything runs."""
    raw = apply_overrides(read_toml(source), overrides)
    table = raw.pop("sweep", None)
    if not isinstance(table, dict) or not table:
        raise InputError('sweep: the config needs a [sweep] table of lists, e.g. "network.g_w" = [1, 2]')
    axes = [_axis(key, values) for key, values in table.items()]
    seen = {}
    for key, axis in zip(table, axes, strict=True):
        for field in axis.fields:
            if field in seen:
                where = f'in "{key}"' if seen[field] == key else f'in "{seen[field]}" and "{key}"'
                raise InputError(f"sweep.{field}: swept twice ({where}); sweep each field in one key only")
            seen[field] = key
    names = [axis.name for axis in axes]
    if len(set(names)) < len(names):  # two fields with the same leaf name: use full paths
        axes = [Axis(a.fields[0].replace(".", "_"), a.fields, a.values) for a in axes]
    points = []
    for index in itertools.product(*(range(len(a.values)) for a in axes)):
        point_raw = json.loads(json.dumps(raw))
        for axis, i in zip(axes, index, strict=True):
            for field, value in zip(axis.fields, axis.values[i], strict=True):
                set_field(point_raw, field, value)
        label = ", ".join(f"{a.name}={coordinate(a.values[i][0])}" for a, i in zip(axes, index, strict=True))
        points.append(Point(index, validate(point_raw, where=f"sweep point ({label}): ")))
    return Sweep(str(raw.get("name", "sweep")), tuple(axes), tuple(points), raw)


def _axis(key: str, values) -> Axis:
    fields = tuple(f.strip() for f in key.split(","))
    if not isinstance(values, list) or not values:
        raise InputError(f"sweep.{key}: must be a non-empty list (got {values!r})")
    if len(fields) == 1:
        rows = tuple((v,) for v in values)
    else:
        if not all(isinstance(v, list) and len(v) == len(fields) for v in values):
            raise InputError(f"sweep.{key}: every value must be a list of {len(fields)} (one per field)")
        rows = tuple(tuple(v) for v in values)
    if len({json.dumps(r) for r in rows}) < len(rows):
        raise InputError(f"sweep.{key}: a value is repeated (got {values!r})")
    return Axis(fields[0].split(".")[-1], fields, rows)


def coordinate(value):
    """A grid coordinate: scalars as they are, per-layer lists as text."""
    return value if isinstance(value, int | float | str | bool) else json.dumps(value)
