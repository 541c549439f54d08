"""Experiments: configs, runs, run folders and reports."""

from .config import ExperimentConfig, load_config
from .output import load_results, write_report, write_run
from .run import run

__all__ = ["ExperimentConfig", "load_config", "run", "write_run", "write_report", "load_results"]
