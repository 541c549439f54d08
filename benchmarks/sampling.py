"""Benchmark: MALA posterior sampling of finite networks, L = 2, P = N = 100 and 1000.

Prints gradient evaluations per second, ESS of the output-layer CKA per second, and the ratio of
our MALA step time (recording kernels every `thin` steps) to a bare BlackJAX MALA loop
(lax.scan of blackjax.mala steps, vmapped over the same chains, same potential, same step size)
timed in the same run. Target (issue 5): ratio <= 1.2. Compilation is excluded from both.
A second call with the same shapes is timed whole against its own warm-up + sampling time
(target, issue 11: <= 1.2, i.e. nothing is compiled again).

Run: python benchmarks/sampling.py [--sizes 100 1000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import critical_kernels as ck

ck.use_one_xla_thread()  # PJRT_NPROC=1 before the imports below start JAX's backend (runtime.py)

import blackjax  # noqa: E402

from critical_kernels.estimators import Network  # noqa: E402


def bare_mala_seconds_per_step(log_density, dim, chains, steps, step_size) -> float:
    algo = blackjax.mala(log_density, step_size)

    @jax.jit
    def run(positions, key):
        def chain(position, k):
            def body(state, kk):
                return algo.step(kk, state)[0], None

            return jax.lax.scan(body, algo.init(position), jax.random.split(k, steps))[0].position

        return jax.vmap(chain)(positions, jax.random.split(key, chains))

    positions = jax.random.normal(jax.random.PRNGKey(0), (chains, dim))
    run(positions, jax.random.PRNGKey(1)).block_until_ready()  # compile
    start = time.perf_counter()
    run(positions, jax.random.PRNGKey(2)).block_until_ready()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    print("MALA, erf, L = 2, 4 chains, thin 10; our step time vs a bare BlackJAX MALA loop")
    for n in args.sizes:
        data = ck.datasets.mnist_binary((0, 3), path="../shared/data/mnist", n_train=n, n_test=0, seed=0)
        spec = ck.NetworkSpec(depth=2, width=n, activation="erf", g_w=1.5, g_b=0.1, kappa=0.1)
        small = n <= 200
        samples, warmup = (4000, 500) if small else (200, 20)
        chains = ck.Chains(chains=4, warmup=warmup, n_samples=samples, thin=10, n_batches=4)
        start = time.perf_counter()
        post = ck.sample_posterior(spec, data.X, data.Y, chains=chains, key=0, throw=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = ck.sample_posterior(spec, data.X, data.Y, chains=chains, key=1, throw=False)
        second = time.perf_counter() - start
        alone = again.info.timings["warmup"] + again.info.timings["sampling"]
        info = post.info
        batches = info.timings["batches"][1:]  # the first includes compilation
        ours = float(np.median(batches)) / (samples // 4)
        net = Network(spec, data.X.shape[1])
        X, Y = jnp.asarray(data.X), jnp.asarray(data.Y)
        bare = bare_mala_seconds_per_step(
            lambda u: net.log_density(u, X, Y), net.dim, 4, samples // 4, float(np.mean(info.step_size))
        )
        sampling_time = sum(info.timings["batches"])
        print(
            f"P = N = {n:5d}: {net.dim} parameters; {4 / ours:9.1f} grad evals/s; "
            f"ESS(output CKA)/s {info.ess_cka[-1] / sampling_time:8.2f}; step {ours * 1e3:8.3f} ms, "
            f"bare {bare * 1e3:8.3f} ms, ratio {ours / bare:5.2f}; acceptance {info.acceptance.mean():.2f}"
        )
        # issue 11 target: a second call with the same shapes compiles nothing (<= 1.2x sampling alone)
        print(
            f"  first call {first:7.2f} s, second call {second:7.2f} s, "
            f"its warm-up + sampling {alone:7.2f} s: ratio {second / alone:5.2f}"
        )


if __name__ == "__main__":
    main()
