"""What a scan tells each pixel's model: the emitter's shape at the pixel's own pump, and where tau = 0 lies
(docs/physics.md sections 1.3, 1.7 and 1.10).

The one place the run-end analysis, the on-line estimates and the CNN's training data get every pixel's
kernel from:

1. the scan's one shape, fitted to its summed histogram with the singles normalization
   (`estimation.fit_scan_shape`); a scan that shows no antibunching beyond its noise (uncorrelated
   light) keeps the NV default shape, noted (`scan_shape`);
2. the zero-delay offset of the summed histogram (`zero_delay.fit_zero_delay`), used only where it is
   significant (beyond OFFSET_SIGMAS of its std: an offset consistent with 0 would only add noise;
   g2(0) depends on it to second order near 0);
3. the shape at each pixel's pump (`local_shape.fit_local_shapes`: the scan's three-level rates and
   saturation model): the pump from the pixel's PL, or (`own_pumps`, the run-end analysis) fitted on
   the pixel's own histogram where it holds at least `local_shape.MIN_PUMP_EVENTS` events, which is
   right where several emitters share a spot and their PLs add.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nvscope.proto.histogram import N_BINS

from .estimation import (G2Estimate, G2Estimator, context_sums, estimate_pixels, fit_scan_shape, histogram_models,
                         scan_shape, with_shape, with_shape_note)
from .mle import estimate_g2
from .normalization import refine_startstop
from .local_shape import LocalShapes, fit_local_shapes
from .model import EmitterShape, PixelModels, kernel_bin_averages
from .reasons import NOTE_NONE
from .zero_delay import fit_zero_delay

STARTSTOP_PASSES: int = 2
"""Refits of a start-stop scan's shape with the survival from the pixels' own g2 (section 1.2)."""
OFFSET_SIGMAS: float = 3.0
"""A fitted zero-delay offset is used when it is this many of its std away from 0."""


@dataclass(frozen=True)
class ScanContext:
    """A scan's context for its pixels' models.

    shape: the one shape of the summed histogram (NV default where it shows no antibunching).
    note: NOTE_NONE, or NOTE_DEFAULT_SHAPE when `shape` is the default.
    local: the scan's local-shape model (None: one shape for every pixel: too few events, or the shape
    does not follow the PL beyond the noise).
    offset_s, offset_std_s: the fitted zero-delay offset and its std (s; NaN: not fitted).
    offset_used_s: the offset the kernels use (s): offset_s where significant, else 0.
    events: the events the context was fitted on.
    """

    shape: EmitterShape
    note: int
    local: LocalShapes | None
    offset_s: float
    offset_std_s: float
    offset_used_s: float
    events: float

    def kernels(self, pl_cps, k12=None) -> np.ndarray:
        """Kernels (P, N_BINS) of pixels at PL pl_cps (counts/s, (P,)), at pumps k12 (1/s) when given."""
        pl = np.atleast_1d(np.asarray(pl_cps, dtype=float))
        if self.local is not None:  # set only where the shape follows the pump (`fit_scan_context`)
            return self.local.kernels(pl, self.offset_used_s, k12=k12)
        return np.broadcast_to(self.kernel0, (pl.size, N_BINS)).copy()

    @property
    def kernel0(self) -> np.ndarray:
        """The scan shape's kernel (N_BINS,) with the offset in use."""
        return kernel_bin_averages(self.shape, self.offset_used_s)

    def attributes(self) -> dict[str, float | int]:
        """The context as run-file attributes (SI units in the names)."""
        out: dict[str, float | int] = {"shape_t1_s": self.shape.t1, "shape_t2_s": self.shape.t2, "shape_a": self.shape.a,
                                       "zero_delay_offset_s": self.offset_s, "zero_delay_offset_std_s": self.offset_std_s,
                                       "zero_delay_offset_used_s": self.offset_used_s,
                                       "local_shape_bins": 1 if self.local is None else self.local.n_bins}
        if self.local is not None and self.local.local:
            ls = self.local
            out.update(local_k21_per_s=ls.k21, local_k23_per_s=ls.k23, local_k31_per_s=ls.k31,
                       local_background_cps=ls.background_cps, local_ref_pl_cps=ls.ref_pl_cps,
                       local_ref_k12_per_s=ls.ref_k12, local_gamma=ls.gamma)
        return out


def pixel_pl(n_a, n_b, t_acq) -> np.ndarray:
    """Each pixel's PL, (n_a + n_b) / t_acq in counts/s (NaN where t_acq <= 0)."""
    t = np.asarray(t_acq, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, (np.asarray(n_a, dtype=float) + np.asarray(n_b, dtype=float)) / t, np.nan)


