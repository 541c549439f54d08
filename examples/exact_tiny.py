import numpy as np, critical_kernels as ck
for task in ("mnist", "xor"):
    if task == "mnist":
        data = ck.datasets.mnist_binary((0, 3), path="../shared/data/mnist", n_train=8, n_test=0, seed=1)
    else:
        data = ck.datasets.xor(n_train=8, n_test=0, dim=10, seed=1)
    for L in (1, 2):
        for N in (20, 50):
            spec = ck.NetworkSpec(depth=L, width=N, g_w=1.5, g_b=0.1, kappa=0.1)
            ex = ck.exact_posterior_kernels(spec, data.X, data.Y, n_networks=300_000, key=2)
            base = ck.cka_layers(ck.nngp_kernels(spec, data.X), data.Y)
            a_ex = ck.cka_layers(ex.kernels, data.Y) - base
            m = ck.solve_map(spec, data.X, data.Y, n_samples=32768, key=3, throw=False)
            p = ck.perturbative_kernels(spec, data.X, data.Y, n_samples=32768, key=4)
            print(task, "L", L, "N", N, "ess %.0f" % ex.ess, "exact", a_ex[1:].round(5), "map/exact", (( m.cka - base)[1:] / a_ex[1:]).round(3), "pert/exact", ((p.cka - base)[1:] / a_ex[1:]).round(3), m.method)
