"""Variable projection for the sum of Lorentzians: in log-coherence, chi = -ln C = sum_j a_j K_j(t)
is linear in the amplitudes, so for given widths and centres the best non-negative amplitudes
are a small least-squares problem solved exactly; the optimizer only moves (g, w0).

This removes the failure mode of a direct fit (an amplitude driven to zero has no gradient and
never comes back) and leaves half as many nonlinear parameters.
"""

from __future__ import annotations

import numpy as np

from .data import CoherenceSet
from .kernel import chi_and_grads, chi_values
from .batched_lm import levenberg_marquardt
from .nnls import nnls_batched


def log_coherence_data(data: CoherenceSet) -> tuple[np.ndarray, np.ndarray]:
    """y = -ln C and its weight 1/sigma_lnC = C / sigma (delta method), C floored at one sigma."""
    sigma = np.where(data.mask, data.sigma, 1.0)
    c = np.clip(np.where(data.mask, data.coherence, 1.0), sigma, 1.0)
    return np.where(data.mask, -np.log(c), 0.0), np.where(data.mask, c / sigma, 0.0)


def nonneg_amplitudes(kw: np.ndarray, yw: np.ndarray, start: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """argmin_{a >= 0} |yw - a . kw|^2 (B, M) and its cost (B,) for kw (B, M, N), yw (B, N), exact for
    any M, all rows at once (`nnls.nnls_batched`); `start` (B, M) bool: a guess of the support."""
    return nnls_batched(kw, yw, start)


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
    pi_s = data.pi_s[None, None, :, None]

    def kernels(phi, jac: bool):
        """g, w0 (B, M) and the weighted unit-amplitude chi, with its g and w0 derivatives if `jac`."""
        p = np.exp(phi.reshape(len(phi), -1, 2))
        g, w0 = p[..., 0] / tau, p[..., 1] / tau
        args = (1.0, w0[:, :, None, None], g[:, :, None, None], t[None, None], n[None, None, :, None], pi_s)
        if not jac:  # trial steps and amplitudes: the values-only kernel
            return g, w0, chi_values(*args) * w, None, None
        k, _, dk_g, dk_w0 = chi_and_grads(*args)
        return g, w0, k * w, dk_g * w, dk_w0 * w

    def residuals(n_rows: int):
        """LM's residual function for a batch of n_rows; each row's amplitude support is remembered
        from one call to the next as the next solve's first guess."""
        support = np.ones((n_rows, phi0.shape[1] // 2), dtype=bool)

        def fun(phi, rows, jac):
            g, w0, kw, dg, dw0 = kernels(phi, jac)
            bsz, m = g.shape
            kw = kw.reshape(bsz, m, -1)
            a, _ = nonneg_amplitudes(kw, np.broadcast_to(yw, (bsz, yw.size)), support[rows])
            support[rows] = a > 0.0
            r = yw[None] - np.einsum("bm,bmn->bn", a, kw)
            if not jac:
                return r, None
            jg = -(a * g)[:, :, None] * dg.reshape(bsz, m, -1)
            jw = -(a * w0)[:, :, None] * dw0.reshape(bsz, m, -1)
            return r, np.stack([jg, jw], axis=2).reshape(bsz, 2 * m, -1).transpose(0, 2, 1)

        return fun

    def amplitudes(phi):
        g, w0, kw, _, _ = kernels(phi, False)
        a, cost = nonneg_amplitudes(kw.reshape(len(g), g.shape[1], -1), np.broadcast_to(yw, (len(g), yw.size)))
        return a, g, w0, cost

    res = levenberg_marquardt(residuals(len(phi0)), phi0, max_iter=max_iter)
    phi, iters = res.theta, res.iterations
    a, g, w0, cost = amplitudes(phi)
    for _ in range(revivals):
        dead = a <= 0.0
        rows = np.flatnonzero(dead.any(1))
        if rows.size == 0:
            break
        trial = phi[rows].reshape(rows.size, -1, 2).copy()
        trial[dead[rows]] = redraw(int(dead[rows].sum()))
        again = levenberg_marquardt(residuals(rows.size), trial.reshape(rows.size, -1), max_iter=max_iter)
        a2, g2, w02, c2 = amplitudes(again.theta)
        better = c2 < cost[rows]
        phi[rows[better]] = again.theta[better]
        a[rows[better]], g[rows[better]], w0[rows[better]], cost[rows[better]] = (
            a2[better], g2[better], w02[better], c2[better])
        iters[rows] += again.iterations
    return a, g, w0, cost, iters
