"""The posterior predictive of a finite network on test rows (T21) and the test loss it implies.

Given the last layer's kernel C, the readout is Gaussian: the network output f* on a test row has
mean m(C) = C_*,tr K^-1 Y and variance v(C) = C_** - C_*,tr K^-1 C_tr,* (K = C_tr,tr + kappa I); a
new label y* = f* + noise adds kappa. Over the posterior of the hidden layers the predictive mean is
<m> and the variance <v> + <m^2> - <m>^2, which is not m and v at the mean kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .errors import InputError
from .likelihood import batched_predictive_moments, predictive_moments
from .numerics import check_se_kind, ratio_jackknife, standard_error


class Predictive(NamedTuple):
    """Posterior predictive of the network output f* on the test rows (T21).

    mean, var: (P_test, D) E[f* | data] and Var[f* | data] (a new label y* has var + kappa);
    kind: how the set of estimates behind the SEs was made ("batches", "jackknife", "replicas", as for
    kernels), None where the predictive is exact (NNGP, linear closed forms, quadrature);
    means, seconds: (B, P_test, D) that set's estimates of E[f*] and E[f*^2].
    """

    mean: np.ndarray
    var: np.ndarray
    kind: str | None = None
    means: np.ndarray | None = None
    seconds: np.ndarray | None = None

    def se(self, fn=None) -> np.ndarray | None:
        """SE of fn(mean, var) (default: the mean) over the set of estimates; None where exact."""
        if self.kind is None or self.means is None or self.seconds is None:
            return None
        fn = fn or (lambda m, v: m)
        values = np.stack([fn(m, s - m**2) for m, s in zip(self.means, self.seconds, strict=True)])
        return standard_error(values, self.kind)

    @property
    def mean_se(self) -> np.ndarray | None:
        return self.se()

    @property
    def var_se(self) -> np.ndarray | None:
        return self.se(lambda m, v: v)


def from_moments(mean, second, kind: str | None = None, means=None, seconds=None) -> Predictive:
    """A Predictive from E[f*] and E[f*^2] (each (P_test, D)) and their set of estimates."""
    if kind is not None:
        check_se_kind(kind)
    mean, second = np.asarray(mean), np.asarray(second)
    sets = (None, None) if kind is None else (np.asarray(means), np.asarray(seconds))
    return Predictive(mean, second - mean**2, kind, *sets)


def from_weighted_sums(sw, swm, sws) -> Predictive:
    """The self-normalised predictive <m> = sum w m / sum w, <s> = sum w s / sum w (T21) from per-block
    sums on one weight scale, sw (B,) and swm, sws (B, P_test, D), with their delete-one-block
    estimates (kind "jackknife")."""
    mean, means = ratio_jackknife(sw, swm)
    second, seconds = ratio_jackknife(sw, sws)
    return from_moments(mean, second, "jackknife", means, seconds)


def kernel_predictive(kernels, Y, kappa: float, estimates=None) -> Predictive:
    """m and v (T21) at one kernel: the NNGP's, the MAP's (`estimates`: its Estimates, for the SE).

    Args:
      kernels: (L+1, P', P') or the output kernel (P', P'), training rows first.
      Y: (P, D) training targets (P < P'); kappa: the likelihood's noise variance.
      estimates: the estimate's set of kernel estimates (`KernelEstimate.estimates`) or None.
    """
    C = np.asarray(kernels)
    C = C[-1] if C.ndim == 3 else C
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    if C.shape[-1] <= len(Y):
        raise InputError(f"kernel_predictive: the kernel has no test rows ({C.shape[-1]} rows, P = {len(Y)})")
    m, s = (np.asarray(x) for x in predictive_moments(jnp.asarray(C), jnp.asarray(Y), kappa))
    if estimates is None:
        return from_moments(m, s)
    moments = batched_predictive_moments(jnp.asarray(estimates.kernels[:, -1]), jnp.asarray(Y), kappa)
    ms, ss = (np.asarray(x) for x in moments)
    return from_moments(m, s, estimates.kind, ms, ss)


def _scores(mean, var, Y_test) -> np.ndarray:
    """(bias^2, loss, class error): mean (m - y)^2, plus the mean predictive variance of f*
    (Pacelli et al.'s generalisation loss), and the classification error of m (`_class_error`)."""
    bias2 = np.mean((mean - Y_test) ** 2)
    return np.array([bias2, bias2 + np.mean(var), _class_error(mean, Y_test)])


def _class_error(mean, Y_test) -> float:
    """The fraction of test rows the predictive mean m classifies wrongly: one output with +-1 targets,
    the sign of m; with 0/1 targets, m > 1/2; several outputs with one-hot rows (one entry of each row
    above the others, e.g. 1 against 0 or -1), the arg max of m. NaN for any other targets (regression)."""
    values = np.unique(Y_test)
    if Y_test.shape[1] == 1 and set(values) <= {-1.0, 1.0}:
        return float(np.mean(np.sign(mean) != Y_test))
    if Y_test.shape[1] == 1 and set(values) <= {0.0, 1.0}:
        return float(np.mean((mean > 0.5) != (Y_test > 0.5)))
    one_hot = len(values) == 2 and np.all(np.sum(Y_test == values[1], axis=1) == 1)
    if Y_test.shape[1] > 1 and one_hot:
        return float(np.mean(np.argmax(mean, axis=1) != np.argmax(Y_test, axis=1)))
    return float("nan")


def test_loss(predictive: Predictive, Y_test) -> dict:
    """Test scores of a posterior predictive with their Monte Carlo SEs (0 where it is exact).

    mse: mean over test rows of (E[f*] - y)^2 (the predictor's error); loss: mse plus the mean
    Var[f*] (the expected squared error of a network drawn from the posterior, Pacelli et al. 2023);
    class_error: the fraction of test rows E[f*] classifies wrongly (sign for +-1 targets, > 1/2 for
    0/1, arg max for one-hot rows of several outputs; NaN for other targets); each with `_se`. The SEs are
    the estimator's own error on these test rows, not the sampling error of the test set.
    """
    Y_test = np.asarray(Y_test, dtype=np.float64)
    Y_test = Y_test.reshape(len(Y_test), -1) if Y_test.ndim else Y_test
    if Y_test.shape != predictive.mean.shape:
        raise InputError(
            f"test_loss: predictions {predictive.mean.shape} and Y_test {Y_test.shape} differ in shape"
        )
    values = _scores(predictive.mean, predictive.var, Y_test)
    se = predictive.se(lambda m, v: _scores(m, v, Y_test))
    se = np.zeros(3) if se is None else se
    names = ("mse", "loss", "class_error")
    scores = dict(zip(names, values.tolist(), strict=True))
    return scores | {f"{n}_se": float(s) for n, s in zip(names, se, strict=True)}


test_loss.__test__ = False  # pyright: ignore[reportFunctionMemberAccess]  (not a pytest test)
