"""The one g2(0) estimation path: per-pixel estimates with reason codes and notes, and the scan's shape context.

Every caller (the host's on-line pipeline, the run-end analysis, `nvscope g2 estimate`) computes each
pixel's normalization once where the singles enter (`normalization.histogram_normalization`: the
all-pairs n_A n_B D / T, or the start-stop base and survival weight; NaN base when the singles are
unknown), fits the emitter shape on the scan's summed histograms (`fit_scan_shape`; when the scan shows
no antibunching beyond its noise the NV default shape is used, `scan_shape`), builds each pixel's model
(`histogram_models` -> `model.PixelModels`) and calls `estimate_pixels` with any `G2Estimator`: the
Poisson MLE (`mle.MleEstimator`), the least-squares baseline (`least_squares.LeastSquaresEstimator`) or
the CNN (host/srm/cnn_estimator.py). Which pixels get no estimate, and why, is decided once
(`reasons.pixel_reasons`); `require_base` says whether a free normalization is acceptable (the off-line
command) or not (the on-line path, where the singles are always measured). A pixel the estimator notes
as outside its range (`G2Estimator.notes`, `reasons.G2_NOTES`) is estimated by the MLE and keeps the
note: never a silent number from an estimator off its range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from nvscope.proto.histogram import N_BINS

from .mle import MleEstimator, ShapeFit, fit_shape_full
from .model import NV_DEFAULT_SHAPE, EmitterShape, PixelModels, kernel_bin_averages, pixel_models
from .normalization import histogram_normalization, refine_startstop, stop_rates
from .reasons import NOTE_DEFAULT_SHAPE, NOTE_NONE, REASON_NO_ESTIMATE, REASON_NO_STD, REASON_OK, pixel_reasons

STARTSTOP_ITERATIONS = 3
"""Start-stop pixels are estimated again this many times with the survival of their own g2
(`normalization.refine_startstop`); the estimate moves by < 1e-3 after the second at 500 kcps."""


class G2Estimator(Protocol):
    """A g2(0) estimator: (P, N_BINS) histograms and each pixel's model -> (g2, g2_std)."""

    name: str
    min_events: int
    """Fewest events in a histogram it estimates (the CNN: the bottom of its training range)."""

    def estimate(self, hist: np.ndarray, models: PixelModels) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) (P,) of histograms (P, N_BINS); models.base NaN: fitted."""
        ...

    def notes(self, hist: np.ndarray, models: PixelModels) -> np.ndarray:
        """int8 (P,): 0 where it serves the pixel, else a `G2_NOTES` code (the pixel goes to the MLE)."""
        ...


@dataclass
class G2Estimate:
    """Per-pixel g2(0), its std, the reason code (`reasons.G2_REASONS`) where they are NaN and the note
    (`reasons.G2_NOTES`, 0: none) on a number the estimator did not make itself or made with a default."""

    g2: np.ndarray
    g2_std: np.ndarray
    reason: np.ndarray
    note: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.note is None:
            self.note = np.zeros(len(self.g2), dtype=np.int8)


def _run(estimator, h: np.ndarray, models: PixelModels) -> tuple[np.ndarray, np.ndarray]:
    g2, std = estimator.estimate(h, models)
    if models.mode == "startstop" and models.stop_rate is not None:
        for _ in range(STARTSTOP_ITERATIONS):
            g2, std = estimator.estimate(h, refine_startstop(models, g2))
    return np.asarray(g2, dtype=float), np.asarray(std, dtype=float)


def estimate_pixels(estimator: G2Estimator, hist, models: PixelModels, require_base: bool = False) -> G2Estimate:
    """g2(0) of each pixel (hist (P, N_BINS), `models` its P per-pixel models) by `estimator`, NaN with a
    reason code where it cannot estimate; pixels the estimator notes (`notes`) are estimated by the MLE
    and keep the note. With `require_base` a pixel whose base is unknown is not estimated
    (REASON_NO_NORMALIZATION) instead of fitting its base."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    if len(models) != len(h):
        raise ValueError(f"{len(h)} histograms but {len(models)} pixel models")
    reason = pixel_reasons(h.sum(axis=1), models.base, estimator.min_events, require_base)
    g2 = np.full(len(h), np.nan)
    std = np.full(len(h), np.nan)
    note = np.zeros(len(h), dtype=np.int8)
    ok = reason == REASON_OK
    notes = getattr(estimator, "notes", None)
    if notes is not None and np.any(ok):
        note[ok] = notes(h[ok], models.take(ok))
    for rows, est in ((ok & (note == NOTE_NONE), estimator), (ok & (note != NOTE_NONE), MleEstimator())):
        if np.any(rows):
            g2[rows], std[rows] = _run(est, h[rows], models.take(rows))
    reason[ok & ~np.isfinite(g2)] = REASON_NO_ESTIMATE
    reason[ok & np.isfinite(g2) & ~np.isfinite(std)] = REASON_NO_STD
    return G2Estimate(g2, std, reason, note)


