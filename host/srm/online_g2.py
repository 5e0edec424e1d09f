"""On-line g2(0) of a scan: per-pixel estimates as pixels arrive, with the scan's context so far.

Every estimator needs each pixel's shape (t1, t2, a) as context (docs/physics.md section 1.7). On line
it comes from the pixels stored so far (`models.g2.scan_context.fit_scan_context`: the scan's shape,
its three-level rates and saturation model giving each pixel the shape at the pump its PL says, the
zero-delay offset where significant; a scan that shows no antibunching, e.g. uncorrelated light, keeps
the default and its estimates carry NOTE_DEFAULT_SHAPE), refitted whenever the stored events have
grown by REFIT_GROWTH (1-10 s in a worker process); until they reach MIN_CONTEXT_EVENTS the NV default
shape is used. The maps written at run end are recomputed with the context of the whole scan and each
pixel's pump fitted on its own histogram where it can be (`analysis.srm_results`).

Adding pixels to the context (`add_context`) and refitting are separate steps, so that the host can
run the refit (`refit_shape`, a pure function of a `RefitRequest`) in another process while the
estimates go on with the context known now; `use_shape` swaps the new context in when it comes back (a
refit of fewer events never replaces that of more). `add` does all three in line.

The estimates go through the one g2 path (`models.g2.estimation.estimate_pixels`) with the singles
required: a pixel gets g2 = g2_std = NaN, with a reason code (`G2_REASONS`), when it has no events,
fewer than the estimator works from (the CNN's training range starts at 20 events), or singles that
give no normalization.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from nvscope.models.g2.estimation import (G2Estimate, G2Estimator, estimate_pixels, histogram_models,
                                         with_shape, with_shape_note)
from nvscope.models.g2.mle import MleEstimator
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, EmitterShape, PixelModels, concat_models
from nvscope.models.g2.scan_context import ScanContext, fit_scan_context, pixel_pl, with_context
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
"""Events the stored pixels need before their fitted context replaces the NV default shape."""
REFIT_GROWTH = 1.5
"""Refit the context when the stored events have grown by this factor since the last refit."""
MAX_CONTEXT_PIXELS = 20_000
"""The most pixels the on-line context keeps (the first ones stored): enough for any shape fit, and
bounded memory on a large scan; the run-end analysis uses every pixel of the file."""


@dataclass(frozen=True)
class RefitRequest:
    """What a context refit needs: the context's pixels (histograms (P, N_BINS), their models'
    normalization, PL in counts/s), the shape to refine from (None: search from scratch) and the
    events in the context (orders the refits)."""

    hist: np.ndarray
    models: PixelModels
    pl_cps: np.ndarray
    start: EmitterShape | None
    events: float


def refit_shape(request: RefitRequest) -> ScanContext:
    """The scan's context (`scan_context.fit_scan_context`: shape, local shapes, zero delay) fitted to a
    refit request's pixels; any process."""
    return fit_scan_context(request.hist, request.models, request.pl_cps, start=request.start)


