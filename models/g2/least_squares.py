"""The paper's baseline g2(0) estimator: a per-pixel least-squares fit of Eq. 3.

Each pixel's histogram is fitted on its own (the slow baseline the SRM paper compares its CNN
with), with every shape parameter free per pixel:

    n_k ~ base * g2(tau_k),   g2(tau) = 1 - (1 - g0) [(1 + a) exp(-|tau|/t1) - a exp(-|tau|/t2)]

at the bin centres tau_k, Gaussian weights 1 / sqrt(max(n_k, 1)). base is free (one more
parameter) where it is NaN, else fixed to the pixel's n_a n_b D / t_acq (`model.pixel_base`,
docs/physics.md section 1, as the MLE does). The least-squares problem is solved by
scipy.optimize.least_squares with method "trf" (a trust-region Levenberg-Marquardt that honours
bounds; scipy's "lm" takes none) within g0 in G0_BOUNDS, t1 in [1, 200] ns, t2 in [20, 5000] ns,
a in [0, 10], base > 0. g2_std is the square root of the g0 entry of (J^T J)^-1 at the solution
(the weights are taken as absolute sigmas, not rescaled by the reduced chi^2).

No estimate (NaN): as `reasons.pixel_reasons` (no events; with base free also a single event;
with base known base <= 0). A fit whose covariance is singular keeps its g2 and gets
g2_std NaN. This estimator ignores the bin integrals and the Poisson statistics of sparse bins on
purpose (it is the baseline); `mle.estimate_g2` is the one to use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nvscope.proto.histogram import N_BINS, bin_edges_s
from scipy.optimize import least_squares

from .mle import (A_BOUNDS, G0_BOUNDS, T1_BOUNDS_S, T2_BOUNDS_S, _as_bases, _as_histograms, g0_start_value,
                  wing_level)
from .model import PixelModels
from .reasons import REASON_OK, pixel_reasons

_EDGES_S = bin_edges_s()
TAU_CENTRES_S = 0.5 * (_EDGES_S[:-1] + _EDGES_S[1:])
T1_BOUNDS_NS = (T1_BOUNDS_S[0] * 1e9, T1_BOUNDS_S[1] * 1e9)
T2_BOUNDS_NS = (T2_BOUNDS_S[0] * 1e9, T2_BOUNDS_S[1] * 1e9)
_START = (15.0, 250.0, 0.5)  # t1 ns, t2 ns, a
_TAU_NS = np.abs(TAU_CENTRES_S) * 1e9


def _g2(x):
    g0, t1, t2, a = x[:4]
    kernel = (1.0 + a) * np.exp(-_TAU_NS / t1) - a * np.exp(-_TAU_NS / t2)
    return 1.0 - (1.0 - g0) * kernel, kernel


def _fit_one(n: np.ndarray, base: float | None, weight: np.ndarray | None = None) -> tuple[float, float]:
    u = np.ones(N_BINS) if weight is None else weight
    sigma = np.sqrt(np.maximum(n, 1.0))
    level = base if base is not None else max(wing_level(n), 1e-3)
    x0 = [g0_start_value(n, level), *_START]
    lo = [G0_BOUNDS[0], T1_BOUNDS_NS[0], T2_BOUNDS_NS[0], A_BOUNDS[0]]
    hi = [G0_BOUNDS[1], T1_BOUNDS_NS[1], T2_BOUNDS_NS[1], A_BOUNDS[1]]
    if base is None:
        x0.append(level)
        lo.append(1e-12)
        hi.append(np.inf)

    def residuals(x):
        g, _ = _g2(x)
        b = x[4] if base is None else base
        return (b * u * g - n) / sigma

    def jac(x):
        g0, t1, t2, a = x[:4]
        g, kernel = _g2(x)
        b = x[4] if base is None else base
        e1, e2 = np.exp(-_TAU_NS / t1), np.exp(-_TAU_NS / t2)
        cols = [b * kernel,                                            # d/d g0
                -b * (1.0 - g0) * (1.0 + a) * e1 * _TAU_NS / t1**2,    # d/d t1
                b * (1.0 - g0) * a * e2 * _TAU_NS / t2**2,             # d/d t2
                -b * (1.0 - g0) * (e1 - e2)]                           # d/d a
        if base is None:
            cols.append(g)                                             # d/d base
        return np.stack(cols, axis=1) * (u / sigma)[:, None]

    x0 = np.clip(x0, lo, hi)
    res = least_squares(residuals, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac",
                        max_nfev=2000)
    J = res.jac
    try:
        cov = np.linalg.pinv(J.T @ J)
        var = float(cov[0, 0])
    except np.linalg.LinAlgError:
        var = np.nan
    std = float(np.sqrt(var)) if np.isfinite(var) and var > 0 else np.nan
    return float(res.x[0]), std


def estimate_g2_lm(hist, base=None, weight=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel least-squares g2(0) (the paper's baseline) and its covariance std.

    hist: (P, N_BINS) counts (any leading shape; the results have it). base: counts per bin, a
    scalar or per pixel, NaN (or None: all) where it is fitted (as `mle.estimate_g2`). weight: (P, N_BINS)
    the start-stop survival the model is multiplied by (None: ones, all pairs).
    Returns (g2, g2_std) float64.
    """
    h = _as_histograms(hist)
    lead = h.shape[:-1]
    n = h.reshape(-1, N_BINS)
    P = n.shape[0]
    base = _as_bases(base, lead)
    ok = pixel_reasons(n.sum(axis=1), base) == REASON_OK
    g2 = np.full(P, np.nan)
    std = np.full(P, np.nan)
    with np.errstate(all="ignore"):
        for i in np.flatnonzero(ok):
            g2[i], std[i] = _fit_one(n[i], None if np.isnan(base[i]) else float(base[i]),
                                     None if weight is None else np.asarray(weight, dtype=float).reshape(-1, N_BINS)[i])
    return g2.reshape(lead), std.reshape(lead)


@dataclass(frozen=True)
class LeastSquaresEstimator:
    """`estimate_g2_lm` as a g2 estimator (`estimation.G2Estimator`); it fits its own shape per pixel."""

    name: str = "lm"
    min_events: int = 1

    def estimate(self, hist, models: PixelModels) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) by per-pixel least squares (the models' kernels ignored; their base and weight used)."""
        return estimate_g2_lm(hist, models.base, models.weight)

    def notes(self, hist, models: PixelModels) -> np.ndarray:
        """No notes: it fits every pixel it is given (int8 zeros)."""
        return np.zeros(len(models), dtype=np.int8)


__all__ = ["TAU_CENTRES_S", "estimate_g2_lm", "LeastSquaresEstimator"]
