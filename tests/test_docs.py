"""The documentation site builds with `mkdocs build --strict` (broken links, missing API objects and
docstring warnings fail it) and its API page renders the estimators' docstrings."""

import os
import re
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


def _defined_equations(theory: str) -> set[str]:
    """T-numbers the theory page defines: in a heading (ranges such as T3–T7 included), a \\tag{Tn},
    or a bold paragraph lead such as **Pre-activation parameterisation (T19).**"""
    lines = [line for line in theory.splitlines() if line.startswith("#") or line.startswith("**")]
    defined = set(re.findall(r"\\tag\{T(\d+)\}", theory))
    for line in lines:
        for a, b in re.findall(r"T(\d+)\s*[–-]\s*T(\d+)", line):
            defined |= {str(n) for n in range(int(a), int(b) + 1)}
        defined |= set(re.findall(r"\bT(\d+)\b", line))
    return defined


def test_every_equation_the_code_cites_is_on_the_theory_page():
    # comments and docstrings cite T-numbers; each must be defined on docs/theory.md
    cited = set()
    for path in (ROOT / "src" / "critical_kernels").rglob("*.py"):
        cited |= set(re.findall(r"\bT(\d{1,2})\b", path.read_text()))
    missing = cited - _defined_equations((ROOT / "docs" / "theory.md").read_text())
    assert cited and not missing, sorted(missing, key=int)


def _modules_with_examples() -> list[str]:
    package = ROOT / "src" / "critical_kernels"
    return sorted(
        ".".join(("critical_kernels",) + path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if ">>>" in path.read_text()
    )


SLOW_EXAMPLES = {"critical_kernels.estimators.reweighted", "critical_kernels.estimators.sampled"}  # > 5 s


@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_EXAMPLES else m for m in _modules_with_examples()],
)
def test_docstring_examples_run(module):
    # every `>>>` line in the package's docstrings runs, and its shown output is what it prints
    import doctest
    import importlib

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} failed"
