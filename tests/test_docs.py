"""The documentation site builds with `mkdocs build --strict` (broken links, missing API objects and
docstring warnings fail it) and its API page renders the estimators' docstrings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    for name in ("solve_map", "perturbative_kernels", "KernelEstimate", "NetworkSpec", "ImportanceSampling"):
        assert name in api, name
    assert (site / "demo_cka_per_layer.png").is_file()
