"""The Python examples of the README and the docs run as saved scripts (they are the users' first contact).

The README carries one short example; the API walkthrough lives in docs/tutorial.md and the
experiment and cluster snippets in docs/cli.md.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


def test_readme_and_docs_have_the_documented_python_blocks():
    readme, tutorial, cli = (_python_blocks(p) for p in ("README.md", "docs/tutorial.md", "docs/cli.md"))
    # no thread setting: the package's factorisations cannot deadlock (linalg.py)
    for first in (readme[0], tutorial[0]):
        assert first.startswith("import critical_kernels as ck\n") and "use_one_xla_thread" not in first
    assert "ck.test_loss" in readme[0]
    assert not any("use_one_xla_thread" in block for block in tutorial)
    assert any("ck.sample_posterior" in block for block in tutorial)
    assert any('if __name__ == "__main__":' in block for block in cli)  # sweeps start worker processes
    assert any("SLURMCluster" in block for block in cli)  # HPC set-up, needs dask-jobqueue: not run
    for block in readme + tutorial + cli:
        compile(block, "<docs>", "exec")


EXPECTED = {  # a line each page's script prints at its end
    "README.md": "class_error",
    "docs/tutorial.md": "class_error",
    "docs/howto.md": "g_w/g_c = 2.0: chaotic",
}


@pytest.mark.parametrize("page", list(EXPECTED))
@pytest.mark.slow
def test_api_examples_run_as_a_script(tmp_path, page):
    # the README's example, and each page's blocks in order (one script: each builds on the last; a
    # block with a __main__ guard starts worker processes and is a script of its own); docs/cli.md's
    # snippets start a 40-point sweep or need a SLURM cluster, so they are only compiled
    blocks = _python_blocks(page)
    scripts = ["\n".join(b for b in blocks if "__main__" not in b)] + [b for b in blocks if "__main__" in b]
    for k, text in enumerate(scripts):
        script = tmp_path / f"example{k}.py"
        script.write_text(text)
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        if k == 0:
            assert EXPECTED[page] in result.stdout, result.stdout[-2000:]
