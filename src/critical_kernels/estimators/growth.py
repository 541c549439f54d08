"""When is a tilted single-neuron measure normalisable? (T20, issue 23: ReLU and other unbounded phi)

The tilted measure of a layer, dP(h) ∝ N(h; 0, C) exp(g phi(h)^T C~ phi(h)) (T9, T17), has the exponent
-h^T C^-1 h / 2 + g phi(h)^T C~ phi(h). Far out along a direction h = r e the activation grows like its
asymptotic part phi_inf(h) = a+ max(h, 0) + a- min(h, 0) (a+- = lim phi(t)/t as t -> +-inf: 0 for bounded
phi such as erf and tanh, a+ = 1, a- = 0 for relu and gelu, 1 and 1 for linear phi), and both terms are
quadratic in r. So the integral over r converges in every direction iff

  2 g lambda* < 1,   lambda* = sup_h phi_inf(h)^T C~ phi_inf(h) / h^T C^-1 h                    (T20)

(the sup over the range of C; a homogeneous ratio, so a sup over the unit sphere in h = C^(1/2) z). The
"growth" 2 g lambda* is the distance to the edge: bounded phi have growth 0 (always normalisable); linear
phi have lambda* = lambda_max(C^(1/2) C~ C^(1/2)) in closed form, the condition of T10's closed form. For
relu the ratio is a piecewise Rayleigh quotient, one per sign pattern of h; its sup is found by projected
gradient ascent on the sphere from many starts (the top eigenvectors of the linear problem among them),
which gives a lower bound, in tests equal to the maximum over exhaustive grids of directions.

Two consequences, both for importance sampling from the untilted N(0, C) (the MAP's tilted averages, the
Monte Carlo W~ of the reweighted estimator): its weights exp(g t) have a finite variance iff
E exp(2 g t) < inf, i.e. iff the growth is < 1/2; between 1/2 and 1 the measure exists but the
Monte Carlo estimates of its averages have infinite variance (they converge slower than 1/sqrt(M)).
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..activations import Activation
from ..numerics import psd_sqrt, symmetrize

# |phi(t)| / t at this t stands for the limit t -> inf (1e-6 off for erf or tanh, exact for relu, linear)
_FAR = 1e6
_STARTS, _STEPS = 32, 400  # ascent starts and steps for relu-like phi (P = 200: ~0.1 s once compiled)


def growth_slopes(act: Activation) -> tuple[float, float]:
    """(a+, a-): phi(t) ~ a+ t as t -> +inf and a- t as t -> -inf (0 for bounded phi)."""
    up, down = float(act.fn(jnp.asarray(_FAR))) / _FAR, float(act.fn(jnp.asarray(-_FAR))) / -_FAR
    return (0.0 if abs(up) < 1e-4 else up), (0.0 if abs(down) < 1e-4 else down)


@lru_cache(maxsize=32)
def _ascent(slopes: tuple[float, float], n: int):
    """Compiled projected gradient ascent of rho(z) = phi_inf(S z)^T A phi_inf(S z) on |z| = 1."""
    up, down = slopes

    def rho(z, S, A):
        h = S @ (z / jnp.linalg.norm(z))
        f = up * jnp.maximum(h, 0.0) + down * jnp.minimum(h, 0.0)
        return f @ A @ f

    grad = jax.vmap(jax.value_and_grad(rho), in_axes=(0, None, None))

    @jax.jit
    def run(z, S, A):
        def step(z, lr):
            _, g = grad(z, S, A)
            g = g - jnp.sum(g * z, axis=1, keepdims=True) * z  # tangent to the sphere
            z = z + lr * g / (jnp.linalg.norm(g, axis=1, keepdims=True) + 1e-300)
            return z / jnp.linalg.norm(z, axis=1, keepdims=True), None

        z, _ = jax.lax.scan(step, z, jnp.geomspace(0.3, 1e-4, _STEPS))
        return jnp.max(grad(z, S, A)[0])

    return run


def tilt_growth(act: Activation, g: float, conj, C, key=0) -> float:
    """2 g lambda* of T20 for the tilt g phi^T conj phi of N(0, C) (P x P training blocks): the tilted
    measure is normalisable iff it is < 1, importance weights from N(0, C) have finite variance iff < 1/2.
    Exact for bounded and linear-like phi (a+ = a-), a lower bound (the best of many ascents) otherwise."""
    up, down = growth_slopes(act)
    if up == 0.0 and down == 0.0:
        return 0.0
    S = psd_sqrt(jnp.asarray(C))
    A = symmetrize(jnp.asarray(conj))
    top = linalg.eigh(symmetrize(S @ A @ S))[1][:, -1]
    if up == down:  # phi_inf = a h: a Rayleigh quotient
        return float(2.0 * g * up * up * jnp.maximum(top @ S @ A @ S @ top, 0.0))
    n = A.shape[0]
    starts = jax.random.normal(jax.random.PRNGKey(key), (_STARTS, n)).at[:2].set(jnp.stack([top, -top]))
    starts = starts / jnp.linalg.norm(starts, axis=1, keepdims=True)
    return float(2.0 * g * max(float(_ascent((up, down), n)(starts, S, A)), 0.0))


def growth_problem(growth: np.ndarray) -> str:
    """The first layer whose tilted measure is not normalisable (T20), as a sentence ("" if none)."""
    bad = [l for l, v in enumerate(np.asarray(growth), start=1) if not v < 1.0]
    if not bad:
        return ""
    value = float(np.asarray(growth)[bad[0] - 1])
    shown = "inf" if math.isinf(value) else f"{value:.3g}"
    return (
        f"the tilted measure of layer {bad[0]} is not normalisable: 2 g lambda* = {shown} >= 1 (T20: the "
        "tilt g phi^T C~ phi outgrows the Gaussian for an unbounded phi)"
    )
