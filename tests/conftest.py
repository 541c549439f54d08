from pathlib import Path

import jax
import threadpoolctl

import critical_kernels

# one XLA thread per test process: pytest-xdist already runs one process per core (speed only; the
# default pool cannot deadlock, linalg.py, and test_runtime.py checks it in fresh processes)
critical_kernels.use_one_xla_thread()

jax.config.update("jax_enable_x64", True)
# compiled executables shared by the tests and xdist workers of a session (many compile the same
# functions at the same shapes): a cache folder in pytest's cache, kept between local runs
jax.config.update(
    "jax_compilation_cache_dir", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# one BLAS thread for the whole session, as the package's entry points use (numerics.blas_threads)
_BLAS_LIMIT = threadpoolctl.threadpool_limits(limits=1, user_api="blas")

# the MNIST test-set idx files (never shipped): beside the checkout (../shared/data/mnist), else the
# machine's shared folder, so a clone anywhere (CI clones to /tmp) finds them
_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist",
    Path("/work/shared/data/mnist"),
]
MNIST = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
