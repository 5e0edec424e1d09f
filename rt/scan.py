"""The per-pixel loop of an antibunching scan: raster step, acquire time tags, bin on line, send."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from nvscope.proto.messages import PartialPixel, Pixel

from .kernels.binning import HistogramBinner
from .config import ScanConfig
from .hal import PulsedQubit, Scanner, TimeTagger


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


def acquire_tags(tagger: TimeTagger, binner: HistogramBinner, duration_s: float) -> None:
    """Acquire `duration_s` s of time tags in reads as long as the tagger allows, binning each on line."""
    left = duration_s
    while left > DWELL_TOLERANCE_S:
        duration = min(left, tagger.constraints.max_read_s)
        t_a, t_b, t_end = tagger.read_tags(duration)
        binner.add(t_a, t_b, t_end)
        left -= duration


def _never(_: float) -> bool:
    return False


def acquire_pixel(tagger: TimeTagger, binner: HistogramBinner, slice_s: float, max_dwell_s: float,
                  enough: Callable[[float], bool] = _never) -> float:
    """Acquire slices of `slice_s` s, binning each on line, until `enough(dwell so far, s)` says so or
    `max_dwell_s` s are acquired (the last slice is cut to fit); returns the dwell (s), `max_dwell_s`
    exactly when it ran to the end. `enough` is not asked after the last slice."""
    binner.reset()
    elapsed = 0.0
    while max_dwell_s - elapsed > DWELL_TOLERANCE_S:
        duration = min(slice_s, max_dwell_s - elapsed)
        acquire_tags(tagger, binner, duration)
        elapsed += duration
        if max_dwell_s - elapsed > DWELL_TOLERANCE_S and enough(elapsed):
            binner.finish()
            return elapsed
    binner.finish()
    return max_dwell_s


def partial_pixel(run_id: str, seq: int, index: int, dwell_s: float, binner: HistogramBinner) -> PartialPixel:
    """The pixel acquired so far (`dwell_s` s), for the host to judge (adaptive dwell)."""
    hist = binner.hist.astype(np.int64, copy=True)
    return PartialPixel(run_id=run_id, seq=seq, index=index, dwell_s=dwell_s, n_a=int(binner.n_a),
                        n_b=int(binner.n_b), n_events=int(hist.sum()), hist=hist)


@dataclass
class RigDevices:
    """The rig's instruments: a scanner and a two-channel time tagger (antibunching scans) and a
    pulsed qubit readout (coherence curves; None when the rig has none)."""

    scanner: Scanner
    tagger: TimeTagger
    qubit: PulsedQubit | None = None
    truth: dict = field(default_factory=dict)
    """What a simulated rig knows that a real one cannot (e.g. the true noise spectrum), recorded
    in each run's configuration so the analysis can compare; empty on hardware."""


def srm_scan(run_id: str, scan: ScanConfig, devices: RigDevices, first_seq: int,
             send: Callable[[Pixel], None], keep_going: Callable[[], bool],
             enough: Callable[[PartialPixel], bool] | None = None) -> tuple[int, int]:
    """Scan every pixel, sending one `pixel` message each; returns (pixels done, next seq).

    `keep_going` is asked before every pixel (it serves the host's commands and says whether to go on).
    With adaptive dwell on, `enough` is asked after every slice of a pixel but its last, with the
    pixel so far, whether to move on (it asks the host).
    """
    if scan.adaptive and enough is None:
        raise ValueError("adaptive dwell needs a way to ask the host (enough=None)")
    binner = HistogramBinner(scan.histogram_mode, int(round(scan.tac_dead_s * 1e12)))
    seq, done = first_seq, 0
    for p in raster(scan):
        if not keep_going():
            break
        devices.scanner.move_to(p.x, p.y, p.z)
        if scan.adaptive:
            dwell = acquire_pixel(devices.tagger, binner, scan.slice_s, scan.max_dwell_s,
                                  lambda t: enough(partial_pixel(run_id, seq, p.index, t, binner)))
        else:
            dwell = acquire_pixel(devices.tagger, binner, scan.slice_s, scan.dwell_s)
        send(Pixel(run_id=run_id, seq=seq, index=p.index, ix=p.ix, iy=p.iy,
                   position=np.array([p.x, p.y, p.z]), dwell_s=dwell,
                   n_a=int(binner.n_a), n_b=int(binner.n_b), n_events=int(binner.hist.sum()),
                   hist=binner.hist.astype(np.int64, copy=True)))
        seq += 1
        done += 1
    return done, seq
