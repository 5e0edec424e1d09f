"""Non-negative least squares for many small problems at once: argmin_{x >= 0} |y - x . K|^2 for
K (B, M, N), y (B, N), every row its own problem, all rows advanced together in numpy (the loops
below run over iterations, never over rows).

Two stages on the Gram matrix G = K K^T and b = K y of unit-norm columns:
1. Block principal pivoting (J. Kim and H. Park, SIAM J. Sci. Comput. 33, 3261 (2011), Alg. 2): each
   iteration solves on a free set F (x = 0 elsewhere) and exchanges every variable that breaks the
   KKT conditions (x_F < 0, or a negative gradient off F) at once, falling back to exchanging only
   the largest index when the number of infeasible variables stops falling (Murty's rule). It
   usually reaches the solution in a few iterations, but with nearly collinear columns the signs of
   an ill-conditioned solve can make it wander; it is given BPP_ITERATIONS at most and hands on the
   best feasible point it met (its iterates clipped to x >= 0).
2. Lawson-Hanson's active-set method (Lawson and Hanson, "Solving Least Squares Problems", 1974,
   ch. 23) from that point: feasible at every step, the cost never rises, a column enters only where
   the gradient says it lowers the cost, so it ends exactly at the KKT point whatever the
   conditioning (where stage 1 already found it, after one check). An iteration cap (never reached
   in the tests) ends a row at its current, feasible point.
Finally one step of iterative refinement on the free set with the residual taken on K itself
(corrected semi-normal equations), so the fitted vector x . K is as accurate as a QR solve's.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-14
"""Added to the unit diagonal of the scaled Gram matrix: keeps coincident columns solvable."""
TOL = 1e-12
"""KKT tolerance relative to |y| (columns have unit norm): x > -TOL |y| and gradient > -TOL |y| pass."""
BPP_ITERATIONS = 6
"""Block-pivoting iterations before the Lawson-Hanson stage takes over."""
BACKUP_TRIES = 3
"""Block-pivoting iterations without fewer infeasible variables before the single-exchange rule."""


def nnls_batched(k: np.ndarray, y: np.ndarray, start: np.ndarray | None = None,
                 max_iter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (B, M) >= 0 minimizing |y - x . k|^2 and that cost (B,), for k (B, M, N), y (B, N) (any units;
    non-finite entries count as 0). `start` (B, M) bool: a guess of the support (x > 0), e.g. the
    previous solution's in an optimizer loop (a right guess ends stage 1 after one solve); default
    every column with k . y > 0. `max_iter` caps the Lawson-Hanson stage (default 50 + 5 M)."""
    k = np.asarray(k, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    gram, rhs = k @ k.transpose(0, 2, 1), (k @ y[:, :, None])[..., 0]
    if not (np.isfinite(gram).all() and np.isfinite(rhs).all()):
        k = np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
        gram, rhs = k @ k.transpose(0, 2, 1), (k @ y[:, :, None])[..., 0]
    m = k.shape[1]
    norm = np.sqrt(np.einsum("bmm->bm", gram))
    scale = np.where(norm > 0.0, norm, 1.0)
    gram = gram / (scale[:, :, None] * scale[:, None, :])
    rhs = rhs / scale
    tol = TOL * np.sqrt(np.einsum("bn,bn->b", y, y))[:, None]
    free = rhs > tol if start is None else np.array(start, dtype=bool)
    x = _block_pivoting(gram, rhs, free, tol, BPP_ITERATIONS)
    x = _lawson_hanson(gram, rhs, x, tol, 50 + 5 * m if max_iter is None else max_iter)
    x = _refine(k, scale, y, gram, x)
    a = np.where(norm > 0.0, x / scale, 0.0)
    r = y - (a[:, None, :] @ k)[:, 0]
    return a, np.einsum("bn,bn->b", r, r)


def _masked_solve(gram: np.ndarray, rhs: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Least squares on each row's free columns, 0 elsewhere: solve G_FF x_F = b_F (B, M)."""
    eye = np.eye(gram.shape[-1])
    g = np.where(free[:, :, None] & free[:, None, :], gram, eye) + RIDGE * eye
    return np.where(free, np.linalg.solve(g, np.where(free, rhs, 0.0)[..., None])[..., 0], 0.0)


def _half_cost(gram: np.ndarray, rhs: np.ndarray, x: np.ndarray) -> np.ndarray:
    """0.5 x G x - b x (B,): the cost up to the constant 0.5 |y|^2."""
    return 0.5 * np.einsum("bm,bmk,bk->b", x, gram, x) - np.einsum("bm,bm->b", rhs, x)


def _block_pivoting(gram, rhs, free, tol, iterations):  # type: ignore[no-untyped-def]
    """Stage 1 (module docstring) from the free set `free` (B, M): the best feasible point met."""
    b, m = rhs.shape
    best = np.zeros((b, m))
    best_cost = np.zeros(b)
    n_bad = np.full(b, m + 1)
    tries = np.full(b, BACKUP_TRIES)
    active = np.ones(b, dtype=bool)
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        g, r, f, t = gram[idx], rhs[idx], free[idx], tol[idx]
        x = _masked_solve(g, r, f)
        grad = np.einsum("bmk,bk->bm", g, x) - r
        bad = (f & (x < -t)) | (~f & (grad < -t))
        count = bad.sum(1)
        xc = np.clip(x, 0.0, None)
        cost = _half_cost(g, r, xc)
        better = cost < best_cost[idx]
        best[idx[better]], best_cost[idx[better]] = xc[better], cost[better]
        active[idx[count == 0]] = False
        fewer = count < n_bad[idx]
        n_bad[idx] = np.where(fewer, count, n_bad[idx])
        tries[idx] = np.where(fewer, BACKUP_TRIES, tries[idx] - 1)
        last = m - 1 - np.argmax(bad[:, ::-1], axis=1)
        flip = np.where((tries[idx] < 0)[:, None], np.arange(m)[None] == last[:, None], bad)
        free[idx] = f ^ flip
    return best


def _lawson_hanson(gram, rhs, x, tol, max_iter):  # type: ignore[no-untyped-def]
    """Stage 2 (module docstring) from the feasible x (B, M): the KKT point."""
    b, m = rhs.shape
    x = x.copy()
    free = x > 0.0
    outer = np.zeros(b, dtype=bool)  # the next step may add a column (else: it solves on F first)
    banned = np.zeros((b, m), dtype=bool)  # a column whose own amplitude came out <= 0 when it entered
    active = np.ones(b, dtype=bool)
    cols = np.arange(m)[None]
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        g, r, f, xi, out = gram[idx], rhs[idx], free[idx].copy(), x[idx], outer[idx]
        w = r - np.einsum("bmk,bk->bm", g, xi)  # minus the gradient
        cand = np.where(~f & ~banned[idx], w, -np.inf)
        j = np.argmax(cand, axis=1)
        finished = out & (cand[np.arange(idx.size), j] <= tol[idx, 0])
        active[idx[finished]] = False
        keep = ~finished
        idx, g, r, f, xi, out, j = idx[keep], g[keep], r[keep], f[keep], xi[keep], out[keep], j[keep]
        if idx.size == 0:
            break
        entering = out[:, None] & (cols == j[:, None])
        f |= entering
        s = _masked_solve(g, r, f)
        rejected = (entering & (s <= 0.0)).any(1)  # rounding: the entering column does not help
        banned[idx[rejected], j[rejected]] = True
        neg = f & (s <= 0.0)
        ok = ~rejected & ~neg.any(1)
        step = ~rejected & ~ok
        # all positive: take s; else move from x towards s until the first amplitude reaches 0
        ratio = np.where(neg, xi / np.where(neg, xi - s, 1.0), np.inf)
        alpha = np.where(step, np.min(ratio, axis=1), 0.0)[:, None]
        moved = xi + alpha * (s - xi)
        moved[np.arange(idx.size), np.argmin(ratio, axis=1)] = 0.0
        moved = np.where(f & (moved > 0.0), moved, 0.0)
        new_x = np.where(ok[:, None], s, np.where(step[:, None], moved, xi))
        x[idx] = new_x
        free[idx] = new_x > 0.0
        outer[idx] = ~step
        banned[idx[ok | step]] = False
    return x


def _refine(k, scale, y, gram, x):  # type: ignore[no-untyped-def]
    """One refinement step on the free set with the residual on K (B, M); kept where it stays > 0."""
    free = x > 0.0
    res = y - ((x / scale)[:, None, :] @ k)[:, 0]
    dx = _masked_solve(gram, (k @ res[:, :, None])[..., 0] / scale, free)
    x2 = x + dx
    return np.where(((x2 > 0.0) | ~free).all(1)[:, None], np.where(free, x2, 0.0), x)
