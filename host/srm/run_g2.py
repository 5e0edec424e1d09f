"""The daemon's on-line g2(0) of one SRM run: every stored pixel estimated and written beside /pixels,
and the answers to adaptive dwell's partial pixels.

The shape context (`online_g2.ScanEstimator`) holds every pixel of the run whose g2 is stored; a host that
reopens a run after a restart rebuilds it from the file, then estimates the pixels that have none.
"""

from __future__ import annotations

import time

import numpy as np

from nvscope.proto.messages import PartialG2, PartialPixel, Pixel

from .online_g2 import G2_REASONS, G2Estimator, ScanEstimator
from ..store import RunStore, read_pixels


def g2_attributes(estimator: G2Estimator) -> dict[str, object]:
    """The run-file attributes that say how the on-line g2 is computed."""
    return {"g2_online_estimator": estimator.name, "g2_reasons": G2_REASONS}


class RunG2:
    """On-line g2(0) of one run's pixels, in the order they are stored."""

    def __init__(self, estimator: G2Estimator, store: RunStore):
        self.store = store
        self.scan = ScanEstimator(estimator)
        done = store.n_g2
        if done:  # a reopened run: the context of the pixels estimated before the restart
            px = read_pixels(store.f, 0, done)
            self.scan.add(px["hist"], px["n_a"], px["n_b"], px["dwell_s"])

    def update(self, arrived: list[tuple[Pixel, float]]) -> int:
        """Estimate and write every stored pixel without a g2: `arrived` holds the pixels stored last
        (message, monotonic arrival time s); older ones are read from the file. Returns how many."""
        start, stop = self.store.n_g2, self.store.n_pixels
        if stop <= start:
            return 0
        arrived = arrived[max(0, len(arrived) - (stop - start)):]
        older = stop - start - len(arrived)
        parts = []
        if older:
            px = read_pixels(self.store.f, start, start + older)
            parts.append((px["hist"], px["n_a"], px["n_b"], px["dwell_s"], np.full(older, np.nan)))
        if arrived:
            parts.append((np.stack([m.hist for m, _ in arrived]), np.array([m.n_a for m, _ in arrived]),
                          np.array([m.n_b for m, _ in arrived]), np.array([m.dwell_s for m, _ in arrived]),
                          np.array([t for _, t in arrived])))
        hist, n_a, n_b, t_acq, t_recv = (np.concatenate(cols) for cols in zip(*parts))
        est = self.scan.add(hist, n_a, n_b, t_acq)
        self.store.add_g2(est.g2, est.g2_std, est.reason, time.monotonic() - t_recv)
        return len(hist)

    def answer(self, partials: list[PartialPixel]) -> list[PartialG2]:
        """g2(0) and its std of partial pixels with the current context (neither added nor stored)."""
        est = self.scan.query(np.stack([p.hist for p in partials]), np.array([p.n_a for p in partials]),
                              np.array([p.n_b for p in partials]), np.array([p.dwell_s for p in partials]))
        return [PartialG2(run_id=p.run_id, seq=p.seq, index=p.index, dwell_s=p.dwell_s,
                          g2=float(g), g2_std=float(s)) for p, g, s in zip(partials, est.g2, est.g2_std)]
