"""On-line g2(0) of a scan: per-pixel estimates as pixels arrive, with the emitter shape from the scan so far.

Every estimator needs the emitter's shape (t1, t2, a) as context (physics.md section 1). On line
it comes from the summed histogram of the pixels stored so far, normalized by their singles
(`fit_shape`), refitted whenever the sum has grown by REFIT_GROWTH (from the previous shape, one
local refinement of ~0.1 s, so that the daemon never stalls on it); until the sum holds
MIN_CONTEXT_EVENTS events the NV default shape is used, and the first fit searches from scratch. The maps written at run end are
recomputed with the shape of the whole scan (`srm.srm_results`).

A pixel gets g2 = g2_std = NaN, with a reason code, when it has no events or fewer than the
estimator works from (the CNN's training range starts at 20 events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nvscope.models.g2.mle import estimate_g2, fit_shape
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, EmitterShape, singles_base
from nvscope.proto.histogram import N_BINS

MIN_CONTEXT_EVENTS = 2000
"""Events the summed histogram needs before its fitted shape replaces the NV default."""
REFIT_GROWTH = 1.5
"""Refit the shape when the summed events have grown by this factor since the last fit."""

REASON_OK, REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_NO_NORMALIZATION = 0, 1, 2, 3
G2_REASONS: tuple[str, ...] = ("", "no events", "fewer events than the estimator works from",
                               "no singles normalization")
"""Why a pixel's g2 is NaN, by reason code (0: it is not)."""


class G2Estimator(Protocol):
    """What the host needs of a g2(0) estimator."""

    name: str
    min_events: int

    def estimate(self, hist: np.ndarray, shape: EmitterShape, n_a: np.ndarray, n_b: np.ndarray,
                 t_acq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) of (P, N_BINS) histograms with singles n_a, n_b and acquisition times t_acq (s)."""
        ...


@dataclass(frozen=True)
class MleEstimator:
    """The Poisson MLE of `models.g2.mle` behind the `G2Estimator` interface."""

    name: str = "mle"
    min_events: int = 1

    def estimate(self, hist, shape, n_a, n_b, t_acq):
        """(g2, g2_std) by the Poisson MLE with the shape fixed and the singles normalization."""
        return estimate_g2(hist, shape, n_a=n_a, n_b=n_b, t_acq=t_acq)


@dataclass
class G2Estimate:
    """Per-pixel g2(0), its std and the reason code (`G2_REASONS`) where they are NaN."""

    g2: np.ndarray
    g2_std: np.ndarray
    reason: np.ndarray


def estimate_pixels(estimator: G2Estimator, hist, shape: EmitterShape, n_a, n_b, t_acq) -> G2Estimate:
    """g2(0) of each pixel by `estimator`, NaN with a reason for pixels it cannot estimate."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    n_a, n_b, t_acq = (np.broadcast_to(np.asarray(x, dtype=float), (len(h),)) for x in (n_a, n_b, t_acq))
    n_events = h.sum(axis=1)
    reason = np.full(len(h), REASON_OK, dtype=np.int8)
    reason[n_events < estimator.min_events] = REASON_FEW_EVENTS
    reason[n_events == 0] = REASON_NO_EVENTS
    base = singles_base(n_a, n_b, np.where(t_acq > 0, t_acq, 1.0))
    reason[(reason == REASON_OK) & ~((t_acq > 0) & (base > 0))] = REASON_NO_NORMALIZATION
    g2 = np.full(len(h), np.nan)
    std = np.full(len(h), np.nan)
    ok = reason == REASON_OK
    if np.any(ok):
        g2[ok], std[ok] = estimator.estimate(h[ok], shape, n_a[ok], n_b[ok], t_acq[ok])
    return G2Estimate(g2, std, reason)


class ScanEstimator:
    """g2(0) of one scan's pixels as they arrive; the shape context grows with the scan."""

    def __init__(self, estimator: G2Estimator):
        self.estimator = estimator
        self.hist_sum = np.zeros(N_BINS)
        self.base_sum = 0.0
        self.shape = NV_DEFAULT_SHAPE
        self.shape_events = 0.0  # events in the sum when the shape was last fitted (0: the default)

    def add(self, hist, n_a, n_b, t_acq) -> G2Estimate:
        """Add stored pixels to the context (refitting the shape when due) and estimate them."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        n_a, n_b, t_acq = (np.broadcast_to(np.asarray(x, dtype=float), (len(h),)) for x in (n_a, n_b, t_acq))
        good = t_acq > 0
        self.hist_sum += h[good].sum(axis=0)
        self.base_sum += float(singles_base(n_a[good], n_b[good], t_acq[good]).sum())
        n = self.hist_sum.sum()
        if n >= MIN_CONTEXT_EVENTS and n >= REFIT_GROWTH * self.shape_events and self.base_sum > 0:
            start = self.shape if self.shape_events > 0 else None
            self.shape = fit_shape(self.hist_sum, base=self.base_sum, start=start)
            self.shape_events = n
        return self.query(h, n_a, n_b, t_acq)

    def query(self, hist, n_a, n_b, t_acq) -> G2Estimate:
        """Estimate pixels with the current shape, without adding them to the context (adaptive dwell)."""
        return estimate_pixels(self.estimator, hist, self.shape, n_a, n_b, t_acq)


__all__ = ["G2Estimator", "MleEstimator", "G2Estimate", "ScanEstimator", "estimate_pixels", "G2_REASONS",
           "REASON_OK", "REASON_NO_EVENTS", "REASON_FEW_EVENTS", "REASON_NO_NORMALIZATION",
           "MIN_CONTEXT_EVENTS", "REFIT_GROWTH"]
