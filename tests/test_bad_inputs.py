"""A corpus of bad inputs: the CLI exits 2 with one line naming the field and what to do, leaves
nothing behind, and the Python API raises the project's errors (InputError, SpecError)."""

import gzip
import json
import math
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import critical_kernels as ck
from critical_kernels.cli import app
from critical_kernels.experiments import Serial, load_config, load_results, load_sweep, run_sweep
from critical_kernels.experiments.io import MARKER

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.toml"
runner = CliRunner()

BASE = """
name = "bad"
[data]
task = "xor"
n_train = 8
n_test = 4
dim = 3
[network]
depth = 1
width = 20
[methods]
map = false
perturbative = false
[methods.monte_carlo]
n_samples = 256
"""


def _file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _config(tmp: Path, extra: str = "", base: str = BASE) -> Path:
    return _file(tmp, "config.toml", base + extra)


def _data_config(tmp: Path, task: str, path: Path) -> Path:
    return _config(tmp, base=BASE.replace('task = "xor"', f'task = "{task}"\npath = "{path}"'))


def _marked(tmp: Path, name: str, kind: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({"kind": kind, "version": "0"}))
    (folder / "report.md").write_text("# earlier results\n")
    return folder


def _npz(tmp: Path, **arrays) -> Path:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return path


def _mnist(tmp: Path, images: bytes) -> Path:
    """A config reading MNIST idx files from tmp/mnist, with the given (broken) images file."""
    _file(tmp, "mnist/t10k-images-idx3-ubyte.gz", images)
    _file(tmp, "mnist/t10k-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x03"))
    return _data_config(tmp, "mnist", tmp / "mnist")


def _sweep(tmp: Path, table: str = '"network.width" = [10, 20]\n') -> Path:
    return _config(tmp, "[sweep]\n" + table)


