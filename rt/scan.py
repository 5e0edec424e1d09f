"""The per-pixel loop of an antibunching scan: raster step, acquire time tags, bin on line, send."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nvscope.proto.messages import PartialPixel

from .kernels.binning import HistogramBinner
from .config import ScanConfig
from .hal import TimeTagger

@dataclass(frozen=True)
class RasterPoint:
    """One pixel of a raster: its running index, grid indices and position (m)."""

    index: int
    ix: int
    iy: int
    x: float
    y: float
    z: float


def raster(scan: ScanConfig) -> Iterator[RasterPoint]:
    """Row-by-row raster over the nx x ny grid (every row scanned in +x, so rows are comparable)."""
    for iy in range(scan.ny):
        for ix in range(scan.nx):
            yield RasterPoint(iy * scan.nx + ix, ix, iy,
                              scan.x0 + ix * scan.step, scan.y0 + iy * scan.step, scan.z)


DWELL_TOLERANCE_S = 1e-9
"""Dwell times closer than this (s) count as equal (sums of slices are not exact in floating point)."""

_PS_PER_S = 1e12


def _never(_: float) -> bool:
    return False


@dataclass(frozen=True)
class PixelAcquisition:
    """What one pixel's acquisition took: its dwell (s, from the tagger's clock) and the tags the
    tagger lost to a full buffer (the histogram lacks them)."""

    dwell_s: float
    lost_tags: int


def acquire_pixel(tagger: TimeTagger, binner: HistogramBinner, slice_s: float, max_dwell_s: float,
                  enough: Callable[[float], bool] = _never) -> PixelAcquisition:
    """Stream the tagger in slices of `slice_s` s, binning each read on line, until `enough(dwell so
    far, s)` says so or `max_dwell_s` s are acquired (the last slice is cut to fit). The dwell is the
    tagger's clock (t_end of the last read - the stream's start); `enough` is not asked after the
    last slice; reads are at most the tagger's `max_read_s`."""
    binner.reset()
    max_read_ps = int(tagger.constraints.max_read_s * _PS_PER_S)
    slice_ps = max(int(round(slice_s * _PS_PER_S)), 1)
    t_start = tagger.start()
    target = t_start + int(round(max_dwell_s * _PS_PER_S))
    t_now, lost = t_start, 0
    try:
        while t_now < target:
            slice_end = min(t_now + slice_ps, target)
            while t_now < slice_end:
                block = tagger.read(min(slice_end - t_now, max_read_ps) / _PS_PER_S)
                binner.add(block.t_a, block.t_b, block.t_end)
                t_now, lost = int(block.t_end), lost + int(block.overflows)
            if t_now < target and enough((t_now - t_start) / _PS_PER_S):
                break
    finally:
        tagger.stop()
        binner.finish()
    return PixelAcquisition((t_now - t_start) / _PS_PER_S, lost)


def scan_binner(scan: ScanConfig) -> HistogramBinner:
    """The on-line binner of a scan: its histogram mode, the converter's dead time and the channels'
    delay difference (tau = (t_B - delay_b) - (t_A - delay_a), docs/physics.md section 1.10), in ps."""
    delay_ps = round((scan.delay_b_s - scan.delay_a_s) * _PS_PER_S)
    return HistogramBinner(scan.histogram_mode, int(round(scan.tac_dead_s * _PS_PER_S)), delay_ps)


def histogram_fields(binner: HistogramBinner) -> dict[str, object]:
    """How a (partial) pixel's histogram was acquired, for its message: the mode, the converter's
    dead time (s) and the starts it accepted (-1: not counted, allpairs)."""
    startstop = binner.mode == "startstop"
    return {"histogram_mode": binner.mode, "tac_dead_s": binner.tac_dead_ps / _PS_PER_S if startstop else 0.0,
            "n_starts": int(binner.n_starts)}


def partial_pixel(run_id: str, seq: int, index: int, dwell_s: float, binner: HistogramBinner) -> PartialPixel:
    """The pixel acquired so far (`dwell_s` s), for the host to judge (adaptive dwell)."""
    hist = binner.hist.astype(np.int64, copy=True)
    return PartialPixel(run_id=run_id, seq=seq, index=index, dwell_s=dwell_s, n_a=int(binner.n_a),
                        n_b=int(binner.n_b), n_events=int(hist.sum()), hist=hist, **histogram_fields(binner))
