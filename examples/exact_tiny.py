"""Exact posterior (importance-weighted prior networks) against the MAP and first-order kernels on
tiny problems (P = 8): the fraction of the exact CKA adaptation each theory captures, per layer.

Run: python examples/exact_tiny.py   (from the repository root; MNIST from ../shared/data/mnist)
"""

import critical_kernels as ck

if __name__ == "__main__":
    for task in ("mnist", "xor"):
        if task == "mnist":
            data = ck.datasets.mnist_binary((0, 3), path="../shared/data/mnist", n_train=8, n_test=0, seed=1)
        else:
            data = ck.datasets.xor(n_train=8, n_test=0, dim=10, seed=1)
        for L in (1, 2):
            for N in (20, 50):
                spec = ck.NetworkSpec(depth=L, width=N, g_w=1.5, g_b=0.1, kappa=0.1)
                exact = ck.exact_posterior_kernels(
                    spec, data.X, data.Y, options=ck.PriorImportance(300_000), key=2
                )
                base = ck.cka_layers(ck.nngp_kernels(spec, data.X), data.Y)
                adaptation = ck.cka_layers(exact.kernels, data.Y) - base
                tilted = ck.Fallback(ck.ImportanceSampling(32768), ck.SecondCumulant(32768))
                solved = ck.solve_map(spec, data.X, data.Y, tilted=tilted, key=3, throw=False)
                first = ck.perturbative_kernels(spec, data.X, data.Y, options=ck.MonteCarlo(32768), key=4)
                captured = {
                    name: ((ck.cka_layers(est.kernels, data.Y) - base)[1:] / adaptation[1:]).round(3)
                    for name, est in (("map", solved), ("first order", first))
                }
                print(
                    f"{task} L={L} N={N}: ESS {exact.info.ess:.0f}, "
                    f"exact adaptation {adaptation[1:].round(5)}, "
                    f"captured {captured} (MAP: {solved.method}, {solved.result.name})"
                )