# id -> (tmp -> (CLI arguments, text the one error line must contain))
CLI_CASES = {
    "config is a directory": lambda t: (["run", t], "is a directory"),
    "config missing": lambda t: (["run", t / "none.toml"], "does not exist"),
    "config not UTF-8": lambda t: (["run", _file(t, "c.toml", b"name = '\xff\xfe'\n")], "UTF-8"),
    "config not TOML": lambda t: (["run", _file(t, "c.toml", "[network\nwidth = 3")], "not valid TOML"),
    "run config with an empty [sweep] table": lambda t: (["run", _config(t, "[sweep]\n")], "sweep"),
    "unknown section": lambda t: (["run", _config(t, "[netwrk]\nwidth = 3\n")], "netwrk"),
    "unknown field": lambda t: (["run", TINY, "--set", "network.widht=3"], "network.widht"),
    "unknown activation": lambda t: (
        ["run", TINY, "--set", "network.activation=swish"],
        "network.activation",
    ),
    "negative kappa in TOML": lambda t: (
        ["run", _config(t, base=BASE.replace("width = 20", "width = 20\nkappa = -0.1"))],
        "network.kappa",
    ),
    "width = true": lambda t: (["run", TINY, "--set", "network.width=true"], "network.width"),
    "width = 2.5": lambda t: (["run", TINY, "--set", "network.width=2.5"], "network.width"),
    'width = "50" (a string)': lambda t: (["run", TINY, "--set", 'network.width="50"'], "network.width"),
    'kappa = "0.1" (a string)': lambda t: (["run", TINY, "--set", 'network.kappa="0.1"'], "network.kappa"),
    "sampled = 1 (not a boolean)": lambda t: (["run", TINY, "--set", "methods.sampled=1"], "methods.sampled"),
    "classes [0, 11] of digits": lambda t: (
        ["run", TINY, "--set", "data.task='digits'", "--set", "data.classes=[0, 11]"],
        "data.classes",
    ),
    "classes [3, 3]": lambda t: (["run", TINY, "--set", "data.classes=[3, 3]"], "data.classes"),
    "n_train beyond the data": lambda t: (
        ["run", TINY, "--set", "data.task='digits'", "--set", "data.n_train=5000", "--out", t / "o"],
        "n_train",
    ),
    "name escapes runs/": lambda t: (["run", TINY, "--set", "name=../../x"], "name"),
    "name is ..": lambda t: (["run", TINY, "--set", "name='..'"], "name"),
    "--set without =": lambda t: (["run", TINY, "--set", "network.width"], "--set"),
    "--set empty key": lambda t: (["run", TINY, "--set", "network.=3"], "--set"),
    "run config with a [sweep] table": lambda t: (
        ["run", _sweep(t)],
        "critical-kernels sweep",
    ),
    "corrupt .gz (mnist)": lambda t: (
        ["run", _mnist(t, b"\x1f\x8b\x08not really gzip"), "--out", t / "o"],
        "gzip",
    ),
    "truncated .gz (mnist)": lambda t: (
        ["run", _mnist(t, gzip.compress(b"\x00\x00\x08\x03" + bytes(100))[:20]), "--out", t / "o"],
        "t10k-images-idx3-ubyte.gz",
    ),
    "mnist files missing": lambda t: (["run", _data_config(t, "mnist", t), "--out", t / "o"], "t10k-images"),
    "corrupt .npz": lambda t: (
        ["run", _data_config(t, "file", _file(t, "d.npz", b"PK\x03\x04 broken")), "--out", t / "o"],
        ".npz",
    ),
    ".npz without Y": lambda t: (
        ["run", _data_config(t, "file", _npz(t, X=np.ones((4, 2)))), "--out", t / "o"],
        "missing arrays",
    ),
    ".npz with 3-D X": lambda t: (
        ["run", _data_config(t, "file", _npz(t, X=np.ones((4, 2, 2)), Y=np.ones(4))), "--out", t / "o"],
        "X: expected 2-D",
    ),
    "corrupt CSV": lambda t: (
        ["run", _data_config(t, "file", _file(t, "d.csv", "a,b,c\n1,2\n")), "--out", t / "o"],
        "CSV",
    ),
    "NaN in a CSV": lambda t: (
        ["run", _data_config(t, "file", _file(t, "d.csv", "1,2,1\nnan,3,-1\n0,1,1\n")), "--out", t / "o"],
        "NaN",
    ),
    "empty CSV": lambda t: (
        ["run", _data_config(t, "file", _file(t, "d.csv", "")), "--out", t / "o"],
        "d.csv",
    ),
    "data file of unknown type": lambda t: (
        ["run", _data_config(t, "file", _file(t, "d.txt", "1 2")), "--out", t / "o"],
        "unsupported file type",
    ),
    "--out an existing file": lambda t: (["run", TINY, "--out", _file(t, "f", "x")], "is a file"),
    "--out below a file": lambda t: (["run", TINY, "--out", _file(t, "f", "x") / "sub"], "below the file"),
    "--out not writable": lambda t: (
        ["run", TINY, "--out", "/proc/ck_test/out"],
        "cannot write",
    ),
    "--out a folder not written by this tool": lambda t: (
        ["run", TINY, "--out", _file(t, "mine/notes.txt", "keep").parent],
        "--force",
    ),
    "run into its own run folder": lambda t: (["run", TINY, "--out", _marked(t, "r", "run")], "--force"),
    "run into a sweep folder, even with --force": lambda t: (
        ["run", TINY, "--out", _marked(t, "s", "sweep"), "--force"],
        "is a sweep folder",
    ),
    "sweep into a run folder, even with --force": lambda t: (
        ["sweep", _sweep(t), "--out", _marked(t, "r", "run"), "--force"],
        "is a run folder",
    ),
    "sweep into its own folder without --resume": lambda t: (
        ["sweep", _sweep(t), "--out", _marked(t, "s", "sweep")],
        "--resume",
    ),
    "demo into a run folder": lambda t: (["demo", "--out", _marked(t, "r", "run"), "--resume"], "run folder"),
    "demo into its own folder without --resume": lambda t: (
        ["demo", "--out", _marked(t, "d", "demo")],
        "--resume",
    ),
    "a field swept twice": lambda t: (
        [
            "sweep",
            _sweep(t, '"network.width" = [10, 20]\n"network.width,data.n_train" = [[10, 6], [20, 8]]\n'),
        ],
        "network.width: swept twice",
    ),
    "sweep without a [sweep] table": lambda t: (["sweep", _config(t)], "[sweep] table"),
    "sweep value not a list": lambda t: (["sweep", _sweep(t, '"network.width" = 10\n')], "non-empty list"),
    "sweep point invalid": lambda t: (["sweep", _sweep(t, '"network.depth" = [1, 0]\n')], "network.depth"),
    "--workers 0": lambda t: (
        ["sweep", _sweep(t), "--workers", "0"],
        "--workers",
    ),
    "--workers abc": lambda t: (
        ["sweep", _sweep(t), "--workers", "abc"],
        "--workers",
    ),
    "--executor foo": lambda t: (
        ["sweep", _sweep(t), "--executor", "foo"],
        "--executor",
    ),
    "unknown option": lambda t: (["run", TINY, "--bogus"], "--bogus"),
    "missing argument": lambda t: (["run"], "config"),
    "report of a missing folder": lambda t: (["report", t / "none"], "not a folder"),
    "report of a folder without results": lambda t: (["report", t], "results.nc"),
    "report of a corrupt results.nc": lambda t: (
        ["report", _file(t, "r/results.nc", b"CDF\x01 truncated").parent],
        "not a readable NetCDF",
    ),
    "report of a corrupt sweep.nc": lambda t: (
        ["report", _file(t, "s/sweep.nc", b"\x89HDF\r\n garbage").parent],
        "not a readable NetCDF",
    ),
    "criticality of an unknown activation": lambda t: (["criticality", "--activation", "swish"], "swish"),
}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default folders (runs/NAME) land here
    args, expected = CLI_CASES[case](work)
    before = _tree(work)
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert expected in lines[0], lines[0]
    assert _tree(work) == before, "bad input left files behind"


