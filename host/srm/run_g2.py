"""The on-line g2(0) pipeline of one SRM run: the scan's shape context, the estimates of stored pixel
rows, and the answers to adaptive dwell's partial pixels.

The pieces run beside the host's I/O path (`host.session` schedules them): `estimate` and `answer`
use the shape known now (fast, on the latency-critical worker thread); `learn` adds pixels to the
context and says when a refit is due; the refit (`online_g2.refit_shape`, 1-10 s of scipy)
runs in a worker process and `use_shape` swaps its result in for the estimates that follow. Nothing
here touches the run file: the rows are read and written on the I/O thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from nvscope.models.g2.mle import cramer_rao_models
from nvscope.models.g2.model import PixelModels
from nvscope.models.g2.scan_context import ScanContext
from nvscope.proto.messages import PartialG2, PartialPixel, Pixel

from .cnn_estimator import file_sha256
from .online_g2 import G2_REASONS, G2Estimate, G2Estimator, RefitRequest, ScanEstimator
from ..store import acquisition, read_pixels


def g2_attributes(estimator: G2Estimator) -> dict[str, object]:
    """The run-file attributes that say how the on-line g2 is computed: the estimator, the reason
    table and, for an estimator with a model file (the CNN: its `provenance()`), the file's path,
    sha256 and the git commit it was trained at."""
    attrs: dict[str, object] = {"g2_online_estimator": estimator.name, "g2_reasons": G2_REASONS}
    provenance = getattr(estimator, "provenance", None)
    if provenance is not None:
        attrs.update({f"g2_{key}": value for key, value in provenance().items()})
    return attrs


@dataclass
class PixelRows:
    """Consecutive pixel rows start..start + len of a run: histograms, singles, dwell (s), the monotonic
    time (s) each arrived at the host (NaN: before this host, e.g. a restart) and how the histograms
    were acquired (the run's mode; per row the converter's dead time, s, and its accepted starts,
    -1: not counted; docs/physics.md section 1.2)."""

    start: int
    hist: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    dwell_s: np.ndarray
    t_recv: np.ndarray
    mode: str = "allpairs"
    tac_dead_s: np.ndarray | float = 0.0
    n_starts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.hist)

    @property
    def acquisition(self) -> dict[str, object]:
        """The keyword arguments that say how the rows were acquired (`ScanEstimator`'s)."""
        return {"mode": self.mode, "tac_dead_s": self.tac_dead_s, "n_starts": self.n_starts}

    @classmethod
    def from_messages(cls, start: int, arrived: list[tuple[Pixel | PartialPixel, float]]) -> PixelRows:
        """Rows from (partial) pixel messages with their arrival times (s, monotonic)."""
        px = {name: np.array([getattr(m, name) for m, _ in arrived])
              for name in ("n_a", "n_b", "dwell_s", "histogram_mode", "tac_dead_s", "n_starts")}
        px["hist"] = np.stack([m.hist for m, _ in arrived])
        return cls._of(start, px, np.array([t for _, t in arrived], dtype=float))

    @classmethod
    def from_file(cls, f: h5py.File, start: int, stop: int) -> PixelRows:
        """Rows start..stop read from an open run file (arrival unknown: NaN)."""
        return cls._of(start, read_pixels(f, start, stop), np.full(stop - start, np.nan))

    @classmethod
    def _of(cls, start: int, px: dict[str, np.ndarray], t_recv: np.ndarray) -> PixelRows:
        mode, dead, starts = acquisition(px)
        return cls(start, px["hist"], px["n_a"], px["n_b"], px["dwell_s"], t_recv, mode, dead, starts)


class RunG2Pipeline:
    """The shape context of one SRM run and the g2(0) estimates of its pixels and partial pixels."""

    def __init__(self, estimator: G2Estimator):
        self.scan = ScanEstimator(estimator)

    def estimate(self, rows: PixelRows) -> G2Estimate:
        """g2(0) of stored rows with the shape known now (the context is not changed)."""
        return self.scan.query(rows.hist, rows.n_a, rows.n_b, rows.dwell_s, **rows.acquisition)

    def learn(self, rows: PixelRows) -> RefitRequest | None:
        """Add stored rows to the shape context; the shape refit due now, if any (for `use_shape`)."""
        return self.scan.add_context(rows.hist, rows.n_a, rows.n_b, rows.dwell_s, **rows.acquisition)

    def use_shape(self, context: ScanContext | None, request: RefitRequest) -> bool:
        """Estimate with the context refitted for `request` from now on (unless a later refit is in use)."""
        return self.scan.use_shape(context, request.events)

    def answer(self, partials: list[PartialPixel]) -> list[PartialG2]:
        """g2(0) and its std of partial pixels with the shape known now (neither added nor stored), and
        the std adaptive dwell decides on (`predicted_g2_std`: from the singles and the shape alone)."""
        rows = PixelRows.from_messages(0, [(p, np.nan) for p in partials])
        est, models = self.scan.query_models(rows.hist, rows.n_a, rows.n_b, rows.dwell_s, **rows.acquisition)
        predicted = predicted_g2_std(models)
        return [PartialG2(run_id=p.run_id, seq=p.seq, index=p.index, dwell_s=p.dwell_s, g2=float(g), g2_std=float(s),
                          predicted_std=float(e)) for p, g, s, e in zip(partials, est.g2, est.g2_std, predicted)]


REFERENCE_G0 = np.linspace(0.0, 1.0, 11)
"""The g2(0) values the predicted error is evaluated at; the largest is taken (`predicted_g2_std`)."""


def predicted_g2_std(models: PixelModels) -> np.ndarray:
    """(P,) the g2(0) std adaptive dwell decides on: the Cramer-Rao std of each pixel's histogram model
    (its singles normalization and the scan's shape) at the g2(0) in [0, 1] where it is largest; inf
    where the singles give no normalization (base <= 0: a channel without counts), NaN where unknown.

    It never looks at the pixel's histogram: a rule on the pixel's own estimated error stops the
    pixels whose estimate fluctuated low sooner and biases the stopped ones low (docs/physics.md
    section 1.7). Taking the largest std over the physical range (near g2(0) = 0.5 for the NV shape
    in all-pairs mode: 0.210 / sqrt(base), against 0.205 at 0.2 and 0.174 at 0) means a pixel that
    stops has reached the target whatever its g2(0), for at most 5 % more photons than the std at its
    true g2(0) would need anywhere above 0.2 (tests/host/test_adaptive_dwell_bias.py measures it)."""
    with np.errstate(invalid="ignore"):
        crb = np.stack([cramer_rao_models(g, models) for g in REFERENCE_G0])
    worst = np.max(np.where(np.isnan(crb), -np.inf, crb), axis=0)
    base = models.base
    return np.where(base <= 0, np.inf, np.where(np.isfinite(base) & (worst > -np.inf), worst, np.nan))


__all__ = ["g2_attributes", "file_sha256", "PixelRows", "RunG2Pipeline", "predicted_g2_std", "REFERENCE_G0"]