class ScanEstimator:
    """g2(0) of one scan's pixels as they arrive; the context grows with the scan.

    `add_context` and `use_shape` may be called from one thread while `query` runs on another."""

    def __init__(self, estimator: G2Estimator):
        self.estimator = estimator
        self.context: ScanContext | None = None  # None: the NV default shape (too few events yet)
        self.shape_events = 0.0  # events the context in use was fitted on (0: the default)
        self.requested_events = 0.0  # events of the latest refit requested
        self._hist: list[np.ndarray] = []
        self._models: list[PixelModels] = []
        self._pl: list[np.ndarray] = []
        self._pixels = 0
        self._events = 0.0
        self._lock = threading.Lock()

    @property
    def shape(self) -> EmitterShape:
        """The scan's one shape in use (the NV default until the context is fitted)."""
        context = self.context
        return NV_DEFAULT_SHAPE if context is None else context.shape

    def models(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> PixelModels:
        """Each pixel's model with the context in use (its normalization computed here, once; its kernel
        the shape at the pump its PL says)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        models = histogram_models(None, len(h), mode, n_a, n_b, t_acq, tac_dead_s, n_starts)
        return self._in_context(models, pixel_pl(n_a, n_b, t_acq))

    def _in_context(self, models: PixelModels, pl: np.ndarray) -> PixelModels:
        context = self.context
        if context is None:
            return with_shape(models, NV_DEFAULT_SHAPE)
        return with_context(models, context, pl)

    def add_context(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0,
                    n_starts=None) -> RefitRequest | None:
        """Add stored pixels (singles n_a, n_b, acquisition time t_acq in s, how the histograms were
        acquired) to the context; the refit request when it has grown enough since the last one
        (None: keep the context)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        models = histogram_models(None, len(h), mode, n_a, n_b, t_acq, tac_dead_s, n_starts)
        return self._add(h, models, pixel_pl(n_a, n_b, t_acq))

    def use_shape(self, context: ScanContext | None, events: float) -> bool:
        """Use a context refitted on `events` events from now on, unless the one in use came from more
        (a late refit) or the refit saw no antibunching (its shape is the default); True if taken."""
        with self._lock:
            if context is None or context.note != NOTE_NONE or events <= self.shape_events:
                return False
            self.context, self.shape_events = context, events
            return True

    def add(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> G2Estimate:
        """Add stored pixels to the context, refitting it in line when due, and estimate them."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        models = histogram_models(None, len(h), mode, n_a, n_b, t_acq, tac_dead_s, n_starts)
        pl = pixel_pl(n_a, n_b, t_acq)
        request = self._add(h, models, pl)
        if request is not None:
            self.use_shape(refit_shape(request), request.events)
        return self._estimate(h, self._in_context(models, pl))

    def query(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0, n_starts=None) -> G2Estimate:
        """Estimate pixels with the context in use, without adding them to it."""
        return self.query_models(hist, n_a, n_b, t_acq, mode, tac_dead_s, n_starts)[0]

    def query_models(self, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0,
                     n_starts=None) -> tuple[G2Estimate, PixelModels]:
        """`query`, and the pixels' models it used (one context for both: adaptive dwell's prediction)."""
        h = np.asarray(hist).reshape(-1, N_BINS)
        models = self.models(h, n_a, n_b, t_acq, mode, tac_dead_s, n_starts)
        return self._estimate(h, models), models

    def _estimate(self, h: np.ndarray, models: PixelModels) -> G2Estimate:
        est = estimate_pixels(self.estimator, h, models, require_base=True)
        return with_shape_note(est, NOTE_NONE if self.shape_events > 0 else NOTE_DEFAULT_SHAPE)

    def _add(self, h: np.ndarray, models: PixelModels, pl: np.ndarray) -> RefitRequest | None:
        with self._lock:
            room = MAX_CONTEXT_PIXELS - self._pixels
            if room <= 0:
                return None
            keep = slice(0, min(room, len(h)))
            self._hist.append(h[keep])
            self._models.append(models.take(keep))
            self._pl.append(pl[keep])
            self._pixels += len(h[keep])
            self._events += float(h[keep].sum())
            n = self._events
            if n < MIN_CONTEXT_EVENTS or n < REFIT_GROWTH * self.requested_events:
                return None
            self.requested_events = n
            hist = np.concatenate(self._hist)
            self._hist = [hist]
            all_models = concat_models(self._models)
            self._models = [all_models]
            pl_all = np.concatenate(self._pl)
            self._pl = [pl_all]
            start = self.context.shape if self.context is not None else None
            return RefitRequest(hist, all_models, pl_all, start, n)


__all__ = ["G2Estimator", "MleEstimator", "G2Estimate", "RefitRequest", "ScanEstimator", "refit_shape",
           "estimate_pixels", "G2_REASONS", "REASON_OK", "REASON_NO_EVENTS", "REASON_FEW_EVENTS",
           "REASON_NO_NORMALIZATION", "MIN_CONTEXT_EVENTS", "REFIT_GROWTH"]
