"""On-line g2(0) of a scan: per-pixel estimates as pixels arrive, with the emitter shape from the scan so far.

Every estimator needs the emitter's shape (t1, t2, a) as context (docs/physics.md section 1.7). On line
it comes from the summed histogram of the pixels stored so far, normalized by their singles
(`fit_shape`), refitted whenever the sum has grown by REFIT_GROWTH (from the previous shape, one
local refinement of ~0.1 s, so that the daemon never stalls on it); until the sum holds
MIN_CONTEXT_EVENTS events the NV default shape is used, and the first fit searches from scratch. The maps
written at run end are recomputed with the shape of the whole scan (`analysis.srm_results`).

The estimates go through the one g2 path (`models.g2.estimation.estimate_pixels`) with the singles
required: a pixel gets g2 = g2_std = NaN, with a reason code (`G2_REASONS`), when it has no events,
fewer than the estimator works from (the CNN's training range starts at 20 events), or singles that
give no normalization.
"""

from __future__ import annotations

import numpy as np

from nvscope.models.g2.estimation import G2Estimate, G2Estimator, context_sums, estimate_pixels
from nvscope.models.g2.mle import MleEstimator, fit_shape
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, pixel_base
from nvscope.models.g2.reasons import (
    G2_REASONS,
    REASON_FEW_EVENTS,
    REASON_NO_EVENTS,
    REASON_NO_NORMALIZATION,
    REASON_OK,
)
from nvscope.proto.histogram import N_BINS

MIN_CONTEXT_EVENTS = 2000
"""Events the summed histogram needs before its fitted shape replaces the NV default."""
REFIT_GROWTH = 1.5
"""Refit the shape when the summed events have grown by this factor since the last fit."""


class ScanEstimator:
    """g2(0) of one scan's pixels as they arrive; the shape context grows with the scan."""

    def __init__(self, estimator: G2Estimator):
        self.estimator = estimator
        self.hist_sum = np.zeros(N_BINS)
        self.base_sum = 0.0
        self.shape = NV_DEFAULT_SHAPE
        self.shape_events = 0.0  # events in the sum when the shape was last fitted (0: the default)

    def add(self, hist, n_a, n_b, t_acq) -> G2Estimate:
        """Add stored pixels (singles n_a, n_b, acquisition time t_acq in s) to the context, refitting
        the shape when due, and estimate them."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        base = pixel_base(n_a, n_b, t_acq, len(h))
        h_sum, b_sum = context_sums(h, base)
        self.hist_sum += h_sum
        self.base_sum += b_sum or 0.0
        n = self.hist_sum.sum()
        if n >= MIN_CONTEXT_EVENTS and n >= REFIT_GROWTH * self.shape_events and self.base_sum > 0:
            start = self.shape if self.shape_events > 0 else None
            self.shape = fit_shape(self.hist_sum, base=self.base_sum, start=start)
            self.shape_events = n
        return estimate_pixels(self.estimator, h, self.shape, base, require_base=True)

    def query(self, hist, n_a, n_b, t_acq) -> G2Estimate:
        """Estimate pixels with the current shape, without adding them to the context (adaptive dwell)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        return estimate_pixels(self.estimator, h, self.shape, pixel_base(n_a, n_b, t_acq, len(h)),
                               require_base=True)


__all__ = ["G2Estimator", "MleEstimator", "G2Estimate", "ScanEstimator", "estimate_pixels", "G2_REASONS",
           "REASON_OK", "REASON_NO_EVENTS", "REASON_FEW_EVENTS", "REASON_NO_NORMALIZATION",
           "MIN_CONTEXT_EVENTS", "REFIT_GROWTH"]
