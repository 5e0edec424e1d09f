"""Variable projection for the sum of Lorentzians: in log-coherence, chi = -ln C = sum_j a_j K_j(t)
is linear in the amplitudes, so for given widths and centres the best non-negative amplitudes
are a small least-squares problem solved exactly; the optimizer only moves (g, w0).

This removes the failure mode of a direct fit (an amplitude driven to zero has no gradient and
never comes back) and leaves half as many nonlinear parameters.
"""

from __future__ import annotations

import itertools

import numpy as np

from .data import CoherenceSet
from .kernel import chi_and_grads, chi_values
from .batched_lm import levenberg_marquardt


def log_coherence_data(data: CoherenceSet) -> tuple[np.ndarray, np.ndarray]:
    """y = -ln C and its weight 1/sigma_lnC = C / sigma (delta method), C floored at one sigma."""
    sigma = np.where(data.mask, data.sigma, 1.0)
    c = np.clip(np.where(data.mask, data.coherence, 1.0), sigma, 1.0)
    return np.where(data.mask, -np.log(c), 0.0), np.where(data.mask, c / sigma, 0.0)


def nonneg_amplitudes(kw: np.ndarray, yw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """argmin_{a >= 0} |yw - a . kw|^2 for kw (B, M, N), yw (B, N). For M <= 4 every support is
    tried at once for the whole batch (the unconstrained solution on a support is the answer when it
    is non-negative and best); for more Lorentzians, Lawson-Hanson (scipy's nnls) row by row."""
    b, m, _ = kw.shape
    kw = np.nan_to_num(kw, nan=0.0, posinf=0.0, neginf=0.0)
    if m > 4:
        from scipy.optimize import nnls

        out = np.zeros((b, m))
        cost = np.empty(b)
        for i in range(b):
            try:
                out[i], rnorm = nnls(kw[i].T, yw[i], maxiter=50 * m)
                cost[i] = rnorm**2
            except RuntimeError:  # no convergence: the row keeps a = 0
                cost[i] = float(yw[i] @ yw[i])
        return out, cost
    gram = np.einsum("bmn,bkn->bmk", kw, kw)
    ridge = 1e-12 * np.maximum(np.einsum("bmm->bm", gram).max(1), 1e-300)[:, None, None] * np.eye(m)
    rhs = np.einsum("bmn,bn->bm", kw, yw)
    best_a = np.zeros((b, m))
    best_cost = np.einsum("bn,bn->b", yw, yw)
    eye = np.eye(m)
    for r in range(1, m + 1):
        for support in itertools.combinations(range(m), r):
            s = np.zeros(m, dtype=bool)
            s[list(support)] = True
            g = np.where(s[:, None] & s[None, :], gram + ridge, eye)
            a = np.linalg.solve(g, np.where(s, rhs, 0.0)[..., None])[..., 0]
            a = np.where(s, a, 0.0)
            cost = (np.einsum("bn,bn->b", yw, yw) - 2 * np.einsum("bm,bm->b", a, rhs)
                    + np.einsum("bm,bmk,bk->b", a, gram, a))
            better = (a >= 0).all(1) & (cost < best_cost)
            best_a[better], best_cost[better] = a[better], cost[better]
    return best_a, best_cost


def varpro_fit(data: CoherenceSet, phi0: np.ndarray, tau: float, max_iter: int = 100,
               redraw=None, revivals: int = 0):
    """LM over phi = (ln g tau, ln w0 tau) per Lorentzian (B, 2M) with the amplitudes projected out
    (Kaufman's Jacobian). A Lorentzian whose best amplitude is 0 does nothing and cannot move;
    `revivals` times, such Lorentzians are re-drawn with `redraw(k) -> phi (k, 2)` and the row is
    refitted, keeping the better of the two. Returns (a, g, w0) each (B, M), the log-space cost
    (B,) and the iterations (B,)."""
    y, w = log_coherence_data(data)
    t = np.where(data.mask, data.t, tau)
    n = data.n_pulses
    yw = (y * w).ravel()

    def kernels(phi, jac: bool):
        """g, w0 (B, M) and the weighted unit-amplitude chi, with its g and w0 derivatives if `jac`."""
        p = np.exp(phi.reshape(len(phi), -1, 2))
        g, w0 = p[..., 0] / tau, p[..., 1] / tau
        args = (1.0, w0[:, :, None, None], g[:, :, None, None], t[None, None], n[None, None, :, None])
        if not jac:  # trial steps and amplitudes: the values-only kernel
            return g, w0, chi_values(*args) * w, None, None
        k, _, dk_g, dk_w0 = chi_and_grads(*args)
        return g, w0, k * w, dk_g * w, dk_w0 * w

    def fun(phi, rows, jac):
        g, w0, kw, dg, dw0 = kernels(phi, jac)
        bsz, m = g.shape
        kw = kw.reshape(bsz, m, -1)
        a, _ = nonneg_amplitudes(kw, np.broadcast_to(yw, (bsz, yw.size)))
        r = yw[None] - np.einsum("bm,bmn->bn", a, kw)
        if not jac:
            return r, None
        jg = -(a * g)[:, :, None] * dg.reshape(bsz, m, -1)
        jw = -(a * w0)[:, :, None] * dw0.reshape(bsz, m, -1)
        return r, np.stack([jg, jw], axis=2).reshape(bsz, 2 * m, -1).transpose(0, 2, 1)

    def amplitudes(phi):
        g, w0, kw, _, _ = kernels(phi, False)
        a, cost = nonneg_amplitudes(kw.reshape(len(g), g.shape[1], -1), np.broadcast_to(yw, (len(g), yw.size)))
        return a, g, w0, cost

    res = levenberg_marquardt(fun, phi0, max_iter=max_iter)
    phi, iters = res.theta, res.iterations
    a, g, w0, cost = amplitudes(phi)
    for _ in range(revivals):
        dead = a <= 0.0
        rows = np.flatnonzero(dead.any(1))
        if rows.size == 0:
            break
        trial = phi[rows].reshape(rows.size, -1, 2).copy()
        trial[dead[rows]] = redraw(int(dead[rows].sum()))
        again = levenberg_marquardt(fun, trial.reshape(rows.size, -1), max_iter=max_iter)
        a2, g2, w02, c2 = amplitudes(again.theta)
        better = c2 < cost[rows]
        phi[rows[better]] = again.theta[better]
        a[rows[better]], g[rows[better]], w0[rows[better]], cost[rows[better]] = (
            a2[better], g2[better], w02[better], c2[better])
        iters[rows] += again.iterations
    return a, g, w0, cost, iters
