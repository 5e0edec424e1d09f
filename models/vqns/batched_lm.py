"""Batched Levenberg-Marquardt: many independent small least-squares problems advanced together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Residuals = Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]
"""(theta (B, P), rows (B,): which problem each theta belongs to, want_jacobian) ->
(residuals (B, N), Jacobian (B, N, P) or None)."""


@dataclass
class LMResult:
    """Per problem: parameters (R, P), final cost 0.5 |r|^2 (R,), iterations used (R,)."""

    theta: np.ndarray
    cost: np.ndarray
    iterations: np.ndarray


def levenberg_marquardt(fun: Residuals, theta0: np.ndarray, max_iter: int = 100, ftol: float = 1e-7,
                        bound: float = 40.0) -> LMResult:
    """Minimize 0.5 |r(theta)|^2 for every row of theta0 independently, all rows in one batch.

    Marquardt's step (J^T J + lambda diag(J^T J)) d = -J^T r, lambda / 3 after a successful step
    and x 4 after a failed one. A row stops when a successful step lowers its cost by less than
    `ftol` relative, or lambda exceeds 1e12; only active rows are computed, so the cost of an
    iteration falls as rows converge. theta stays in [-bound, bound] (the parameters are logs).
    """
    theta = np.array(theta0, dtype=np.float64)
    n_rows, n_par = theta.shape
    rows = np.arange(n_rows)
    r, _ = fun(theta, rows, False)
    cost = 0.5 * np.einsum("bn,bn->b", r, r)
    cost[~np.isfinite(cost)] = np.inf
    lam = np.full(n_rows, 1e-2)
    iters = np.zeros(n_rows, dtype=np.int64)
    active = np.isfinite(cost)
    eye = np.eye(n_par)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th = theta[idx]
        r_a, J = fun(th, idx, True)
        J = np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)
        Jt = J.transpose(0, 2, 1)
        A = Jt @ J  # batched BLAS (einsum's loop is ~20x slower here)
        g = (Jt @ r_a[..., None])[..., 0]
        D = np.maximum(np.einsum("bpp->bp", A), 1e-12)
        M = A + (lam[idx, None] * D)[:, :, None] * eye + 1e-14 * eye
        step = np.linalg.solve(M, -g[..., None])[..., 0]
        trial = np.clip(th + step, -bound, bound)
        r_new, _ = fun(trial, idx, False)
        c_new = 0.5 * np.einsum("bn,bn->b", r_new, r_new)
        c_old = cost[idx]
        ok = np.isfinite(c_new) & (c_new < c_old)
        theta[idx[ok]] = trial[ok]
        cost[idx[ok]] = c_new[ok]
        lam[idx] = np.clip(np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0), 1e-12, 1e16)
        iters[idx] += 1
        # converged: a Gauss-Newton-like step (small lambda) that no longer lowers the cost,
        # or no step at all lowers it (lambda huge)
        done = (ok & ((c_old - c_new) <= ftol * c_old) & (lam[idx] < 1e-3)) | (lam[idx] > 1e10)
        active[idx[done]] = False
    return LMResult(theta, cost, iters)
