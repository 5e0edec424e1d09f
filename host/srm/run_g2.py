"""The on-line g2(0) pipeline of one SRM run: the scan's shape context, the estimates of stored pixel
rows, and the answers to adaptive dwell's partial pixels.

The pieces run beside the host's I/O path (`host.session` schedules them): `estimate` and `answer`
use the shape known now (fast, on the latency-critical worker thread); `learn` adds pixels to the
context and says when a shape refit is due; the refit (`online_g2.refit_shape`, ~0.1 s of scipy)
runs in a worker process and `use_shape` swaps its result in for the estimates that follow. Nothing
here touches the run file: the rows are read and written on the I/O thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from nvscope.models.g2.model import EmitterShape
from nvscope.proto.messages import PartialG2, PartialPixel, Pixel

from .cnn_estimator import file_sha256
from .online_g2 import G2_REASONS, G2Estimate, G2Estimator, RefitRequest, ScanEstimator
from ..store import read_pixels


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
    """Consecutive pixel rows start..start + len of a run: histograms, singles, dwell (s) and the
    monotonic time (s) each arrived at the host (NaN: before this host, e.g. a restart)."""

    start: int
    hist: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    dwell_s: np.ndarray
    t_recv: np.ndarray

    def __len__(self) -> int:
        return len(self.hist)

    @classmethod
    def from_messages(cls, start: int, arrived: list[tuple[Pixel, float]]) -> PixelRows:
        """Rows from stored pixel messages with their arrival times (s, monotonic)."""
        return cls(start, np.stack([m.hist for m, _ in arrived]), np.array([m.n_a for m, _ in arrived]),
                   np.array([m.n_b for m, _ in arrived]), np.array([m.dwell_s for m, _ in arrived]),
                   np.array([t for _, t in arrived]))

    @classmethod
    def from_file(cls, f: h5py.File, start: int, stop: int) -> PixelRows:
        """Rows start..stop read from an open run file (arrival unknown: NaN)."""
        px = read_pixels(f, start, stop)
        return cls(start, px["hist"], px["n_a"], px["n_b"], px["dwell_s"], np.full(stop - start, np.nan))


class RunG2Pipeline:
    """The shape context of one SRM run and the g2(0) estimates of its pixels and partial pixels."""

    def __init__(self, estimator: G2Estimator):
        self.scan = ScanEstimator(estimator)

    def estimate(self, rows: PixelRows) -> G2Estimate:
        """g2(0) of stored rows with the shape known now (the context is not changed)."""
        return self.scan.query(rows.hist, rows.n_a, rows.n_b, rows.dwell_s)

    def learn(self, rows: PixelRows) -> RefitRequest | None:
        """Add stored rows to the shape context; the shape refit due now, if any (for `use_shape`)."""
        return self.scan.add_context(rows.hist, rows.n_a, rows.n_b, rows.dwell_s)

    def use_shape(self, shape: EmitterShape, request: RefitRequest) -> bool:
        """Estimate with the shape refitted for `request` from now on (unless a later refit is in use)."""
        return self.scan.use_shape(shape, request.events)

    def answer(self, partials: list[PartialPixel]) -> list[PartialG2]:
        """g2(0) and its std of partial pixels with the shape known now (neither added nor stored)."""
        est = self.scan.query(np.stack([p.hist for p in partials]), np.array([p.n_a for p in partials]),
                              np.array([p.n_b for p in partials]), np.array([p.dwell_s for p in partials]))
        return [PartialG2(run_id=p.run_id, seq=p.seq, index=p.index, dwell_s=p.dwell_s,
                          g2=float(g), g2_std=float(s)) for p, g, s in zip(partials, est.g2, est.g2_std)]


__all__ = ["g2_attributes", "file_sha256", "PixelRows", "RunG2Pipeline"]
