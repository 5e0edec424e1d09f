"""Batched Levenberg-Marquardt: many independent small least-squares problems advanced together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Residuals = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(theta (B, P), rows (B,) int: which problem each theta belongs to) -> residuals (B, N)."""


@dataclass
class LMResult:
    """Per problem: parameters (R, P), final cost 0.5 |r|^2 (R,), iterations used (R,)."""

    theta: torch.Tensor
    cost: torch.Tensor
    iterations: torch.Tensor


def jacobian(fun: Residuals, theta: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals (B, N) and their Jacobian (B, N, P), by forward-mode AD: one pass per parameter,
    each carrying the tangent of that parameter for every problem at once."""
    cols = []
    r = None
    for p in range(theta.shape[1]):
        tangent = torch.zeros_like(theta)
        tangent[:, p] = 1.0
        r, dr = torch.func.jvp(lambda th: fun(th, rows), (theta,), (tangent,))
        cols.append(dr)
    return r, torch.stack(cols, dim=-1)


def levenberg_marquardt(fun: Residuals, theta0: torch.Tensor, max_iter: int = 100, ftol: float = 1e-10,
                        bound: float = 40.0) -> LMResult:
    """Minimize 0.5 |fun(theta)|^2 for every row of theta0 independently (Marquardt's diagonal
    scaling, lambda / 3 on success, x 4 on failure); a row stops when its cost changes by less than
    `ftol` relative or lambda exceeds 1e12; only active rows are computed. theta is kept in
    [-bound, bound] (the parameters are logarithms)."""
    theta = theta0.clone()
    n_rows = theta.shape[0]
    all_rows = torch.arange(n_rows)
    with torch.no_grad():
        r = fun(theta, all_rows)
    cost = 0.5 * (r * r).sum(-1)
    cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, float("inf")))
    lam = torch.full((n_rows,), 1e-2, dtype=theta.dtype)
    iters = torch.zeros(n_rows, dtype=torch.int64)
    active = torch.isfinite(cost)
    eye = torch.eye(theta.shape[1], dtype=theta.dtype)
    for _ in range(max_iter):
        idx = active.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        th = theta[idx]
        r_a, J = jacobian(fun, th, idx)
        J = torch.where(torch.isfinite(J), J, torch.zeros_like(J))
        A = J.transpose(1, 2) @ J
        g = (J.transpose(1, 2) @ r_a.unsqueeze(-1)).squeeze(-1)
        D = torch.diagonal(A, dim1=1, dim2=2).clamp_min(1e-12)
        M = A + (lam[idx, None, None] * D.unsqueeze(-1)) * eye + 1e-14 * eye
        step = torch.linalg.solve(M, -g)
        trial = (th + step).clamp(-bound, bound)
        with torch.no_grad():
            r_new = fun(trial, idx)
        c_new = 0.5 * (r_new * r_new).sum(-1)
        c_old = cost[idx]
        ok = torch.isfinite(c_new) & (c_new < c_old)
        theta[idx] = torch.where(ok[:, None], trial, th)
        cost[idx] = torch.where(ok, c_new, c_old)
        lam[idx] = torch.where(ok, lam[idx] / 3.0, lam[idx] * 4.0).clamp(1e-12, 1e16)
        iters[idx] += 1
        done = (ok & ((c_old - c_new) <= ftol * c_old)) | (lam[idx] > 1e12)
        active[idx[done]] = False
    return LMResult(theta, cost, iters)
