"""Every message between rt and host, each declared once as a frozen dataclass with its schema version.

Arrays are declared with `Array(dtype, shape)`, where -1 in the shape is any length; the codec
(`nvscope.proto.codec`) derives packing and validation from these declarations, and calls each
message's `check()` for what a declaration cannot say (a pixel's `n_events` is its histogram's sum);
`nvscope.proto.records` derives the run file's rows from them.
Every message carries the run id and a sequence number: data messages (rt -> host) are numbered
per run from 0; commands (host -> rt) by the host's own counter.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, ClassVar

import numpy as np

from .histogram import HISTOGRAM_MODES, N_BINS


class ProtocolError(ValueError):
    """A frame that is not a valid nvscope message: malformed, foreign, unknown kind, wrong version,
    wrong field type, dtype or shape, truncated array, or values that contradict each other."""


@dataclass(frozen=True)
class Array:
    """Declared dtype and shape of an array field (-1: any length on that axis)."""

    dtype: str
    shape: tuple[int, ...]


@cache
def field_specs(cls: type) -> dict[str, object]:
    """Field name -> declared type of a message kind: a Python type, or an `Array` (canonical dtype)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    specs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) is typing.Annotated:
            spec = hint.__metadata__[0]
            specs[f.name] = Array(np.dtype(spec.dtype).str, spec.shape)
        else:
            specs[f.name] = hint
    return specs


def _default_array(dtype: str, n: int = 0):
    return field(default_factory=lambda: np.zeros(n, dtype=dtype))


@dataclass(frozen=True)
class Message:
    """Base of every message kind: the run it belongs to and its sequence number."""

    kind: ClassVar[str] = ""
    schema: ClassVar[int] = 1
    durable: ClassVar[bool] = False  # True: stored by the host and acknowledged

    run_id: str
    seq: int

    def check(self) -> None:
        """Raise ProtocolError, naming the field, where values contradict each other or the physics
        (types, dtypes and shapes are the codec's job); the host calls it once, on decoding."""

    def check_common(self) -> None:
        """What every message must hold, whatever its kind: a run id that is safe as a file name
        (`RUN_ID`)."""
        if not RUN_ID.fullmatch(self.run_id):
            raise ProtocolError(f"{self.kind}.run_id: {self.run_id[:80]!r} is not a run id (letters, digits, "
                                "'_', '-', '.', starting with a letter or digit, at most 128; empty for none)")


RUN_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,127})?")
"""What a run id may be (it names the run's file): no path separators, no leading dot; '' for none."""


# ---------------------------------------------------------------- rt -> host (data)


@dataclass(frozen=True)
class RunStart(Message):
    """A run begins: its kind, the effective configuration, software version and seed."""

    kind: ClassVar[str] = "run_start"
    durable: ClassVar[bool] = True
    run_kind: str = "srm"
    config: dict = field(default_factory=dict)
    version: str = ""
    seed: int = 0
    n_pixels: int = 0
    grid_shape: Annotated[np.ndarray, Array("<i8", (2,))] = field(
        default_factory=lambda: np.zeros(2, dtype="<i8"))

    def check(self) -> None:
        """The configuration must be storable as JSON (the run file keeps it as text)."""
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"run_start.config: not storable as JSON ({exc})") from None


@dataclass(frozen=True)
class Pixel(Message):
    """One scanned pixel: position (m), dwell (s), singles counts and the delay histogram with how it was
    acquired (`histogram_mode`, the converter's dead time and its accepted starts: the histogram's model
    needs them, docs/physics.md section 1)."""

    kind: ClassVar[str] = "pixel"
    schema: ClassVar[int] = 3  # 2: lost_tags; 3: histogram_mode, tac_dead_s, n_starts
    durable: ClassVar[bool] = True
    index: int = 0
    ix: int = 0
    iy: int = 0
    position: Annotated[np.ndarray, Array("<f8", (3,))] = field(
        default_factory=lambda: np.zeros(3))
    dwell_s: float = 0.0
    n_a: int = 0
    n_b: int = 0
    n_events: int = 0
    hist: Annotated[np.ndarray, Array("<i8", (N_BINS,))] = field(
        default_factory=lambda: np.zeros(N_BINS, dtype="<i8"))
    lost_tags: int = 0
    """Tags the time tagger lost to a full buffer during this pixel (its histogram lacks them)."""
    histogram_mode: str = "allpairs"
    """How `hist` was acquired (`histogram.HISTOGRAM_MODES`)."""
    tac_dead_s: float = 0.0
    """startstop: the converter's dead time after a stop, s (0 for allpairs)."""
    n_starts: int = -1
    """startstop: the starts the converter accepted during the pixel; -1: not counted (allpairs)."""

    def check(self) -> None:
        """Dwell > 0 s, singles, bins and lost tags non-negative, `n_events` the sum of `hist`, a known
        histogram mode with its dead time and accepted starts."""
        _check_counts(self)
        if self.lost_tags < 0:
            raise ProtocolError(f"pixel.lost_tags: must be >= 0, got {self.lost_tags}")


