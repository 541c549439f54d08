"""The README's Python examples run as saved scripts (they are the users' first contact)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_the_documented_python_blocks():
    blocks = _python_blocks()
    # no thread setting: the package's factorisations cannot deadlock (linalg.py)
    assert blocks[0].startswith("import critical_kernels as ck\n") and "use_one_xla_thread" not in blocks[0]
    assert "ck.sample_posterior" in blocks[1]
    assert 'if __name__ == "__main__":' in blocks[2]  # the sweep snippet starts worker processes
    assert "SLURMCluster" in blocks[3]  # HPC set-up, needs dask-jobqueue: not run


@pytest.mark.slow
def test_readme_estimator_examples_run_as_a_script(tmp_path):
    script = tmp_path / "readme_example.py"
    script.write_text("\n".join(_python_blocks()[:2]))  # the third starts a 40-point sweep
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "class_error" in result.stdout
