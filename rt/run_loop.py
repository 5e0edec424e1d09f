"""What the rig's run loop (rt/rig.py) steps through: a run's plan, and the rule of adaptive dwell.

A plan is the run's steps in order: the raster's pixels of an antibunching scan (`SrmPlan`), or the
coherence curves the host asks for, as its commands arrive (`CoherencePlan`). The loop takes one
step at a time and applies the host's commands between steps (docs/architecture.md).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from nvscope.proto.messages import Coherence, MeasureCoherence, Message, PartialG2, PartialPixel, Pixel

from .coherence import acquire_coherence
from .config import ScanConfig
from .hal import RigDevices
from .kernels.binning import HistogramBinner
from .scan import DWELL_TOLERANCE_S, acquire_pixel, partial_pixel, raster
from .state import StateError

log = logging.getLogger(__name__)


class Plan(Protocol):
    """A run's steps: the loop takes a step when one is `ready`, and the run completes when `done`."""

    @property
    def ready(self) -> bool:
        """A step can be taken now."""
        ...

    @property
    def done(self) -> bool:
        """No step is left, now or later: the run is complete."""
        ...

    def step(self, seq: int) -> Message:
        """Take the next step; returns its data message, numbered `seq`."""
        ...

    def add(self, cmd: MeasureCoherence) -> None:
        """Append a measurement the host asked for; StateError when this plan takes none."""
        ...

    def drop(self) -> list:
        """Forget the steps not taken (the run ends early); returns them."""
        ...


class AdaptiveDwell:
    """Adaptive dwell without waiting for the host.

    After each slice of a pixel but its last, the pixel so far goes out as a `partial_pixel` (`send`)
    and the commands that have arrived are applied (`serve`, a poll of 0 s); the next slice is
    acquired at once. The host's `partial_g2` answers are `take`n as they come: an answer to any
    slice of the pixel being acquired counts (one to an earlier slice had fewer photons, so its
    error is only larger), and the pixel ends at the first slice boundary by which one says that
    its g2(0) error is below `target_g2_std` (a NaN error is not), else at its maximum dwell. An
    answer that lags ends the pixel later (by one slice when it comes within a slice), never holds
    up acquisition; an answer for a pixel that has ended is dropped. A pixel whose partial pixels
    got no answer at all, the first sent more than `reply_timeout_s` s before it ended, counts as
    unanswered (warned once per run; `unanswered` counts them).
    """

    def __init__(self, target_g2_std: float, reply_timeout_s: float, send: Callable[[PartialPixel], bool],
                 serve: Callable[[], bool], clock: Callable[[], float] = time.monotonic):
        self.target_g2_std = target_g2_std
        self.reply_timeout_s = reply_timeout_s
        self.send = send
        """Sends a partial pixel without keeping it; False when no host took it."""
        self.serve = serve
        """Applies the commands that have arrived, without waiting; True when the run is to stop."""
        self.clock = clock
        self.unanswered = 0
        self.pixel: tuple[str, int] | None = None  # (run_id, index) of the pixel being acquired
        self.dwell_s = 0.0  # of its last partial pixel sent
        self.first_sent: float | None = None  # clock time its first partial pixel went to a host
        self.answered = False
        self.enough = False

    def begin(self, run_id: str, index: int) -> None:
        """A new pixel starts: answers for any other pixel are dropped from now on."""
        self.pixel, self.dwell_s, self.first_sent, self.answered, self.enough = (run_id, index), 0.0, None, False, False

    def between_slices(self, partial: PartialPixel) -> bool:
        """After a slice: send the pixel so far, apply what has arrived; True to end the pixel now
        (an answer below the target has come, or the run is to stop)."""
        self.dwell_s = partial.dwell_s
        if self.send(partial) and self.first_sent is None:
            self.first_sent = self.clock()
        stopping = self.serve()
        return stopping or self.enough

    def take(self, answer: PartialG2) -> bool:
        """Take the host's answer; False (dropped) when it is not for a slice of the pixel being acquired."""
        if self.pixel != (answer.run_id, answer.index) or answer.dwell_s > self.dwell_s + DWELL_TOLERANCE_S:
            return False
        self.answered = True
        if answer.g2_std < self.target_g2_std:  # False for NaN
            self.enough = True
        return True

    def end(self) -> None:
        """The pixel is complete: count it if the host left it unanswered."""
        if (not self.answered and self.first_sent is not None
                and self.clock() - self.first_sent > self.reply_timeout_s):
            self.unanswered += 1
            if self.unanswered == 1:
                log.warning("run %s: the host did not answer pixel %d's partial pixels within %.3g s; acquiring "
                            "on without its answers (said once per run)", self.pixel[0], self.pixel[1],
                            self.reply_timeout_s)
        self.pixel = None