def super_resolved(pl_cps, g2) -> np.ndarray:
    """The super-resolved image G2 = <N>^2 (1 - g2(0)) in counts^2/s^2 from the PL (counts/s) and g2(0)."""
    return np.asarray(pl_cps, dtype=float) ** 2 * (1.0 - np.asarray(g2, dtype=float))  # paper Eq. 1-2


def fit_scan_context(hist, models: PixelModels, pl_cps, start: EmitterShape | None = None) -> ScanContext:
    """The scan's context from its pixels (hist (P, N_BINS), their models' normalization, PL in counts/s)."""
    h = np.asarray(hist).reshape(len(models), -1)
    fit = fit_scan_shape(h, models.base, start=start, weight=models.weight)
    for _ in range(STARTSTOP_PASSES if models.mode == "startstop" and models.stop_rate is not None else 0):
        if fit is None or not fit.determined:
            break
        # start-stop: the survival of correlated stops depends on the g2 being fitted (section 1.2): refit
        # the shape with each pixel's survival from its g2 under the shape of the pass before
        shaped = with_shape(models, fit.shape)
        models = refine_startstop(shaped, estimate_g2(h, shaped)[0])
        fit = fit_scan_shape(h, models.base, start=fit.shape, weight=models.weight)
    shape, note = scan_shape(fit)
    events = float(h.sum())
    if note != NOTE_NONE:
        return ScanContext(shape, note, None, np.nan, np.nan, 0.0, events)
    h_sum, b_sum = context_sums(h, models.base, models.weight)
    # the summed normalization, known from the singles: one number where every bin's is the same (all pairs)
    flat = b_sum is not None and np.allclose(b_sum, np.ravel(b_sum)[0], rtol=1e-12)
    zero_base = float(np.ravel(b_sum)[0]) if flat else None
    zd = fit_zero_delay(h_sum, zero_base, shape)
    used = zd.offset_s if abs(zd.offset_s) > OFFSET_SIGMAS * zd.offset_std_s else 0.0
    local = fit_local_shapes(h, models.base, pl_cps, models.weight)
    local = local if local is not None and local.local else None  # one shape: `shape` says it all
    return ScanContext(shape, note, local, zd.offset_s, zd.offset_std_s, used, events)


def with_context(models: PixelModels, context: ScanContext, pl_cps, hist=None) -> PixelModels:
    """`models` with each pixel's kernel from the scan's context: the pump from its PL, or with `hist`
    (P, N_BINS) fitted on its own histogram where it has enough events (`LocalShapes.fit_pumps`)."""
    k12 = None
    ls = context.local
    if hist is not None and ls is not None:
        k12 = ls.fit_pumps(hist, models.base, pl_cps, models.weight)
    return replace(models, kernel=context.kernels(pl_cps, k12))


def scan_models(hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0,
                n_starts=None) -> tuple[PixelModels, ScanContext, np.ndarray]:
    """A whole scan's pixel models as the run-end analysis builds them: each pixel's normalization in its
    histogram mode (free where the singles n_a, n_b, t_acq (s) are None), the scan's context, each pixel's
    pump fitted on its own histogram where it can be; the models, the context and each pixel's PL
    (counts/s; NaN without singles)."""
    h = np.asarray(hist).reshape(-1, N_BINS)
    models = histogram_models(None, len(h), mode, n_a, n_b, t_acq, tac_dead_s, n_starts)
    singles = n_a is not None and n_b is not None and t_acq is not None
    pl = pixel_pl(n_a, n_b, t_acq) if singles else np.full(len(h), np.nan)
    context = fit_scan_context(h, models, pl)
    return with_context(models, context, pl, hist=h), context, pl


def estimate_scan(estimator: G2Estimator, hist, n_a, n_b, t_acq, mode: str = "allpairs", tac_dead_s=0.0,
                  n_starts=None) -> tuple[G2Estimate, ScanContext, np.ndarray]:
    """A whole scan's g2(0) as the run-end analysis and `nvscope g2 estimate` give it (`scan_models`, then
    `estimate_pixels`, the singles required where they are given); the estimate, the context, the PL."""
    models, context, pl = scan_models(hist, n_a, n_b, t_acq, mode, tac_dead_s, n_starts)
    est = estimate_pixels(estimator, hist, models, require_base=n_a is not None)
    return with_shape_note(est, context.note), context, pl


__all__ = ["scan_models", "estimate_scan", "STARTSTOP_PASSES", "OFFSET_SIGMAS", "ScanContext", "pixel_pl", "fit_scan_context", "with_context"]
