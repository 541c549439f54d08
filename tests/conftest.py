from pathlib import Path

import jax
import threadpoolctl

import critical_kernels

# one XLA thread per test process: pytest-xdist already runs one process per core (speed only; the
# default pool cannot deadlock, linalg.py, and test_runtime.py checks it in fresh processes)
critical_kernels.use_one_xla_thread()

jax.config.update("jax_enable_x64", True)
# one BLAS thread for the whole session, as the package's entry points use (numerics.blas_threads)
_BLAS_LIMIT = threadpoolctl.threadpool_limits(limits=1, user_api="blas")

# the MNIST test-set idx files (never shipped): beside the checkout (../shared/data/mnist), else the
# machine's shared folder, so a clone anywhere (CI clones to /tmp) finds them
_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist",
    Path("/work/shared/data/mnist"),
]
MNIST = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