class SrmPlan:
    """An antibunching scan: one step per raster point (move, acquire with on-line binning), giving
    its `pixel`; with adaptive dwell, `adaptive` judges the pixel between its slices."""

    def __init__(self, run_id: str, scan: ScanConfig, devices: RigDevices, adaptive: AdaptiveDwell | None = None):
        if scan.adaptive and adaptive is None:
            raise ValueError("adaptive dwell needs a way to ask the host (adaptive=None)")
        self.run_id = run_id
        self.scan = scan
        self.devices = devices
        self.adaptive = adaptive if scan.adaptive else None
        self.points = list(raster(scan))
        self.next = 0
        self.binner = HistogramBinner(scan.histogram_mode, int(round(scan.tac_dead_s * 1e12)))

    @property
    def ready(self) -> bool:
        """A pixel is left."""
        return self.next < len(self.points)

    @property
    def done(self) -> bool:
        """Every pixel is taken."""
        return not self.ready

    def add(self, cmd: MeasureCoherence) -> None:
        """A scan takes no coherence measurements."""
        raise StateError("an srm run takes no measure_coherence")

    def drop(self) -> list:
        """Forget the pixels not acquired (the run ends early); returns their raster points."""
        left, self.next = self.points[self.next:], len(self.points)
        return left

    def step(self, seq: int) -> Pixel:
        """Acquire the next pixel; its message is numbered `seq` (so are its partial pixels)."""
        p, scan, b = self.points[self.next], self.scan, self.binner
        self.next += 1
        self.devices.scanner.move_to(p.x, p.y, p.z)
        if self.adaptive is None:
            dwell = acquire_pixel(self.devices.tagger, b, scan.slice_s, scan.dwell_s)
        else:
            self.adaptive.begin(self.run_id, p.index)
            dwell = acquire_pixel(self.devices.tagger, b, scan.slice_s, scan.max_dwell_s,
                                  lambda t: self.adaptive.between_slices(partial_pixel(self.run_id, seq, p.index, t, b)))
            self.adaptive.end()
        hist = b.hist.astype(np.int64, copy=True)
        return Pixel(run_id=self.run_id, seq=seq, index=p.index, ix=p.ix, iy=p.iy,
                     position=np.array([p.x, p.y, p.z]), dwell_s=dwell,
                     n_a=int(b.n_a), n_b=int(b.n_b), n_events=int(hist.sum()), hist=hist)


class CoherencePlan:
    """A VQNS run: one step per `measure_coherence` the host sends, in order; it has no end of its
    own (the host stops the run)."""

    def __init__(self, run_id: str, devices: RigDevices, repetitions: int):
        if devices.pulser is None or devices.counter is None:
            raise ValueError("this rig has no pulse generator and photon counter for coherence curves")
        self.run_id = run_id
        self.devices = devices
        self.repetitions = repetitions
        self.queue: deque[MeasureCoherence] = deque()

    @property
    def ready(self) -> bool:
        """A measurement waits."""
        return bool(self.queue)

    @property
    def done(self) -> bool:
        """Never: more may be asked for until the host stops the run."""
        return False

    def add(self, cmd: MeasureCoherence) -> None:
        """Queue a measurement the host asked for."""
        self.queue.append(cmd)

    def step(self, seq: int) -> Coherence:
        """Measure the oldest curve asked for."""
        cmd = self.queue.popleft()
        return acquire_coherence(self.devices, self.run_id, seq, cmd.n_pulses, cmd.t, self.repetitions)

    def drop(self) -> list[MeasureCoherence]:
        """Forget the measurements not taken (the run is ending); returns them."""
        left, self.queue = list(self.queue), deque()
        return left
