from pathlib import Path

import jax
import threadpoolctl

jax.config.update("jax_enable_x64", True)
# one BLAS thread for the whole session, as the package's entry points use (numerics.blas_threads)
_BLAS_LIMIT = threadpoolctl.threadpool_limits(limits=1, user_api="blas")

# the MNIST test-set idx files beside the checkout (../shared/data/mnist); never shipped
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
