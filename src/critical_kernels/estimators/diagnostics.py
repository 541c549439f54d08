"""Monte Carlo standard errors, R-hat and effective sample sizes (THEORY section 7)."""

from __future__ import annotations

import jax
import numpy as np
from blackjax.diagnostics import effective_sample_size, rhat


def batch_mcse(batch_means: np.ndarray) -> np.ndarray:
    """Standard error of the overall mean from batch means shaped (chains, batches, ...)."""
    flat = batch_means.reshape((-1,) + batch_means.shape[2:])
    return flat.std(axis=0, ddof=1) / np.sqrt(flat.shape[0])


@jax.jit  # one program per shape: op by op, BlackJAX's diagnostics compile ~80 small programs
def _rhat_and_ess(draws):
    return rhat(draws, 0, 1), effective_sample_size(draws, 0, 1)


def chain_diagnostics(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat and ESS over draws shaped (chains, draws, ...)."""
    shape = draws.shape[2:]
    r_hat, ess = _rhat_and_ess(draws)
    return np.asarray(r_hat).reshape(shape), np.asarray(ess).reshape(shape)