def histogram_models(shape: EmitterShape | None, n_pixels: int, mode: str = "allpairs", n_a=None, n_b=None, t_acq=None,
                     tac_dead_s=0.0, n_starts=None, offset_s: float = 0.0) -> PixelModels:
    """Each pixel's model: the normalization of its histogram mode (`histogram_normalization`, computed
    once here) and the kernel of `shape` (zero-delay offset offset_s, s; None: zeros until `with_shape`)."""
    base, weight = histogram_normalization(mode, n_a, n_b, t_acq, n_pixels, tac_dead_s, n_starts)
    rate = stop_rates(n_b, t_acq, n_pixels) if n_b is not None and t_acq is not None else None
    kernel = np.zeros(N_BINS) if shape is None else kernel_bin_averages(shape, offset_s)
    return pixel_models(base, kernel, weight, mode, n_pixels, rate)


def with_shape(models: PixelModels, shape: EmitterShape, offset_s: float = 0.0) -> PixelModels:
    """`models` with every pixel's kernel that of `shape` (the normalization kept)."""
    kernel = np.broadcast_to(kernel_bin_averages(shape, offset_s), models.kernel.shape).copy()
    return replace(models, kernel=kernel)


def context_sums(hist, base, weight=None) -> tuple[np.ndarray, float | np.ndarray | None]:
    """The summed histogram (N_BINS,) that the scan's shape is fitted to, and its base: counts per bin
    (weight None), or per bin (N_BINS,) sum_p base_p weight_pk; over the pixels whose base is known when
    any is (None: no pixel's singles are known; then every pixel is summed and the base is fitted)."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    b = np.broadcast_to(np.asarray(base, dtype=float), (len(h),))
    known = ~np.isnan(b)
    if not known.any():
        return h.sum(axis=0), None
    if weight is None:
        return h[known].sum(axis=0), float(b[known].sum())
    w = np.broadcast_to(np.asarray(weight, dtype=float), (len(h), N_BINS))
    return h[known].sum(axis=0), b[known] @ w[known]


def fit_scan_shape(hist, base, start: EmitterShape | None = None, weight=None) -> ShapeFit | None:
    """The emitter shape of a scan, fitted (`mle.fit_shape_full`) to its summed histograms with the
    normalization fixed by the singles where they are known (weight (P, N_BINS): the start-stop
    survival; None: ones); None when there is nothing to fit (no events, or singles that give no
    normalization). `ShapeFit.determined` says whether the scan shows antibunching at all."""
    h_sum, b_sum = context_sums(hist, base, weight)
    if not h_sum.sum() > 0 or (b_sum is not None and not np.all(np.asarray(b_sum) > 0)):
        return None
    return fit_shape_full(h_sum, base=b_sum, start=start)


def scan_shape(fit: ShapeFit | None) -> tuple[EmitterShape, int]:
    """The shape to estimate with and the note it carries: the fitted one, or NV_DEFAULT_SHAPE with
    NOTE_DEFAULT_SHAPE when there was nothing to fit or the scan shows no antibunching (uncorrelated light)."""
    if fit is None or not fit.determined:
        return NV_DEFAULT_SHAPE, NOTE_DEFAULT_SHAPE
    return fit.shape, NOTE_NONE


def with_shape_note(est: G2Estimate, note: int) -> G2Estimate:
    """`est` with `note` on the estimated pixels that carry no note of their own."""
    if note != NOTE_NONE:
        est.note = np.where((est.note == NOTE_NONE) & np.isfinite(est.g2), np.int8(note), est.note).astype(np.int8)
    return est


__all__ = ["G2Estimator", "G2Estimate", "STARTSTOP_ITERATIONS", "estimate_pixels", "histogram_models", "with_shape",
           "context_sums", "fit_scan_shape", "scan_shape", "with_shape_note"]
