"""Experiments: configs, runs, run folders and reports."""

from .config import ExperimentConfig, load_config
from .io import load_results
from .report import write_report, write_run
from .runner import run
from .sweep import Dask, Local, Serial, Sweep, load_point, load_sweep, load_sweep_results, merge, run_sweep
from .sweep_report import write_sweep_report

__all__ = [
    "ExperimentConfig",
    "load_config",
    "run",
    "write_run",
    "write_report",
    "load_results",
    "Sweep",
    "load_sweep",
    "run_sweep",
    "Serial",
    "Local",
    "Dask",
    "merge",
    "load_point",
    "load_sweep_results",
    "write_sweep_report",
]
