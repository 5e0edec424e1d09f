"""What the rig's run loop (rt/rig.py) steps through: a run's plan, and the rule of adaptive dwell.

A plan is the run's steps in order: the raster's pixels of an antibunching scan (`SrmPlan`), the
coherence curves the host asks for, as its commands arrive (`CoherencePlan`), or the tip positions of
an NV-MRI run (`rt/mri.py` `MriPlan`). The loop takes one step at a time and applies the host's
commands between steps (docs/architecture.md section 5).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from nvscope.proto.messages import Coherence, MeasureCoherence, Message, PartialG2, PartialPixel, Pixel

from .coherence import acquire_coherence
from .config import CoherenceConfig, ScanConfig
from .hal import RigDevices
from .scan import DWELL_TOLERANCE_S, acquire_pixel, histogram_fields, partial_pixel, raster, scan_binner
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

    def step(self, seq: int) -> Message | tuple[Message, ...]:
        """Take the next step; returns its data message numbered `seq`, or its messages numbered from
        `seq` on (an NV-MRI DEER pixel: lock, then deer)."""
        ...

    def add(self, cmd: MeasureCoherence) -> None:
        """Append a measurement the host asked for; StateError when this plan takes none."""
        ...

    def drop(self) -> list:
        """Forget the steps not taken (the run ends early); returns them."""
        ...


class AdaptiveDwell:
    """Adaptive dwell that does not wait for a host that answers within a slice, and that decides on
    an error predicted from the pixel's rate, never on its g2(0) estimate.

    After each slice of a pixel but its last, the pixel so far goes out as a `partial_pixel` (`send`)
    and the commands that have arrived are applied (`serve(0)`); the next slice is acquired at once.
    The host's `partial_g2` answers are `take`n as they come. Each carries `predicted_std`: the
    g2(0) std that the pixel's histogram model (its singles normalization and the scan's shape) gives
    at the dwell answered, from the pixel's rate alone. Stopping on the pixel's own estimated error
    instead would bias g2(0) low (a pixel whose estimate fluctuates low has a smaller estimated error
    and stops sooner; docs/physics.md section 1.7). An answer to any slice of the pixel being acquired
    counts (one to an earlier slice had fewer photons, so its error is only larger). The pixel ends
    at the first slice boundary by which an answer says

    - `predicted_std < target_g2_std`: the target is reached (counted in `reached`), or
    - `predicted_std * sqrt(dwell_s / max_dwell_s) > target_g2_std`: the error predicted at the
      pixel's maximum dwell (the std falls as 1/sqrt(dwell) at a steady rate) is still above the
      target, so the pixel cannot reach it (background and dim pixels; counted in `given_up`),

    else at its maximum dwell. A NaN `predicted_std` (no prediction yet) says neither: acquire on. A
    host that answers within a slice is never waited for, and the pixel ends one slice after the
    slice whose answer first decided. The rig stays at most one slice ahead of the answers: when the
    answer to the slice before the one just sent has not come, it waits for it, at most
    `reply_timeout_s` s per pixel in all; a pixel that used that up (counted in `unanswered`, warned
    once per run) is not waited for again. An answer for a pixel that has ended is dropped.
    """

    MAX_AHEAD = 1
    """Partial pixels of a pixel that may be unanswered when the next slice starts, beyond the one just sent."""

    def __init__(self, target_g2_std: float, reply_timeout_s: float, send: Callable[[PartialPixel], bool],
                 serve: Callable[[int], bool], clock: Callable[[], float] = time.monotonic):
        self.target_g2_std = target_g2_std
        self.reply_timeout_s = reply_timeout_s
        self.send = send
        """Sends a partial pixel without keeping it; False when no host took it."""
        self.serve = serve
        """Applies the commands that arrive within a timeout (ms); True when the run is to stop."""
        self.clock = clock
        self.unanswered = 0
        self.reached = 0
        """Pixels of this run that ended early because the predicted error reached the target."""
        self.given_up = 0
        """Pixels of this run that ended early because they could not reach the target within their maximum dwell."""
        self.pixel: tuple[str, int] | None = None  # (run_id, index) of the pixel being acquired
        self.max_dwell_s = math.inf  # of the pixel being acquired
        self.dwell_s = 0.0  # of its last partial pixel sent
        self.asked: list[float] = []  # dwell (s) of its partial pixels that a host took
        self.answered_s = 0.0  # the longest dwell (s) of theirs answered
        self.wait_left_s = 0.0  # of its waiting budget
        self.enough = False
        self.verdict = ""  # why the pixel being acquired is to end: "reached", "given up" ("": not yet)

    def begin(self, run_id: str, index: int, max_dwell_s: float = math.inf) -> None:
        """A new pixel starts, to be acquired for at most `max_dwell_s` s: answers for any other pixel
        are dropped from now on."""
        self.pixel, self.dwell_s, self.asked, self.answered_s = (run_id, index), 0.0, [], 0.0
        self.wait_left_s, self.enough, self.verdict, self.max_dwell_s = self.reply_timeout_s, False, "", max_dwell_s

    def between_slices(self, partial: PartialPixel) -> bool:
        """After a slice: send the pixel so far, apply what has arrived (waiting only while more than
        one slice ahead of the answers); True to end the pixel now (an answer has said that the target
        is reached or out of reach, or the run is to stop)."""
        self.dwell_s = partial.dwell_s
        if self.send(partial):
            self.asked.append(partial.dwell_s)
        stopping = self.serve(0)
        while not (stopping or self.enough) and self._ahead() > self.MAX_AHEAD and self.wait_left_s > 0:
            t0 = self.clock()
            stopping = self.serve(max(1, math.ceil(self.wait_left_s * 1000)))
            self.wait_left_s -= self.clock() - t0
            if self.wait_left_s <= 0 and self._ahead() > self.MAX_AHEAD:
                self._gave_up()
        return stopping or self.enough

    def _ahead(self) -> int:
        """Partial pixels of this pixel that a host took and that no answer covers yet."""
        return sum(d > self.answered_s + DWELL_TOLERANCE_S for d in self.asked)

    def _gave_up(self) -> None:
        self.unanswered += 1
        if self.unanswered == 1:
            log.warning("run %s: the host did not answer pixel %d's partial pixels within %.3g s; acquiring on "
                        "without waiting for it at this pixel (said once per run)", self.pixel[0], self.pixel[1],
                        self.reply_timeout_s)

    def take(self, answer: PartialG2) -> bool:
        """Take the host's answer; False (dropped) when it is not for a slice of the pixel being acquired."""
        if self.pixel != (answer.run_id, answer.index) or answer.dwell_s > self.dwell_s + DWELL_TOLERANCE_S:
            return False
        self.answered_s = max(self.answered_s, answer.dwell_s)
        if self.enough:
            return True
        predicted = answer.predicted_std  # never answer.g2_std: that one follows the estimate
        if predicted < self.target_g2_std:  # False for NaN
            self.enough, self.verdict = True, "reached"
        elif predicted * math.sqrt(answer.dwell_s / self.max_dwell_s) > self.target_g2_std:  # False for NaN
            self.enough, self.verdict = True, "given up"
        return True

    def end(self) -> None:
        """The pixel is complete: answers for it are dropped from now on; counted if it ended early."""
        self.reached += self.verdict == "reached"
        self.given_up += self.verdict == "given up"
        self.pixel, self.verdict = None, ""

    def tally(self, run_id: str, n_pixels: int) -> str:
        """One line on how the run's `n_pixels` adaptive pixels ended."""
        return (f"run {run_id}: adaptive dwell (target g2(0) error {self.target_g2_std:g}): of {n_pixels} pixels, "
                f"{self.reached} reached the target, {self.given_up} were given up (the error predicted at "
                f"their maximum dwell above the target), {n_pixels - self.reached - self.given_up} ran to "
                f"their maximum dwell; {self.unanswered} left unanswered by the host")


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
        self.lost_tags = 0  # tags the tagger lost in this run so far
        self.binner = scan_binner(scan)
        self.tallied = False  # adaptive dwell's tally of the run logged

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
        self._log_tally()  # of the pixels taken, before they are forgotten
        left, self.next = self.points[self.next:], len(self.points)
        return left

    def _log_tally(self) -> None:
        """Log once, as the run ends, how its adaptive pixels ended (reached, given up, at maximum)."""
        if self.adaptive is not None and not self.tallied:
            self.tallied = True
            log.info("%s", self.adaptive.tally(self.run_id, self.next))

    def step(self, seq: int) -> Pixel:
        """Acquire the next pixel; its message is numbered `seq` (so are its partial pixels)."""
        p, scan, b = self.points[self.next], self.scan, self.binner
        self.next += 1
        self.devices.scanner.move_to(p.x, p.y, p.z)
        if self.adaptive is None:
            got = acquire_pixel(self.devices.tagger, b, scan.slice_s, scan.dwell_s)
        else:
            self.adaptive.begin(self.run_id, p.index, scan.max_dwell_s)
            got = acquire_pixel(self.devices.tagger, b, scan.slice_s, scan.max_dwell_s,
                                lambda t: self.adaptive.between_slices(partial_pixel(self.run_id, seq, p.index, t, b)))
            self.adaptive.end()
        if got.lost_tags and not self.lost_tags:
            log.warning("run %s: the time tagger lost %d tags at pixel %d (a full buffer; each pixel's "
                        "loss is in pixels/lost_tags; said once per run)", self.run_id, got.lost_tags, p.index)
        self.lost_tags += got.lost_tags
        hist = b.hist.astype(np.int64, copy=True)
        if self.done:
            self._log_tally()
        return Pixel(run_id=self.run_id, seq=seq, index=p.index, ix=p.ix, iy=p.iy,
                     position=np.array([p.x, p.y, p.z]), dwell_s=got.dwell_s,
                     n_a=int(b.n_a), n_b=int(b.n_b), n_events=int(hist.sum()), hist=hist, lost_tags=got.lost_tags,
                     **histogram_fields(b))


class CoherencePlan:
    """A VQNS run: one step per `measure_coherence` the host sends, in order; it has no end of its
    own (the host stops the run)."""

    def __init__(self, run_id: str, devices: RigDevices, coherence: CoherenceConfig = CoherenceConfig()):
        if devices.pulser is None or devices.counter is None:
            raise ValueError("this rig has no pulse generator and photon counter for coherence curves")
        self.run_id = run_id
        self.devices = devices
        self.cfg = coherence
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
        c = self.cfg
        return acquire_coherence(self.devices, self.run_id, seq, cmd.n_pulses, cmd.t, c.repetitions, c.timing,
                                 dark_repetitions=c.dark_repetitions, block_s=c.block_s)

    def drop(self) -> list[MeasureCoherence]:
        """Forget the measurements not taken (the run is ending); returns them."""
        left, self.queue = list(self.queue), deque()
        return left
