"""R-hat and effective sample sizes of MCMC draws (THEORY section 7); standard errors are
`numerics.standard_error`."""

from __future__ import annotations

import jax
import numpy as np
from blackjax.diagnostics import effective_sample_size, rhat


@jax.jit  # one program per shape: op by op, BlackJAX's diagnostics compile ~80 small programs
def _rhat_and_ess(draws):
    return rhat(draws, 0, 1), effective_sample_size(draws, 0, 1)


def chain_diagnostics(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat and ESS over draws shaped (chains, draws, ...)."""
    shape = draws.shape[2:]
    r_hat, ess = _rhat_and_ess(draws)
    return np.asarray(r_hat).reshape(shape), np.asarray(ess).reshape(shape)