def test_unreachable_scheduler_fails_fast_with_one_line(tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed")
    monkeypatch.chdir(tmp_path)
    config = _sweep(tmp_path, '"network.width" = [10]\n')
    before = _tree(tmp_path)
    start = time.perf_counter()
    result = runner.invoke(app, ["sweep", str(config), "--scheduler", "tcp://127.0.0.1:1"])
    assert time.perf_counter() - start < 5
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--scheduler" in lines[0], result.output
    assert _tree(tmp_path) == before


def test_sweep_help_keeps_brackets_and_version_and_help():
    result = runner.invoke(app, ["sweep", "--help"], terminal_width=100)
    assert result.exit_code == 0 and "[sweep]" in result.output and "--force" in result.output
    assert "<bool>" not in result.output and "\\[" not in result.output  # flags show no type, no escapes
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"critical-kernels {ck.__version__}"
    result = runner.invoke(app, ["--help"], terminal_width=100)
    assert "finite-width Bayesian deep networks" in result.output and "demo" in result.output


def test_error_text_is_not_eaten_by_markup(tmp_path):
    result = runner.invoke(app, ["sweep", str(_config(tmp_path))])
    assert "[sweep] table" in result.output  # rich markup would swallow "[sweep]"


X = np.random.default_rng(0).standard_normal((6, 3))
Y = np.sign(X[:, :1])
SPEC = ck.NetworkSpec(depth=1, width=10, g_b=0.1)

API_CASES = {
    "nngp_kernels of a string spec": lambda t: ck.nngp_kernels("erf", X),
    "cka of a NaN kernel": lambda t: ck.cka(np.full((6, 6), np.nan), Y),
    "cka of a wrong shape": lambda t: ck.cka(np.eye(5), Y),
    "exact posterior with n_samples=0": lambda t: ck.exact_posterior_kernels(
        SPEC, X, Y, options=ck.PriorImportance(n_samples=0)
    ),
    "test_error with mismatched lengths": lambda t: ck.test_error(np.zeros(10), np.ones(20)),
    "xor with n_train=-3": lambda t: ck.datasets.xor(n_train=-3),
    "xor with n_test=2.5": lambda t: ck.datasets.xor(n_test=2.5),
    "digits with class 11": lambda t: ck.datasets.digits_binary((0, 11), n_train=10),
    "digits with targets='posneg'": lambda t: ck.datasets.digits_binary(n_train=10, targets="posneg"),
    "test_loss with mismatched rows": lambda t: ck.test_loss(
        ck.Predictive(np.zeros((3, 1)), np.ones((3, 1))), Y
    ),
    "kernel_predictive without test rows": lambda t: ck.kernel_predictive(np.eye(6), Y, 0.1),
    "from_arrays with NaN": lambda t: ck.datasets.from_arrays([[np.nan, 1.0], [0.0, 1.0]], [1.0, -1.0]),
    "from_file of a corrupt .npz": lambda t: ck.datasets.from_file(_file(t, "d.npz", b"PK\x03\x04 no")),
    "from_file of a directory": lambda t: ck.datasets.from_file(t),
    "load_config('.')": lambda t: load_config("."),
    "load_config width=true": lambda t: load_config(TINY, ["network.width=true"]),
    "load_results of a corrupt file": lambda t: load_results(_file(t, "r/results.nc", b"CDF\x01 no").parent),
    "load_sweep with a field swept twice": lambda t: load_sweep(
        _sweep(t, '"network.g_w" = [1.0, 2.0]\n"network.g_w,network.g_b" = [[1.0, 0.1], [2.0, 0.2]]\n')
    ),
    "run_sweep into a run folder": lambda t: run_sweep(
        load_sweep(_sweep(t)), _marked(t, "r", "run"), executor=Serial()
    ),
}
SPEC_CASES = {
    "NetworkSpec depth=0": dict(depth=0),
    "NetworkSpec width=True": dict(depth=1, width=True),
    "NetworkSpec kappa=-1": dict(depth=1, kappa=-1.0),
    "activation=np.tanh (not traceable)": dict(depth=1, activation=np.tanh),
    "activation=math.tanh (not traceable)": dict(depth=1, activation=math.tanh),
    "activation=jnp.sum (not elementwise)": dict(depth=1, activation=jnp.sum),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_bad_input_raises_input_error(case, tmp_path):
    with pytest.raises(ck.InputError) as info:
        API_CASES[case](tmp_path)
    assert isinstance(info.value, ck.CriticalKernelsError) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_api_bad_spec_raises_spec_error(case):
    with pytest.raises(ck.SpecError) as info:
        ck.NetworkSpec(**SPEC_CASES[case])
    assert "\n" not in str(info.value)
    if "traceable" in case:
        assert "jax.numpy" in str(info.value)  # the advice: write it with jnp


def test_cka_layers_keeps_nan_for_a_failed_layer():
    """cka raises for a non-finite kernel; cka_layers, used on estimates that may have failed,
    reports that layer as NaN instead."""
    stack = np.stack([np.eye(6) + np.outer(Y, Y), np.full((6, 6), np.nan)])
    out = ck.cka_layers(stack, Y)
    assert np.isfinite(out[0]) and np.isnan(out[1])
