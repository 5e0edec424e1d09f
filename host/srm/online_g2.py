"""On-line g2(0) of a scan: per-pixel estimates as pixels arrive, with the emitter shape from the scan so far.

Every estimator needs the emitter's shape (t1, t2, a) as context (docs/physics.md section 1.7). On line
it comes from the summed histogram of the pixels stored so far, normalized by their singles
(`fit_shape_full`; a sum that shows no antibunching, e.g. uncorrelated light, keeps the default and its
estimates carry NOTE_DEFAULT_SHAPE), refitted whenever the sum has grown by REFIT_GROWTH (from the previous shape, one
local refinement of ~0.1 s); until the sum holds MIN_CONTEXT_EVENTS events the NV default shape is
used, and the first fit searches from scratch. The maps written at run end are recomputed with the
shape of the whole scan (`analysis.srm_results`).

Adding pixels to the context (`add_context`) and refitting are separate steps, so that the host can
run the refit (`refit_shape`, a pure function of a `RefitRequest`) in another process while the
estimates go on with the shape known now; `use_shape` swaps the new shape in when it comes back (a
refit of a smaller sum never replaces that of a larger one). `add` does all three in line.

The estimates go through the one g2 path (`models.g2.estimation.estimate_pixels`) with the singles
required: a pixel gets g2 = g2_std = NaN, with a reason code (`G2_REASONS`), when it has no events,
fewer than the estimator works from (the CNN's training range starts at 20 events), or singles that
give no normalization.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from nvscope.models.g2.estimation import (G2Estimate, G2Estimator, context_sums, estimate_pixels,
                                         histogram_models, with_shape_note)
from nvscope.models.g2.mle import MleEstimator, fit_shape_full
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, EmitterShape, PixelModels, kernel_bin_averages
from nvscope.models.g2.reasons import NOTE_DEFAULT_SHAPE, NOTE_NONE
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


@dataclass(frozen=True)
class RefitRequest:
    """What a shape refit needs: the summed histogram (N_BINS,) counts, its base (counts per bin, or per bin
    (N_BINS,) for start-stop histograms), the shape to refine from (None: search from scratch) and the
    events in the sum (orders the refits)."""

    hist_sum: np.ndarray
    base: float | np.ndarray
    start: EmitterShape | None
    events: float


def refit_shape(request: RefitRequest) -> EmitterShape | None:
    """The emitter shape fitted to a refit request's summed histogram (`fit_shape_full`; any process); None
    when the sum shows no antibunching beyond its noise (`ShapeFit.determined`: keep the default)."""
    fit = fit_shape_full(request.hist_sum, base=request.base, start=request.start)
    return fit.shape if fit.determined else None


class ScanEstimator:
    """g2(0) of one scan's pixels as they arrive; the shape context grows with the scan.

    `add_context` and `use_shape` may be called from one thread while `query` runs on another."""

    def __init__(self, estimator: G2Estimator):
        self.estimator = estimator
        self.hist_sum = np.zeros(N_BINS)
        self.base_sum = np.zeros(N_BINS)  # per bin: sum of base * weight
        self.shape = NV_DEFAULT_SHAPE
        self.shape_events = 0.0  # events in the sum when the shape in use was fitted (0: the default)
        self.requested_events = 0.0  # events in the sum of the latest refit requested
        self._lock = threading.Lock()

    def models(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> PixelModels:
        """Each pixel's model with the shape in use (its normalization computed here, once)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        return histogram_models(self.shape, len(h), mode, n_a, n_b, t_acq, tac_dead_s, n_starts)

    def add_context(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0,
                    n_starts=None) -> RefitRequest | None:
        """Add stored pixels (singles n_a, n_b, acquisition time t_acq in s, how the histograms were
        acquired) to the context; the refit request when the sum has grown enough since the last one
        (None: keep the shape)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        return self._add_sums(h, self.models(h, n_a, n_b, t_acq, mode, tac_dead_s, n_starts))

    def use_shape(self, shape: EmitterShape | None, events: float) -> bool:
        """Use a shape refitted on a sum of `events` events from now on, unless the one in use came
        from a larger sum (a late refit) or the refit saw no antibunching (None); True if it was taken."""
        with self._lock:
            if shape is None or events <= self.shape_events:
                return False
            self.shape, self.shape_events = shape, events
            return True

    def add(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> G2Estimate:
        """Add stored pixels to the context, refitting the shape in line when due, and estimate them."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        models = self.models(h, n_a, n_b, t_acq, mode, tac_dead_s, n_starts)
        request = self._add_sums(h, models)
        if request is not None:
            self.use_shape(refit_shape(request), request.events)
            models = replace(models, kernel=np.broadcast_to(kernel_bin_averages(self.shape), models.kernel.shape).copy())
        return self._estimate(h, models)

    def query(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> G2Estimate:
        """Estimate pixels with the current shape, without adding them to the context (adaptive dwell)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        return self._estimate(h, self.models(h, n_a, n_b, t_acq, mode, tac_dead_s, n_starts))

    def _estimate(self, h: np.ndarray, models: PixelModels) -> G2Estimate:
        est = estimate_pixels(self.estimator, h, models, require_base=True)
        return with_shape_note(est, NOTE_NONE if self.shape_events > 0 else NOTE_DEFAULT_SHAPE)

    def _add_sums(self, h: np.ndarray, models: PixelModels) -> RefitRequest | None:
        h_sum, b_sum = context_sums(h, models.base, models.weight)
        with self._lock:
            self.hist_sum += h_sum
            if b_sum is not None:
                self.base_sum += b_sum
            n = float(self.hist_sum.sum())
            if n < MIN_CONTEXT_EVENTS or n < REFIT_GROWTH * self.requested_events or not np.all(self.base_sum > 0):
                return None
            self.requested_events = n
            start = self.shape if self.shape_events > 0 else None
            base = self.base_sum.copy()
            base = float(base[0]) if np.all(base == base[0]) else base
            return RefitRequest(self.hist_sum.copy(), base, start, n)


__all__ = ["G2Estimator", "MleEstimator", "G2Estimate", "RefitRequest", "ScanEstimator", "refit_shape",
           "estimate_pixels", "G2_REASONS", "REASON_OK", "REASON_NO_EVENTS", "REASON_FEW_EVENTS",
           "REASON_NO_NORMALIZATION", "MIN_CONTEXT_EVENTS", "REFIT_GROWTH"]
