"""The one g2(0) estimation path: per-pixel estimates with reason codes, and the scan's shape context.

Every caller (the host's on-line pipeline, the run-end analysis, `nvscope g2 estimate`) computes
each pixel's normalization once where the singles enter (`model.pixel_base`: n_A n_B D / T in
counts per bin, NaN when the singles are unknown), fits the emitter shape on the scan's summed
histograms (`fit_scan_shape`), and calls `estimate_pixels` with any `G2Estimator`: the Poisson MLE
(`mle.MleEstimator`), the least-squares baseline (`least_squares.LeastSquaresEstimator`) or the
CNN (host/srm/cnn_estimator.py). Which pixels get no estimate, and why, is decided once
(`reasons.pixel_reasons`); `require_base` says whether a free normalization is acceptable (the
off-line command) or not (the on-line path, where the singles are always measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nvscope.proto.histogram import N_BINS

from .mle import ShapeFit, fit_shape_full
from .model import EmitterShape
from .reasons import REASON_NO_ESTIMATE, REASON_NO_STD, REASON_OK, pixel_reasons


class G2Estimator(Protocol):
    """A g2(0) estimator: (P, N_BINS) histograms, the scan's shape and each pixel's base -> (g2, g2_std)."""

    name: str
    min_events: int
    """Fewest events in a histogram it estimates (the CNN: the bottom of its training range)."""
    uses_shape: bool
    """Whether it needs the scan's shape (False: it fits its own per pixel, and `shape` may be None)."""

    def estimate(self, hist: np.ndarray, shape: EmitterShape | None,
                 base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) (P,) of histograms (P, N_BINS); base (P,) counts per bin, NaN: fitted."""
        ...


@dataclass
class G2Estimate:
    """Per-pixel g2(0), its std and the reason code (`reasons.G2_REASONS`) where they are NaN."""

    g2: np.ndarray
    g2_std: np.ndarray
    reason: np.ndarray


def estimate_pixels(estimator: G2Estimator, hist, shape: EmitterShape | None, base,
                    require_base: bool = False) -> G2Estimate:
    """g2(0) of each pixel (hist (P, N_BINS), base (P,) or scalar in counts per bin, NaN: unknown) by
    `estimator`, NaN with a reason code where it cannot estimate; with `require_base` a pixel whose
    base is unknown is not estimated (REASON_NO_NORMALIZATION) instead of fitting its base."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    b = np.broadcast_to(np.asarray(base, dtype=float), (len(h),))
    reason = pixel_reasons(h.sum(axis=1), b, estimator.min_events, require_base)
    g2 = np.full(len(h), np.nan)
    std = np.full(len(h), np.nan)
    ok = reason == REASON_OK
    if np.any(ok):
        g2[ok], std[ok] = estimator.estimate(h[ok], shape, b[ok])
    reason[ok & ~np.isfinite(g2)] = REASON_NO_ESTIMATE
    reason[ok & np.isfinite(g2) & ~np.isfinite(std)] = REASON_NO_STD
    return G2Estimate(g2, std, reason)


def context_sums(hist, base) -> tuple[np.ndarray, float | None]:
    """The summed histogram (N_BINS,) that the scan's shape is fitted to, and its base (counts per
    bin): over the pixels whose base is known when any is (None: no pixel's singles are known; then
    every pixel is summed and the base is fitted)."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    b = np.broadcast_to(np.asarray(base, dtype=float), (len(h),))
    known = ~np.isnan(b)
    if not known.any():
        return h.sum(axis=0), None
    return h[known].sum(axis=0), float(b[known].sum())


def fit_scan_shape(hist, base, start: EmitterShape | None = None) -> ShapeFit | None:
    """The emitter shape of a scan, fitted (`mle.fit_shape_full`) to its summed histograms with the
    normalization fixed by the singles where they are known; None when there is nothing to fit (no
    events, or singles that give no normalization)."""
    h_sum, b_sum = context_sums(hist, base)
    if not h_sum.sum() > 0 or (b_sum is not None and not b_sum > 0):
        return None
    return fit_shape_full(h_sum, base=b_sum, start=start)


__all__ = ["G2Estimator", "G2Estimate", "estimate_pixels", "context_sums", "fit_scan_shape"]
