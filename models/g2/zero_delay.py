"""The histogram's zero-delay offset: where the emitter's tau = 0 lies on the delay axis (docs/physics.md
section 1.10).

Unequal cables or electronics delay one channel: a pair's measured delay is tau + offset, offset =
delay_B - delay_A. The expected counts of an all-pairs histogram are then (section 1.6)

    E[n_k] = base * (w_k - (1 - g0) v_k(offset)),   v_k(offset) = (1/D) integral_bin_k K(tau - offset) dtau

(`model.kernel_bin_averages(shape, offset_s)`). The offset is fitted on a scan's summed histogram by
Poisson maximum likelihood with the emitter shape fixed: for each offset, g0 (and base, when it is free)
are profiled out by the per-pixel MLE (`mle.estimate_g2`), and the profile is maximized over the offset
(a 0.5 ns grid over +-100 ns, then scipy's bounded scalar search around the best grid point). Its std is
the Cramer-Rao bound from the expected Fisher information of (offset, g0[, base]) at the estimate,
marginalized over the others. Put delay_b_s - delay_a_s = offset_s in the rig's ScanConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from nvscope.proto.histogram import N_BINS

from .mle import _as_histograms, estimate_g2
from .model import EmitterShape, bin_widths, kernel_bin_averages, pixel_models

OFFSET_RANGE_S: float = 100e-9
"""The offsets searched, +-this (s): the channel delays a ScanConfig accepts."""
_GRID_STEP_S = 0.5e-9
_DERIV_STEP_S = 1e-12


@dataclass(frozen=True)
class ZeroDelayFit:
    """Fitted zero-delay offset (s, = delay_B - delay_A), its std (s; inf when the histogram shows no
    antibunching to place), and the histogram's event count."""

    offset_s: float
    offset_std_s: float
    n_events: float


def _profile(n: np.ndarray, base: float, offsets: np.ndarray, shape: EmitterShape) -> tuple[np.ndarray, np.ndarray]:
    """(g0, log-likelihood) at each offset (s), g0 (and a NaN base) profiled; constants dropped."""
    kernels = np.stack([kernel_bin_averages(shape, float(o)) for o in offsets])
    models = pixel_models(base, kernels, n_pixels=offsets.size)
    g0, _ = estimate_g2(np.broadcast_to(n, (offsets.size, N_BINS)), models)
    c = bin_widths() - (1.0 - g0)[:, None] * kernels
    counted = n > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.where(counted, np.log(np.where(counted, c, 1.0)), 0.0)
    ll = logc @ n
    if np.isnan(base):
        ll = ll - n.sum() * np.log(c.sum(axis=1))
    else:
        ll = ll - base * c.sum(axis=1)
    bad = ~np.isfinite(ll) | np.isnan(g0) | np.any(counted & (c <= 0), axis=1)
    return g0, np.where(bad, -np.inf, ll)


def _offset_std(n_events: float, base: float, g0: float, offset: float, shape: EmitterShape) -> float:
    """Cramer-Rao std (s) of the offset: expected Fisher information of (offset, g0[, base]) at the fit."""
    g = float(np.clip(g0, 0.0, 1.0))
    w = bin_widths()
    v = kernel_bin_averages(shape, offset)
    dv = (kernel_bin_averages(shape, offset + _DERIV_STEP_S)
          - kernel_bin_averages(shape, offset - _DERIV_STEP_S)) / (2.0 * _DERIV_STEP_S)
    c = w - (1.0 - g) * v
    if np.any(c <= 0):
        return float("nan")
    b = n_events / c.sum() if np.isnan(base) else base
    # d mu_k / d theta for mu_k = b c_k: offset, g0, base (profiled: the base's row is kept, then marginalized).
    jac = np.stack([-b * (1.0 - g) * dv, b * v, c])
    if not np.isnan(base):
        jac = jac[:2]
    info = (jac / (b * c)) @ jac.T
    with np.errstate(divide="ignore", invalid="ignore"):
        try:
            cov = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            return float("inf")
    var = cov[0, 0]
    return float(np.sqrt(var)) if np.isfinite(var) and var > 0 else float("inf")


def fit_zero_delay(hist_sum, base: float | None, shape: EmitterShape) -> ZeroDelayFit:
    """Poisson MLE of the zero-delay offset (s) of a summed all-pairs histogram, with its Cramer-Rao std.

    hist_sum: (N_BINS,) counts, or (..., N_BINS) summed over the leading axes (a scan's pixels).
    base: the summed histogram's counts per bin of uncorrelated light (sum over pixels of n_A n_B D / T);
    None or NaN: fitted (profiled). shape: the emitter's (t1, t2, a). ValueError without events or with a
    base that is not > 0. The offset is found within +-OFFSET_RANGE_S.
    """
    h = _as_histograms(hist_sum)
    n = h.reshape(-1, N_BINS).sum(axis=0)
    N = float(n.sum())
    if N <= 0:
        raise ValueError("fit_zero_delay needs a histogram with events; got an empty one")
    b = float("nan") if base is None else float(base)
    if not (np.isnan(b) or (np.isfinite(b) and b > 0)):
        raise ValueError(f"base must be a positive number of counts per bin (None: fitted), got {base!r}")
    grid = np.arange(-OFFSET_RANGE_S, OFFSET_RANGE_S + 0.5 * _GRID_STEP_S, _GRID_STEP_S)
    _, ll = _profile(n, b, grid, shape)
    if not np.any(np.isfinite(ll)):
        raise ValueError("fit_zero_delay: no offset in +-100 ns gives these counts a positive expectation")
    i = int(np.argmax(ll))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(lambda o: -float(_profile(n, b, np.array([o]), shape)[1][0]),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-14})
    offset = float(res.x) if res.fun <= -ll[i] else float(grid[i])
    g0 = float(_profile(n, b, np.array([offset]), shape)[0][0])
    return ZeroDelayFit(offset_s=offset, offset_std_s=_offset_std(N, b, g0, offset, shape), n_events=N)


__all__ = ["OFFSET_RANGE_S", "ZeroDelayFit", "fit_zero_delay"]