@dataclass(frozen=True)
class PartialPixel(Message):
    """A pixel still being acquired (adaptive dwell): its histogram after `dwell_s` s so far.

    `seq` is the sequence number its `pixel` message will have. Not stored, not acknowledged:
    the host answers it with a `partial_g2` and forgets it."""

    kind: ClassVar[str] = "partial_pixel"
    schema: ClassVar[int] = 2  # 2: histogram_mode, tac_dead_s, n_starts
    index: int = 0
    dwell_s: float = 0.0
    n_a: int = 0
    n_b: int = 0
    n_events: int = 0
    hist: Annotated[np.ndarray, Array("<i8", (N_BINS,))] = field(
        default_factory=lambda: np.zeros(N_BINS, dtype="<i8"))
    histogram_mode: str = "allpairs"
    tac_dead_s: float = 0.0
    n_starts: int = -1

    def check(self) -> None:
        """As `Pixel.check`: dwell > 0 s, counts non-negative, `n_events` the sum of `hist`, the mode."""
        _check_counts(self)


def _check_counts(msg: Pixel | PartialPixel) -> None:
    """The checks of a (partial) pixel's dwell (s) and counts."""
    if not (math.isfinite(msg.dwell_s) and msg.dwell_s > 0):
        raise ProtocolError(f"{msg.kind}.dwell_s: {msg.dwell_s!r} s, expected finite and > 0")
    for name in ("n_a", "n_b"):
        if getattr(msg, name) < 0:
            raise ProtocolError(f"{msg.kind}.{name}: {getattr(msg, name)} singles, expected >= 0")
    hist = msg.hist
    if hist.size and hist.min() < 0:
        raise ProtocolError(f"{msg.kind}.hist: negative counts (smallest {hist.min()})")
    # the int64 sum cannot overflow while every bin is below 2**63 / bins; beyond, sum Python ints
    total = int(hist.sum()) if not hist.size or hist.max() < 2**63 // hist.size else sum(hist.tolist())
    if msg.n_events != total:
        raise ProtocolError(f"{msg.kind}.n_events: {msg.n_events}, but the histogram holds {total} events")
    if msg.histogram_mode not in HISTOGRAM_MODES:
        raise ProtocolError(f"{msg.kind}.histogram_mode: {msg.histogram_mode[:40]!r}, expected one of {HISTOGRAM_MODES}")
    if not (math.isfinite(msg.tac_dead_s) and msg.tac_dead_s >= 0):
        raise ProtocolError(f"{msg.kind}.tac_dead_s: {msg.tac_dead_s!r} s, expected finite and >= 0")
    if msg.n_starts < -1 or (msg.histogram_mode == "startstop" and 0 <= msg.n_starts < total):
        raise ProtocolError(f"{msg.kind}.n_starts: {msg.n_starts} accepted starts, expected -1 (not counted) "
                            f"or at least the {total} events binned (each ends one start's conversion)")


