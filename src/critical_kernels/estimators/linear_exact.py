"""Exact posterior mean kernels of deep linear networks at any P and N (T18).

Derivation (THEORY T18; conventions of section 1 and of `nngp_kernels`). Write the network with
whitened weights: the rows of H1 (N x P') are i.i.d. N(0, C0), C0 = (g_in/d) X X^T + g_b0 11^T;
H(l+1) = sqrt(g_l/N) V_l H(l) + sqrt(g_b[l]) beta_l 1^T and f = sqrt(g_L/N) v^T H(L) + sqrt(g_b[L]) xi_L 1
with V_l, beta_l, v standard normal (g_l = spec.gains[l-1], the variance of W(l); g_b[l] =
spec.bias_vars[l]). Going down from the readout, a_L = v, e_l = a_l/|a_l|, a_(l-1) = V_(l-1)^T e_l:
the a_l are i.i.d. N(0, I_N), so u_l = |a_l|^2/N are independent chi^2_N/N. Conditioned on a_(l-1),
V_(l-1) = e_l a_(l-1)^T + (I - e_l e_l^T) G with G fresh standard normal, and likewise the bias, so
with z_l = H(l)^T e_l (the pre-activations of layer l along e_l):

  z_1 ~ N(0, C0),  z_(l+1) = sqrt(g_l u_l) z_l + sqrt(g_b[l]) xi_l 1,
  f = sqrt(g_L u_L) z_L + sqrt(g_b[L]) xi_L 1,

xi_l ~ N(0, 1), and H(l)^T H(l) = z_l z_l^T + M^T (I - e_l e_l^T) M where the rows of M are, given
H(l-1), i.i.d. N(0, C(l-1)) and independent of (z, u, xi). The likelihood depends on the weights
only through S = (z_1, u, xi), so E[C(l) | Y] = E_(S|Y) E_prior[C(l) | S] and, with
C(l) = (g_l/N) H(l)^T H(l) + g_b[l] 11^T,

  E[C(l) | Y] = (g_l/N) [(N - 1) E[C(l-1) | Y] + E[z_l z_l^T | Y]] + g_b[l] 11^T,   C(0) = C0.

Given u, (z_1, ..., z_L, f) are jointly Gaussian on all P' rows:
Cov(z_l | u) = K_l = alpha_l G + beta_l 11^T (G = (g_in/d) X X^T) with alpha_1 = 1, beta_1 = g_b0,
alpha_(l+1) = g_l u_l alpha_l, beta_(l+1) = g_l u_l beta_l + g_b[l]: the NNGP recursion with g_l -> g_l u_l,
K_(L+1) = Cov(f | u), and Cov(z_l, f) = gamma_l K_l, gamma_l = prod_(k >= l) sqrt(g_k u_k). Hence
p(Y | u) = N(Y; 0, K_(L+1),tr + kappa I) and
E[z_l z_l^T | Y, u] = K_l - gamma_l^2 K_l,:tr Ky^-1 K_l,tr: + m_l m_l^T, m_l = gamma_l K_l,:tr Ky^-1 Y.
Every matrix here is a combination of G and 11^T, so one eigendecomposition of G_tr makes a grid
point cost O(P) for the evidence and O(P^2) for the kernels (accumulated as GEMMs over the grid).

The L scalars are integrated in their normal scores x_l = Phi^-1(F(N u_l)) (F the chi^2_N cdf), in
which the prior is exactly N(0, I_L), so ln chi^2's heavy lower tail costs nothing (in t = ln u,
Gauss-Hermite needs 2-5x the nodes per axis at N = 10); above N = 1e6, where SciPy's inverse
incomplete gamma loses accuracy, a Wilson-Hilferty map with its exact density ratio replaces it. A
tensor Gauss-Hermite rule is centred at the posterior mode in x and scaled by the inverse Hessian
there (Laplace), with the exact integrand N(x; 0, I) p(Y | u(x)) / Gauss in the weights
(log-sum-exp; points below 1e-20 of the largest pruned); ln p(Y | X) is the same sum. The rule runs
at n_quad and at n_quad // 2 + 1 nodes per axis: |K(n_quad) - K(coarse)| is returned as `se`, a
quadrature error bound (Gauss-Hermite converges geometrically, so this difference is the coarse
rule's error, measured 10-1000x above the fine rule's), and its maximum relative to each layer's
largest diagonal entry as `info.quad_error`.

Only one output (D = 1): with D outputs the readout leaves D x D Gram matrices per layer, not scalars.
For kappa -> infinity the result is the prior mean, which equals the NNGP exactly for linear phi
(E u_l = 1); for N -> infinity it is the NNGP (u_l -> 1).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
from scipy import special
from scipy.special import logsumexp

from ..errors import InputError, SpecError
from ..numerics import limit_blas_threads
from ..predictive import Predictive, from_moments
from ..spec import NetworkSpec
from .base import KernelEstimate, Outcome, Result, finish, prepare
from .options import Quadrature

# nodes per axis when n_quad is None: the tensor grid has n^L points (before pruning)
DEFAULT_N_QUAD = {1: 32, 2: 24, 3: 20, 4: 14}
_PRUNE = 46.0  # drop grid points whose weight is below e^-46 ~ 1e-20 of the largest
_MAX_POINTS = 2_000_000  # refuse tensor grids larger than this (memory: points x P floats)
_QUANTILE_MAX_N = 10**6  # exact chi^2 quantile map up to this width (see _t_of_x)


class LinearExactInfo(NamedTuple):
    """Diagnostics of `linear_posterior_kernels`.

    n_quad: Gauss-Hermite nodes per axis (the error estimate also runs n_quad // 2 + 1);
    n_points: grid points kept after pruning (of n_quad^L);
    quad_error: max |K(n_quad) - K(coarse)| over entries, relative to the layer's largest diagonal entry;
    log_evidence: ln p(Y | X), the full normalised marginal likelihood (including -(P/2) ln 2 pi);
    log_evidence_error: |difference| of ln p(Y | X) between the two rules;
    u_mode: (L,) mode of the posterior density of t = ln u, reported as u = e^t (u_l = |a_l|^2 / N);
    u_mean: (L,) posterior mean of u; timings: {"total": wall seconds}.
    """

    n_quad: int
    n_points: int
    quad_error: float
    log_evidence: float
    log_evidence_error: float
    u_mode: np.ndarray
    u_mean: np.ndarray
    timings: dict


class _Rotated(NamedTuple):
    """Data rotated once into the eigenbasis of the training block of G = (g_in/d) X X^T."""

    lam: np.ndarray  # (P,) eigenvalues of G_tr (clipped at 0)
    one: np.ndarray  # (P,) Q^T 1
    yq: np.ndarray  # (P,) Q^T Y
    B: np.ndarray  # (P', P) G[:, tr] Q
    G: np.ndarray  # (P', P') G on all rows
    gains: np.ndarray  # (L,) g_1..g_L
    bias: np.ndarray  # (L+1,) g_b0..g_bL
    kappa: float
    N: int


def _check_linear(spec: NetworkSpec) -> None:
    if not (spec.act.is_linear):
        raise SpecError(f"activation: linear_exact needs activation 'linear', got {spec.act.name!r}")
    if spec.n_out != 1:
        raise SpecError(
            f"n_out: linear_exact supports one output (D = 1), got {spec.n_out}; "
            "with D outputs the readout leaves D x D Gram matrices, not L scalars"
        )


def _chain(pb: _Rotated, T: np.ndarray):
    """alpha_l, beta_l (l = 1..L+1) and gamma_l (l = 1..L) at grid points T (n, L) of t = ln u."""
    s2 = pb.gains * np.exp(T)  # (n, L): g_l u_l
    n, L = T.shape
    alpha, beta = np.empty((n, L + 1)), np.empty((n, L + 1))
    alpha[:, 0], beta[:, 0] = 1.0, pb.bias[0]
    for l in range(L):
        alpha[:, l + 1] = s2[:, l] * alpha[:, l]
        beta[:, l + 1] = s2[:, l] * beta[:, l] + pb.bias[l + 1]
    gamma = np.sqrt(np.cumprod(s2[:, ::-1], axis=1)[:, ::-1])  # gamma_l = prod_{k >= l} sqrt(g_k u_k)
    return alpha, beta, gamma


def _solve_parts(pb: _Rotated, af: np.ndarray, bf: np.ndarray):
    """Pieces of Ky^-1 = Q (diag(d) - rho q q^T) Q^T, Ky = af G_tr + bf 11^T + kappa I, per point."""
    D = af[:, None] * pb.lam + pb.kappa  # (n, P)
    d = 1.0 / D
    q = d * pb.one
    s = q @ pb.one
    rho = bf / (1.0 + bf * s)
    return D, d, q, s, rho


def _log_likelihood(pb: _Rotated, T: np.ndarray) -> np.ndarray:
    """ln N(Y; 0, K_f(u) + kappa I) at grid points T (n, L), O(P) each (Sherman-Morrison)."""
    alpha, beta, _ = _chain(pb, T)
    D, d, q, s, rho = _solve_parts(pb, alpha[:, -1], beta[:, -1])
    quad = d @ pb.yq**2 - rho * (q @ pb.yq) ** 2
    logdet = np.sum(np.log(D), axis=1) + np.log1p(beta[:, -1] * s)
    return -0.5 * quad - 0.5 * logdet - 0.5 * len(pb.yq) * math.log(2 * math.pi)


def _t_of_x(N: int, X: np.ndarray):
    """Map normal scores x (..., L) to t = ln u; returns t and ln r(x), summed over the last axis.

    N <= _QUANTILE_MAX_N: u = F^-1(Phi(x)) / N with F the chi^2_N cdf, so x ~ N(0, 1) gives
    u ~ chi^2_N / N exactly and ln r = 0 (the upper tail goes through the survival functions, so no
    probability rounds to 1). Beyond, SciPy's inverse incomplete gamma loses accuracy in the lower
    tail, and the Wilson-Hilferty map u = (1 - c + x sqrt(c))^3, c = 2/(9N), is used instead with the
    exact density ratio r = p_t(t(x)) |dt/dx| / phi(x) (= 1 + O(1/N)) as part of the integrand.
    """
    if N <= _QUANTILE_MAX_N:
        a = 0.5 * N
        lower = special.gammaincinv(a, special.ndtr(np.minimum(X, 0.0)))
        upper = special.gammainccinv(a, special.ndtr(-np.maximum(X, 0.0)))
        return np.log(np.where(X < 0, lower, upper) / a), np.zeros(X.shape[:-1])
    c = 2.0 / (9.0 * N)
    base = 1.0 - c + X * math.sqrt(c)  # > 0 for x > -sqrt(9N/2) ~ -3000
    T = 3.0 * np.log(base)
    log_r = _log_prior_t(N, T) + np.log(3.0 * math.sqrt(c) / base) + 0.5 * X**2 + 0.5 * math.log(2 * math.pi)
    return T, np.sum(log_r, axis=-1)


def _x_of_t(N: int, t: np.ndarray) -> np.ndarray:
    """Inverse of _t_of_x (a starting point only)."""
    if N <= _QUANTILE_MAX_N:
        x = special.ndtri(special.gammainc(0.5 * N, 0.5 * N * np.exp(t)))
        return np.where(np.isfinite(x), x, 0.0)
    c = 2.0 / (9.0 * N)
    return (np.exp(t / 3.0) - 1.0 + c) / math.sqrt(c)


def _log_prior_t(N: int, T: np.ndarray) -> np.ndarray:
    """ln density of t = ln u, u ~ chi^2_N / N, elementwise: a ln a - ln Gamma(a) + a (t - e^t), a = N/2."""
    a = 0.5 * N
    if a < 50:
        const = a * math.log(a) - a - float(special.gammaln(a))
    else:  # Stirling's series: no cancellation between terms of size N ln N (error < 1e-15)
        const = 0.5 * math.log(a / (2 * math.pi)) - 1 / (12 * a) + 1 / (360 * a**3) - 1 / (1260 * a**5)
    return const + 0.5 * N * (T - np.expm1(T))  # expm1: no cancellation near t = 0


def _log_post_t(pb: _Rotated, T: np.ndarray) -> np.ndarray:
    """ln p(t | Y) + ln p(Y) at points T (n, L)."""
    return np.sum(_log_prior_t(pb.N, T), axis=-1) + _log_likelihood(pb, T)


def _log_lik_x(pb: _Rotated, X: np.ndarray) -> np.ndarray:
    """ln p(Y | u(x)) + ln r(x) at normal scores X (n, L): the integrand against N(0, I_L)."""
    T, log_r = _t_of_x(pb.N, X)
    return _log_likelihood(pb, T) + log_r


def _log_post_x(pb: _Rotated, X: np.ndarray) -> np.ndarray:
    """ln p(x | Y) + ln p(Y) at normal scores X (n, L)."""
    L = X.shape[-1]
    return -0.5 * np.sum(X**2, axis=-1) - 0.5 * L * math.log(2 * math.pi) + _log_lik_x(pb, X)


def _derivatives(lik, y: np.ndarray, h: float = 1e-4):
    """Gradient and Hessian of lik (a function of points (n, L)) at y by central differences.

    Errors O(h^2) only move the quadrature's centre and scale, never its result."""
    L = len(y)
    eye = np.eye(L)
    pts = [y]
    for i in range(L):
        pts += [y + h * eye[i], y - h * eye[i]]
    for i in range(L):
        for j in range(i + 1, L):
            pts += [y + h * (eye[i] + eye[j]), y + h * (eye[i] - eye[j])]
            pts += [y - h * (eye[i] - eye[j]), y - h * (eye[i] + eye[j])]
    f = lik(np.array(pts))
    grad = np.array([(f[1 + 2 * i] - f[2 + 2 * i]) / (2 * h) for i in range(L)])
    hess = np.diag([(f[1 + 2 * i] - 2 * f[0] + f[2 + 2 * i]) / h**2 for i in range(L)])
    k = 1 + 2 * L
    for i in range(L):
        for j in range(i + 1, L):
            hess[i, j] = hess[j, i] = (f[k] - f[k + 1] - f[k + 2] + f[k + 3]) / (4 * h**2)
            k += 4
    return grad, hess


def _maximise(log_post, lik, prior_derivatives, y: np.ndarray, max_steps: int = 100):
    """Damped Newton ascent of log_post = log prior + lik from y; returns the mode and the Hessian.

    The prior's derivatives are analytic, the likelihood's by central differences (_derivatives)."""

    def derivatives(y):
        g_lik, h_lik = _derivatives(lik, y)
        g_prior, h_prior = prior_derivatives(y)
        return g_lik + g_prior, h_lik + h_prior

    value = log_post(y[None])[0]
    for _ in range(max_steps):
        grad, hess = derivatives(y)
        w, U = np.linalg.eigh(-hess)
        w = np.maximum(w, 1e-3 * np.max(np.abs(w)))  # keep the step an ascent direction
        step = U @ ((U.T @ grad) / w)
        if abs(grad @ step) < 1e-12:
            break
        for _ in range(60):  # backtracking line search
            new = log_post((y + step)[None])[0]
            if new >= value - 1e-12 * abs(value):
                break
            step = 0.5 * step
        y, value = y + step, new
    return y, derivatives(y)[1]


def _modes(pb: _Rotated):
    """Posterior modes of t = ln u (reported) and of the normal scores x (the quadrature's centre)."""
    half_n = 0.5 * pb.N
    t_mode, _ = _maximise(
        lambda T: _log_post_t(pb, T),
        lambda T: _log_likelihood(pb, T),
        lambda t: (half_n * (1.0 - np.exp(t)), -np.diag(half_n * np.exp(t))),
        np.zeros(len(pb.gains)),
    )
    x_mode, hess = _maximise(
        lambda X: _log_post_x(pb, X),
        lambda X: _log_lik_x(pb, X),
        lambda x: (-x, -np.eye(len(x))),
        _x_of_t(pb.N, t_mode),
    )
    return t_mode, x_mode, hess


def _tensor_rule(n: int, L: int):
    """Gauss-Hermite tensor grid: nodes (n^L, L) and log weights (n^L,) for weight e^{-|x|^2}."""
    x, w = np.polynomial.hermite.hermgauss(n)
    grids = np.meshgrid(*([np.arange(n)] * L), indexing="ij")
    idx = np.stack([g.ravel() for g in grids], axis=1)
    return x[idx], np.sum(np.log(w)[idx], axis=1)


class _Quadrature(NamedTuple):
    kernels: np.ndarray
    log_evidence: float
    u_mean: np.ndarray
    n_points: int
    f_moments: tuple[np.ndarray, np.ndarray] | None  # E[f*], E[f*^2] on the test rows (P_test,)


def _test_moments(pb: _Rotated, T: np.ndarray, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum over grid points of omega E[f* | Y, u] and omega E[f*^2 | Y, u] on the test rows: given u,
    f is Gaussian with Cov(f | u) = K_f = alpha G + beta 11^T (alpha, beta of layer L+1), so
    E[f* | Y, u] = F M Q^T Y and Var = diag(K_f,**) - diag(F M F^T), F = K_f,*,tr Q = alpha B_* + beta 1 1~^T,
    M = Q^T Ky^-1 Q = diag(d) - rho q q^T (T21 at each u; `_moments` has the notation)."""
    alpha, beta, _ = _chain(pb, T)
    af, bf = alpha[:, -1], beta[:, -1]
    _, d, q, s, rho = _solve_parts(pb, af, bf)
    r = d * pb.yq - (rho * (q @ pb.yq))[:, None] * q  # M Q^T Y, (n, P)
    P = len(pb.yq)
    B = pb.B[P:]  # (T, P): G_*,tr Q
    mean = af[:, None] * (r @ B.T) + (bf * (r @ pb.one))[:, None]  # (n, T)
    Fq = af[:, None] * (q @ B.T) + (bf * (q @ pb.one))[:, None]
    FdF = (
        af[:, None] ** 2 * (d @ (B**2).T)
        + 2.0 * (af * bf)[:, None] * ((d * pb.one) @ B.T)
        + (bf**2 * (d @ pb.one**2))[:, None]
    )
    var = af[:, None] * np.diag(pb.G)[P:] + bf[:, None] - FdF + rho[:, None] * Fq**2
    return omega @ mean, omega @ (mean**2 + var)


def _quadrature(pb: _Rotated, x_mode: np.ndarray, A: np.ndarray, n: int) -> _Quadrature:
    """Posterior mean kernels with an n-node-per-axis Gauss-Hermite rule in the normal scores x,
    around the mode x_mode with scale A (A A^T = the inverse negative Hessian there)."""
    L = len(x_mode)
    xi, logw = _tensor_rule(n, L)
    Xs = x_mode + math.sqrt(2.0) * xi @ A.T
    log_omega = logw + np.sum(xi**2, axis=1)
    for sl in _chunks(len(Xs), len(pb.yq)):
        log_omega[sl] += _log_post_x(pb, Xs[sl])
    log_norm = logsumexp(log_omega)
    keep = log_omega > log_omega.max() - _PRUNE
    T, omega = _t_of_x(pb.N, Xs[keep])[0], np.exp(log_omega[keep] - log_norm)
    # ln p(Y) = ln int N(x; 0, I) p(Y | u(x)) dx, dx = 2^{L/2} |det A| dxi
    log_ev = log_norm + 0.5 * L * math.log(2.0) + float(np.sum(np.log(np.diag(A))))

    moments = [_Moments.zero(len(pb.yq)) for _ in range(L)]
    for sl in _chunks(len(T), len(pb.yq)):
        for l, part in enumerate(_moments(pb, T[sl], omega[sl])):
            moments[l] = moments[l].add(part)
    C = pb.G + pb.bias[0]
    stack = np.empty((L + 1,) + C.shape)
    stack[0] = C
    for l, m in enumerate(moments):  # layer l + 1 in the 1-based notation of the module docstring
        BT = pb.B @ m.TR
        Ezz = m.a * pb.G + (m.b + m.BR) + (pb.B @ m.TL) @ pb.B.T + BT[:, None] + BT[None, :]
        g, N = pb.gains[l], pb.N
        C = (g / N) * ((N - 1) * C + Ezz) + pb.bias[l + 1]  # T18
        stack[l + 1] = C = 0.5 * (C + C.T)
    f_moments = None
    if pb.G.shape[0] > len(pb.yq):
        parts = [_test_moments(pb, T[sl], omega[sl]) for sl in _chunks(len(T), pb.G.shape[0])]
        f_moments = (np.sum([p[0] for p in parts], axis=0), np.sum([p[1] for p in parts], axis=0))
    return _Quadrature(stack, float(log_ev), omega @ np.exp(T), int(keep.sum()), f_moments)


def _chunks(n: int, P: int):
    """Slices of at most ~2^22 / P grid points, so per-chunk (points, P) arrays stay ~32 MB."""
    size = max(64, (1 << 22) // max(P, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _Moments(NamedTuple):
    """Weighted sums: E[z_l z_l^T | Y] = a G + b 11^T + [B, 1] S [B, 1]^T with S = [[TL, TR], [TR^T, BR]]."""

    a: float
    b: float
    TL: np.ndarray
    TR: np.ndarray
    BR: float

    @staticmethod
    def zero(P: int) -> _Moments:
        return _Moments(0.0, 0.0, np.zeros((P, P)), np.zeros(P), 0.0)

    def add(self, other: _Moments) -> _Moments:
        return _Moments(*(x + y for x, y in zip(self, other, strict=True)))  # pyright: ignore[reportArgumentType]


def _moments(pb: _Rotated, T: np.ndarray, omega: np.ndarray) -> list[_Moments]:
    """Contributions of grid points T (n, L) with weights omega (n,) to E[z_l z_l^T | Y], l = 1..L.

    Given u: E[z z^T] = K_l - C_zf Ky^-1 C_fz + m m^T with C_zf = [B, 1] T_l Q^T,
    T_l = gamma_l [alpha_l I; beta_l 1~^T] ((P+1) x P), m = [B, 1] T_l r, so on the basis [B, 1]
    S = -T_l M T_l^T + (T_l r)(T_l r)^T, M = Q^T Ky^-1 Q = diag(d) - rho q q^T, r = M Q^T Y,
    M 1~ = (1 - rho s) q, 1~^T M 1~ = s (1 - rho s).
    """
    alpha, beta, gamma = _chain(pb, T)
    _, d, q, s, rho = _solve_parts(pb, alpha[:, -1], beta[:, -1])
    r = d * pb.yq - (rho * (q @ pb.yq))[:, None] * q
    tt = r @ pb.one
    c1 = 1.0 - rho * s
    out = []
    for l in range(T.shape[1]):
        A_l, B_l = gamma[:, l] * alpha[:, l], gamma[:, l] * beta[:, l]
        wa2 = omega * A_l**2
        TL = (q.T * (wa2 * rho)) @ q + (r.T * wa2) @ r
        TL[np.diag_indices_from(TL)] -= wa2 @ d
        TR = (omega * A_l * B_l) @ (tt[:, None] * r - c1[:, None] * q)
        BR = float((omega * B_l**2) @ (tt**2 - s * c1))
        out.append(_Moments(float(omega @ alpha[:, l]), float(omega @ beta[:, l]), TL, TR, BR))
    return out


def _rotated(spec: NetworkSpec, X_all: np.ndarray, Y: np.ndarray) -> _Rotated:
    P = Y.shape[0]
    G = (spec.g_in / X_all.shape[1]) * X_all @ X_all.T
    G = 0.5 * (G + G.T)  # BLAS may leave X X^T asymmetric in the last bit
    lam, Q = np.linalg.eigh(G[:P, :P])
    return _Rotated(
        lam=np.maximum(lam, 0.0),
        one=Q.sum(axis=0),
        yq=Q.T @ Y[:, 0],
        B=G[:, :P] @ Q,
        G=G,
        gains=np.asarray(spec.gains, dtype=np.float64),
        bias=np.asarray(spec.bias_vars, dtype=np.float64),
        kappa=float(spec.kappa),
        N=int(spec.width),
    )


def _n_quad(L: int, options: Quadrature) -> int:
    """Gauss-Hermite nodes per axis: options.n_quad or the default of depth L, checked against the
    size of the tensor grid."""
    n_quad = options.n_quad
    if n_quad is None:
        n_quad = DEFAULT_N_QUAD.get(L) or max(3, int(1e5 ** (1 / L)))
    if not 3 <= n_quad <= 150:
        raise InputError(f"n_quad: must be an integer in [3, 150], got {n_quad!r}")
    if n_quad**L > _MAX_POINTS:
        raise InputError(f"n_quad: the tensor grid n_quad^L = {n_quad}^{L} is too large; lower n_quad")
    if not np.isfinite(options.rtol):
        raise InputError(f"rtol: must be a number > 0, got {options.rtol!r}")
    return int(n_quad)


@limit_blas_threads
def linear_posterior_kernels(
    spec: NetworkSpec, X, Y, X_test=None, *, options: Quadrature = Quadrature(), throw: bool = True
) -> KernelEstimate:
    """Exact posterior mean kernels of every layer of a deep linear network (T18).

    E[C(l) | Y] = (g_l/N)[(N - 1) E[C(l-1) | Y] + E[z_l z_l^T | Y]] + g_b[l] 11^T, where z_l are the
    pre-activations along the readout direction, Gaussian given the L scalars u_l = |a_l|^2/N
    (chi^2_N/N a priori); u is integrated by Laplace-centred Gauss-Hermite quadrature in the normal
    scores of u. The module docstring has the derivation, biases and per-layer gains included.

    Args:
      spec: network with activation "linear" and n_out = 1 (any depth, width, gains, biases, kappa).
      X: training inputs (P, d); Y: targets (P,) or (P, 1); X_test: optional test inputs (P_test, d).
      options: Quadrature(n_quad, rtol). n_quad: Gauss-Hermite nodes per axis (3 to 150); None: 32,
        24, 20, 14 for L = 1, 2, 3, 4 and about 1e5^(1/L) beyond (the grid has n_quad^L points
        before pruning, at most 2e6). rtol: tolerance of the quadrature error bound, relative to each
        layer's largest diagonal entry. 1e-6 keeps the error far below anything these kernels are
        compared with: Monte Carlo standard errors of sampled posteriors (1e-4 to 1e-2 relative) and
        adaptations of relative size ~P/N. The default rules reach it from N = 10 at L <= 3 and from
        N ~ 20-30 at L = 4 (measured on MNIST, P = 30); below that, raise n_quad.
      throw: raise ConvergenceError when the bound exceeds rtol (default); False returns the estimate
        with result quadrature_inaccurate.

    Returns:
      KernelEstimate "linear_exact", method "quadrature": kernels (L+1, P', P') on train + test rows
      (layer 0 = C0, as nngp_kernels), se = |K(n_quad) - K(n_quad // 2 + 1)| entrywise (a quadrature
      error bound, not a statistical error; estimates None), info LinearExactInfo (log evidence
      ln p(Y | X), mode and mean of u, ...); with test rows the exact posterior predictive of f*
      (T21, the same quadrature over u of the Gaussian predictive given u).

    Example:
      >>> import critical_kernels as ck
      >>> data = ck.datasets.xor(n_train=20, n_test=5)
      >>> spec = ck.NetworkSpec(depth=2, width=100, activation="linear", g_b=0.1, kappa=0.1)
      >>> est = linear_posterior_kernels(spec, data.X, data.Y, data.X_test)
      >>> est.ok, est.kernels.shape, est.method.label  # exact up to the quadrature's error bound
      (True, (3, 25, 25), 'quadrature')
    """
    start = time.perf_counter()
    _, X_all, Y, _ = prepare(spec, X, Y, X_test, options=(options, Quadrature))
    _check_linear(spec)
    n_quad = _n_quad(spec.depth, options)
    pb = _rotated(spec, X_all, Y)
    t_mode, x_mode, hess = _modes(pb)
    A = _laplace_scale(hess)
    fine = _quadrature(pb, x_mode, A, n_quad)
    coarse = _quadrature(pb, x_mode, A, n_quad // 2 + 1)
    se, quad_error = _error_bound(fine.kernels, coarse.kernels)
    info = LinearExactInfo(
        n_quad=n_quad,
        n_points=fine.n_points,
        quad_error=quad_error,
        log_evidence=fine.log_evidence,
        log_evidence_error=abs(fine.log_evidence - coarse.log_evidence),
        u_mode=np.exp(t_mode),
        u_mean=fine.u_mean,
        timings={"total": time.perf_counter() - start},
    )
    outcome = _outcome(quad_error, options, n_quad)
    return finish("linear_exact", fine.kernels, se, info, outcome, predictive=_predictive(fine), throw=throw)


def _predictive(fine: _Quadrature) -> Predictive | None:
    """The exact predictive on the test rows (T21; exact up to the quadrature: no Monte Carlo error)."""
    if fine.f_moments is None:
        return None
    mean, second = fine.f_moments
    return from_moments(mean[:, None], second[:, None])


def _outcome(quad_error: float, options: Quadrature, n_quad: int) -> Outcome:
    """Success, or quadrature_inaccurate where the error bound exceeds options.rtol."""
    if quad_error <= options.rtol:
        return Outcome(method=options)
    detail = f"quadrature error bound {quad_error:.3g} > rtol = {options.rtol:g}: raise n_quad (now {n_quad})"
    return Outcome(Result.quadrature_inaccurate, detail, method=options)


def _laplace_scale(hess: np.ndarray) -> np.ndarray:
    """A with A A^T the inverse negative Hessian at the mode: the scale of the quadrature rule."""
    w, U = np.linalg.eigh(-hess)
    w = np.maximum(w, 1e-3)  # a non-concave mode (never seen) would cost accuracy only, not bias
    return np.linalg.cholesky((U / w) @ U.T)


def _error_bound(fine: np.ndarray, coarse: np.ndarray):
    """|K(fine) - K(coarse)| entrywise and its maximum relative to each layer's largest diagonal entry."""
    se = np.abs(fine - coarse)
    scale = np.max(np.abs(np.diagonal(fine, axis1=1, axis2=2)), axis=1)
    scale = np.maximum(scale, np.finfo(np.float64).tiny)  # all-zero kernels (X = 0, no biases)
    return se, float(np.max(np.max(se, axis=(1, 2)) / scale))
