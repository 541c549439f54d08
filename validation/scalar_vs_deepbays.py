"""The scalar theory (T23, `ck.scalar_renormalised_kernels`) against the `deepbays` package (Pacelli et
al.'s code, PyPI 0.1.11) on the same data: Q and the test loss, erf, one hidden layer, no biases,
lambda = 1 (g_in = g_w = 1), T = kappa = 1e-3, MNIST 0 vs 1 with 0/1 labels and pixelwise
standardisation (Pacelli et al.'s Fig. 1a setup), N = 50 ... 1000, P = 100 and 300.

deepbays needs torch and imports cupy unconditionally, so it is no dependency of this project: run the
two halves in two environments.

  python validation/scalar_vs_deepbays.py export /tmp/scalar.npz            # this project's venv
  /path/to/deepbays-venv/bin/python validation/scalar_vs_deepbays.py compare /tmp/scalar.npz

The second half reads the inputs and this project's numbers from the file, runs deepbays'
FC_1HL(N1, T, l0, l1, "erf") with a stub for cupy (CPU only) and prints both side by side.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
WIDTHS, SIZES, T = (50, 100, 200, 500, 1000), (100, 300), 1e-3


def export(out: str) -> None:
    import critical_kernels as ck

    arrays, rows = {}, []
    for P in SIZES:
        data = ck.datasets.mnist_binary(
            (0, 1), path=MNIST, n_train=P, n_test=500, targets="01", standardise="pixelwise"
        )
        arrays |= {f"X{P}": data.X, f"Y{P}": data.Y[:, 0], f"Xt{P}": data.X_test, f"Yt{P}": data.Y_test[:, 0]}
        for N in WIDTHS:
            spec = ck.NetworkSpec(depth=1, width=N, activation="erf", g_in=1.0, g_w=1.0, g_b=0.0, kappa=T)
            est = ck.scalar_renormalised_kernels(spec, data.X, data.Y, data.X_test)
            rows.append((P, N, est.info.q_bar, ck.test_loss(est.predictive, data.Y_test)["loss"]))
    np.savez(out, rows=np.array(rows), **arrays)


def compare(path: str) -> None:
    cupy, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    cuda.Device, cupy.cuda = object, cuda  # pyright: ignore[reportAttributeAccessIssue]
    sys.modules.setdefault("cupy", cupy)
    sys.modules.setdefault("cupy.cuda", cuda)
    import deepbays  # noqa: PLC0415

    z = np.load(path)
    print("| P | N | Q (this project) | Q (deepbays) | loss (this project) | loss (deepbays) |")
    print("|---|---|---|---|---|---|")
    for P, N, q, loss in z["rows"]:
        P, N = int(P), int(N)
        model = deepbays.rkgp.FC_1HL(N, T, 1.0, 1.0, "erf")
        model.preprocess(z[f"X{P}"], z[f"Y{P}"])  # 1-D targets: (P, 1) broadcasts wrongly there
        model.optimize()
        model.predict(z[f"Xt{P}"])
        theirs = model.averageLoss(z[f"Yt{P}"])[0]
        print(f"| {P} | {N} | {q:.6f} | {float(model.optQ):.6f} | {loss:.6f} | {float(theirs):.6f} |")


if __name__ == "__main__":
    {"export": export, "compare": compare}[sys.argv[1]](sys.argv[2])