@dataclass(frozen=True)
class Coherence(Message):
    """One coherence curve C(t) measured under CPMG-n (n_pulses = 0: FID, 1: spin echo), with the raw
    photon counts it was computed from: per point, `repetitions` shots of the sequence (signal gate:
    `signal_counts`; reference gate, the spin back in ms = 0: `bright_counts`) interleaved with
    `dark_repetitions` shots of the dark reference (one pi pulse: `dark_counts`). `pi_s`, `pi_half_s`:
    the pi and pi/2 pulse durations played (s; 0: ideal zero-length pulses)."""

    kind: ClassVar[str] = "coherence"
    schema: ClassVar[int] = 2  # 2: pi_s, pi_half_s, raw counts, dark_repetitions
    durable: ClassVar[bool] = True
    n_pulses: int = 0
    t: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    coherence: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    sigma: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    repetitions: int = 0
    pi_s: float = 0.0
    pi_half_s: float = 0.0
    signal_counts: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    bright_counts: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    dark_counts: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")
    dark_repetitions: int = 0

    def check(self) -> None:
        """`coherence` and `sigma` (and the raw counts, when sent) have one value per time in `t`;
        pulse durations are finite and >= 0 s."""
        for name in ("coherence", "sigma"):
            if len(getattr(self, name)) != len(self.t):
                raise ProtocolError(f"coherence.{name}: {len(getattr(self, name))} values for {len(self.t)} times")
        for name in ("signal_counts", "bright_counts", "dark_counts"):
            if len(getattr(self, name)) not in (0, len(self.t)):
                raise ProtocolError(f"coherence.{name}: {len(getattr(self, name))} values for {len(self.t)} times")
        for name in ("pi_s", "pi_half_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ProtocolError(f"coherence.{name}: {v!r} s, expected finite and >= 0")


MRI_SCANS: tuple[str, ...] = ("retracted", "psf", "deer")
"""What an NV-MRI tip position belongs to (`Lock.scan`, `Deer.scan` hold the index): the reference with
the tip retracted, the locked-detuning stack (the PSF), or a DEER map."""
LOCK_STATES: tuple[str, ...] = ("locked", "recovered", "lost")
"""A pixel's lock state (`Lock.state` holds the index): locked from the prediction; lost, found again by
the recovery sweep and locked; lost (the dip was not found: its frequency is not to be trusted)."""


@dataclass(frozen=True)
class TipPixel(Message):
    """What every NV-MRI message of one tip position carries: its running number in the run (`index`),
    which scan (index into MRI_SCANS), the plane (or vertical section) of that scan, the pixel's grid
    indices in it (a section: ix along the line, iy the height), and the tip apex (m; x, y from the NV's
    lateral position, z the apex's height above the surface)."""

    index: int = 0
    scan: int = 0
    plane: int = 0
    ix: int = 0
    iy: int = 0
    position: Annotated[np.ndarray, Array("<f8", (3,))] = field(default_factory=lambda: np.zeros(3))

    def check(self) -> None:
        """Indices in range and a finite position."""
        if not 0 <= self.scan < len(MRI_SCANS):
            raise ProtocolError(f"{self.kind}.scan: {self.scan}, expected 0-{len(MRI_SCANS) - 1} "
                                f"({', '.join(MRI_SCANS)})")
        for name in ("index", "plane", "ix", "iy"):
            if getattr(self, name) < 0:
                raise ProtocolError(f"{self.kind}.{name}: {getattr(self, name)}, expected >= 0")
        if not np.all(np.isfinite(self.position)):
            raise ProtocolError(f"{self.kind}.position: not finite")


@dataclass(frozen=True)
class Lock(TipPixel):
    """The NV frequency lock at one tip position of an NV-MRI run (docs/physics.md section 2.4); the tip
    position's fields are `TipPixel`'s (a DEER pixel's `deer` message has the same `index`).
    f_lock_hz: the locked NV frequency (Hz) and f_sigma_hz its shot-noise standard error (Hz);
    state: index into LOCK_STATES; cycles: dither cycles used; photons: photons counted in them."""

    kind: ClassVar[str] = "lock"
    schema: ClassVar[int] = 2  # 2: scan, plane, grid indices, position, sigma, state, photons
    durable: ClassVar[bool] = True
    f_lock_hz: float = 0.0
    f_sigma_hz: float = 0.0
    state: int = 0
    cycles: int = 0
    photons: int = 0

    def check(self) -> None:
        """Indices in range, a finite position and frequency, sigma > 0 (inf when lost), counts >= 0."""
        super().check()
        if not 0 <= self.state < len(LOCK_STATES):
            raise ProtocolError(f"lock.state: {self.state}, expected 0-{len(LOCK_STATES) - 1} "
                                f"({', '.join(LOCK_STATES)})")
        if not (math.isfinite(self.f_lock_hz) and self.f_lock_hz > 0):
            raise ProtocolError(f"lock.f_lock_hz: {self.f_lock_hz!r} Hz, expected finite and > 0")
        if not self.f_sigma_hz > 0:
            raise ProtocolError(f"lock.f_sigma_hz: {self.f_sigma_hz!r} Hz, expected > 0 (inf: unknown)")
        if self.cycles < 0 or self.photons < 0:
            raise ProtocolError(f"lock.cycles, lock.photons: {self.cycles}, {self.photons}, expected >= 0")


@dataclass(frozen=True)
class Deer(TipPixel):
    """A DEER measurement at one tip position of an NV-MRI run (docs/physics.md section 2.5): photons of
    `shots` spin echoes with the RF pi pulse at `f_rf_hz` (n_rf) and of as many without it (n_ref),
    over the echo's total time `tau_s`. Tip fields as in `TipPixel` (the same `index` as its `lock`)."""

    kind: ClassVar[str] = "deer"
    durable: ClassVar[bool] = True
    scan: int = 2
    f_rf_hz: float = 0.0
    tau_s: float = 0.0
    shots: int = 0
    n_rf: int = 0
    n_ref: int = 0

    def check(self) -> None:
        """Indices in range, a finite position, f_rf and tau > 0, shots and photons >= 0."""
        super().check()
        for name in ("f_rf_hz", "tau_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ProtocolError(f"deer.{name}: {v!r}, expected finite and > 0")
        for name in ("shots", "n_rf", "n_ref"):
            if getattr(self, name) < 0:
                raise ProtocolError(f"deer.{name}: {getattr(self, name)}, expected >= 0")


@dataclass(frozen=True)
class RunEnd(Message):
    """A run ends: exit status ('completed', 'stopped', 'failed') and the reason."""

    kind: ClassVar[str] = "run_end"
    durable: ClassVar[bool] = True
    exit_status: str = "completed"
    reason: str = ""
    n_pixels: int = 0


@dataclass(frozen=True)
class Notice(Message):
    """Something the run went through that is not data: an instrument that timed out and the retry
    (`source`: the device's [devices] name; `text`: one line); stored in the run file's /notices."""

    kind: ClassVar[str] = "notice"
    durable: ClassVar[bool] = True
    source: str = ""
    text: str = ""
    retry: int = 0


@dataclass(frozen=True)
class Heartbeat(Message):
    """A daemon is alive (sent both ways, every `link.heartbeat_s`). From rt: `state` of the rig, the
    run in progress (`run_id`, `run_kind`, steps `done` of `planned`; 0 planned: open-ended), `seq` the
    last data sequence number sent (-1: none), `unacked` messages in its journal. From the host:
    `state` = 'host' and `info`, what it reports of itself (stored, duplicates, malformed, out dir)."""

    kind: ClassVar[str] = "heartbeat"
    schema: ClassVar[int] = 2  # 2: run_kind, done, planned, info; sent by the host too
    state: str = "idle"
    unacked: int = 0
    run_kind: str = ""
    done: int = 0
    planned: int = 0
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Refused(Message):
    """rt did not apply a command of the host's (`command`: its kind; `run_id`, `seq`: the command's)
    and says why; `busy_run`/`busy_kind`: the run the rig is running, if any; `later`: the command may
    be accepted later (the rig is busy with a run, or another host controls it for now)."""

    kind: ClassVar[str] = "refused"
    command: str = ""
    reason: str = ""
    busy_run: str = ""
    busy_kind: str = ""
    later: bool = False


@dataclass(frozen=True)
class Status(Message):
    """rt's answer to `status_request`: what the rig is doing (`info`: state, run, progress, journal
    depth, last ack, the host that controls it and what that host last reported; docs/cli.md)."""

    kind: ClassVar[str] = "status"
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- host -> rt (commands)


@dataclass(frozen=True)
class Hello(Message):
    """A host (re)connects: rt replays every message not yet acknowledged."""

    kind: ClassVar[str] = "hello"
    version: str = ""


@dataclass(frozen=True)
class Start(Message):
    """Start a run of the given kind ('srm', ...) under `run_id`."""

    kind: ClassVar[str] = "start"
    run_kind: str = "srm"


@dataclass(frozen=True)
class Stop(Message):
    """Stop the running run at the next pixel boundary. `completed`: the host's plan for the run is done
    (an adaptive loop's stopping rule fired): the run ends `completed`, not `stopped`."""

    kind: ClassVar[str] = "stop"
    schema: ClassVar[int] = 2  # 2: completed
    reason: str = ""
    completed: bool = False


@dataclass(frozen=True)
class MeasureCoherence(Message):
    """Measure a coherence curve under CPMG-n at total times `t` (s)."""

    kind: ClassVar[str] = "measure_coherence"
    n_pulses: int = 0
    t: Annotated[np.ndarray, Array("<f8", (-1,))] = _default_array("<f8")


@dataclass(frozen=True)
class PartialG2(Message):
    """The host's g2(0) and its std for one `partial_pixel` (same run_id, seq, index and dwell_s);
    NaN when the histogram cannot be estimated yet. `predicted_std` is what adaptive dwell decides
    on: the g2(0) std predicted from the pixel's singles rate and the scan's model alone, never from
    the pixel's own estimate (which would bias the stopped pixels); NaN: no prediction yet."""

    kind: ClassVar[str] = "partial_g2"
    schema: ClassVar[int] = 2  # 2: predicted_std
    index: int = 0
    dwell_s: float = 0.0
    g2: float = 0.0
    g2_std: float = 0.0
    predicted_std: float = float("nan")


@dataclass(frozen=True)
class StatusRequest(Message):
    """Any authenticated peer asks the rig what it is doing (answered with `status`; never a command)."""

    kind: ClassVar[str] = "status_request"


@dataclass(frozen=True)
class Ack(Message):
    """The host has durably stored every message of `run_id` up to and including `seq`."""

    kind: ClassVar[str] = "ack"


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (RunStart, Pixel, PartialPixel, Coherence, Lock, Deer, Notice, RunEnd, Heartbeat, Refused, Status,
                Hello, Start, Stop, MeasureCoherence, PartialG2, StatusRequest, Ack)
}
