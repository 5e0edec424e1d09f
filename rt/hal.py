"""The devices the rt loop drives, as typed Protocols with their constraints (SI units; docs/architecture.md section 6).

Each capability is a small `typing.Protocol` (as Bluesky's protocols and qudi's interfaces) paired
with a frozen constraints dataclass. `firmware_sim` and the instrument drivers implement them; the
rt loop is handed a `RigDevices` and never asks for a concrete class. `check_devices` is the
conformance check run at start-up: it names the device that does not fit.

What is measured from the devices (a pixel's histogram, a coherence curve with its sigma) is
computed in rt, not in a driver: a driver only moves, counts, tags and plays pulses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from .kernels.pulses import CHANNELS, Pulse, Sequence


class DeviceError(RuntimeError):
    """An instrument did not answer, answered with an error, was asked for something out of range,
    or does not fit the interface it is used for."""


class DeviceTimeout(DeviceError):
    """An instrument did not answer in time: transient (the rig pauses, records it, and retries the step)."""


def _range(name: str, r: tuple[float, float], unit: str) -> None:
    lo, hi = r
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a finite (min, max) in {unit}, got {r!r}")


# --- scanner ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScannerConstraints:
    """Travel range of a 3D scanner in m per axis (min, max), and the settle time (s) after a move."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z_range: tuple[float, float]
    settle_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            _range(name, getattr(self, name), "m")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"settle_s must be >= 0 s, got {self.settle_s!r}")


@runtime_checkable
class Scanner(Protocol):
    """Moves the sample (or the tip) to an absolute 3D position in m."""

    constraints: ScannerConstraints

    def move_to(self, x: float, y: float, z: float) -> None:
        """Move to (x, y, z) in m and return once settled; DeviceError outside `constraints`."""
        ...


# --- time tagger -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeTaggerConstraints:
    """Time tagger: tag resolution (ps), the longest single read (s) and the most tags (both channels
    together) its buffer holds between two reads; more are lost and reported as overflows."""

    resolution_ps: int
    max_read_s: float
    buffer_tags: int = 64_000_000

    def __post_init__(self) -> None:
        if self.resolution_ps < 1 or not (math.isfinite(self.max_read_s) and self.max_read_s > 0):
            raise ValueError("resolution_ps must be >= 1 ps and max_read_s > 0 s")
        if self.buffer_tags < 1:
            raise ValueError(f"buffer_tags must be >= 1, got {self.buffer_tags!r}")


class TagBlock(NamedTuple):
    """What one read of a time-tag stream returns.

    t_a, t_b: sorted int64 ps tags of detector A (channel 0) and B (channel 1) on the tagger's
    continuous clock; t_end: the clock (ps) up to which this read covers, [previous t_end, t_end)
    (the stream's start for the first read); overflows: tags lost in that interval (buffer full).
    """

    t_a: np.ndarray
    t_b: np.ndarray
    t_end: int
    overflows: int


@runtime_checkable
class TimeTagger(Protocol):
    """A two-channel time-tag stream: start it, read what has arrived, stop it."""

    constraints: TimeTaggerConstraints

    def start(self) -> int:
        """Start streaming; returns the clock time (ps) from which the first read covers."""
        ...

    def read(self, duration_s: float) -> TagBlock:
        """Wait until the stream's clock is at least `duration_s` s (<= max_read_s) past the end of
        the previous read, then return everything that has arrived since (a simulator advances its
        clock by exactly `duration_s`; hardware may return a little more)."""
        ...

    def stop(self) -> None:
        """Stop streaming (tags after this are not kept)."""
        ...


# --- microwave source ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MicrowaveConstraints:
    """Microwave source: frequency range in Hz, power range in dBm, and the largest deviation (Hz) of
    its external FM (0: no FM input)."""

    frequency_range: tuple[float, float]
    power_range: tuple[float, float]
    max_fm_deviation_hz: float = 0.0

    def __post_init__(self) -> None:
        _range("frequency_range", self.frequency_range, "Hz")
        _range("power_range", self.power_range, "dBm")
        if not (math.isfinite(self.max_fm_deviation_hz) and self.max_fm_deviation_hz >= 0):
            raise ValueError(f"max_fm_deviation_hz must be >= 0 Hz, got {self.max_fm_deviation_hz!r}")


@runtime_checkable
class MicrowaveSource(Protocol):
    """A CW microwave source (the NV drive, or the dark spins' RF; the pulse generator gates it).

    Its external FM input is driven by the pulse generator's `mw_fm` channel: while `mw_fm` is high
    the output sits at frequency + deviation, while low at frequency - deviation (the lock's dither,
    docs/physics.md section 2.4); deviation 0 switches FM off."""

    constraints: MicrowaveConstraints

    def set_frequency(self, frequency_hz: float) -> None:
        """Set the output frequency in Hz; DeviceError outside `constraints`."""
        ...

    def set_power(self, power_dbm: float) -> None:
        """Set the output power in dBm; DeviceError outside `constraints`."""
        ...

    def set_output(self, on: bool) -> None:
        """Switch the output on or off."""
        ...

    def set_fm_deviation(self, deviation_hz: float) -> None:
        """Set the external FM deviation in Hz (0: FM off); DeviceError above `max_fm_deviation_hz`."""
        ...


# --- photon counter --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhotonCounterConstraints:
    """Photon counter: the longest ungated count (s)."""

    max_count_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_count_s) and self.max_count_s > 0):
            raise ValueError(f"max_count_s must be > 0 s, got {self.max_count_s!r}")


class GateCounts(NamedTuple):
    """Photons counted in the signal gate and in the reference gate since the counter was armed."""

    signal: int
    reference: int


@runtime_checkable
class PhotonCounter(Protocol):
    """Counts photons, ungated or in two gates (opened by the pulse generator's `gate` and
    `gate_ref` channels): the pulsed readout's signal and bright reference, or a dithered lock's
    two frequencies."""

    constraints: PhotonCounterConstraints

    def count(self, duration_s: float) -> int:
        """Photons counted during `duration_s` s (ungated)."""
        ...

    def arm(self) -> None:
        """Zero both gate counters and count the gates from now on."""
        ...

    def gated_counts(self) -> GateCounts:
        """The photons counted in each gate since `arm()`."""
        ...


# --- pulse generator -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PulseGeneratorConstraints:
    """Pulse generator: its channels, timing grid (s; 0: any time), shortest pulse (s; 0: ideal
    zero-length pulses allowed), shortest gap between two pulses of a channel (s), longest
    sequence (s) and most repetitions of one play."""

    channels: tuple[str, ...] = CHANNELS
    resolution_s: float = 0.0
    min_pulse_s: float = 0.0
    min_gap_s: float = 0.0
    max_length_s: float = 1e-3
    max_repetitions: int = 2**31 - 1

    def check(self, sequence: Sequence) -> None:
        """DeviceError (one line) naming what of `sequence` this generator cannot play."""
        if not (math.isfinite(sequence.length_s) and 0 < sequence.length_s <= self.max_length_s):
            raise DeviceError(f"pulse generator: a sequence of {sequence.length_s:.4g} s is outside "
                              f"(0, {self.max_length_s:.4g}] s")
        last_end: dict[str, float] = {}
        for p in sorted(sequence.pulses, key=lambda p: (p.channel, p.start_s)):
            where = f"pulse generator: {p.channel} pulse at {p.start_s:.4g} s"
            if p.channel not in self.channels:
                raise DeviceError(f"{where}: no channel {p.channel!r} (channels: {', '.join(self.channels)})")
            if not (p.start_s >= 0 and p.duration_s >= 0 and p.end_s <= sequence.length_s):
                raise DeviceError(f"{where}: lies outside the sequence [0, {sequence.length_s:.4g}] s")
            if p.duration_s < self.min_pulse_s:
                raise DeviceError(f"{where}: {p.duration_s:.3g} s is shorter than the shortest pulse "
                                  f"({self.min_pulse_s:.3g} s)")
            if p.channel in last_end and p.start_s - last_end[p.channel] < self.min_gap_s - 1e-15:
                raise DeviceError(f"{where}: closer than {self.min_gap_s:.3g} s to the previous pulse")
            if self.resolution_s > 0:
                for v in (p.start_s, p.duration_s):
                    if abs(v / self.resolution_s - round(v / self.resolution_s)) > 1e-6:
                        raise DeviceError(f"{where}: {v:.6g} s is not on the {self.resolution_s:.3g} s grid")
            last_end[p.channel] = p.end_s


@runtime_checkable
class PulseGenerator(Protocol):
    """Plays a sequence of channel pulses (laser, mw, mw_fm, rf, gate, gate_ref) N times."""

    constraints: PulseGeneratorConstraints

    def load(self, sequence: Sequence) -> None:
        """Load one repetition; DeviceError (nothing loaded) when `constraints` forbid it."""
        ...

    def play(self, repetitions: int) -> None:
        """Play the loaded sequence `repetitions` times back to back; returns when done."""
        ...


# --- the rig's devices and their conformance check -------------------------------------------------

@dataclass
class RigDevices:
    """The rig's instruments, handed to the rt loop: a 3D scanner and a two-channel time tagger
    (antibunching scans); a microwave source, a photon counter and a pulse generator (coherence
    curves, the lock), and an RF source for the dark spins (NV-MRI DEER); None when the rig has none."""

    scanner: Scanner
    tagger: TimeTagger
    microwave: MicrowaveSource | None = None
    counter: PhotonCounter | None = None
    pulser: PulseGenerator | None = None
    rf: MicrowaveSource | None = None
    truth: dict = field(default_factory=dict)
    """What a simulated rig knows that a real one cannot (e.g. the true noise spectrum), recorded
    in each run's configuration so the analysis can compare; empty on hardware."""


DEVICE_INTERFACES: dict[str, tuple[type, type, bool]] = {
    "scanner": (Scanner, ScannerConstraints, True),
    "tagger": (TimeTagger, TimeTaggerConstraints, True),
    "microwave": (MicrowaveSource, MicrowaveConstraints, False),
    "counter": (PhotonCounter, PhotonCounterConstraints, False),
    "pulser": (PulseGenerator, PulseGeneratorConstraints, False),
    "rf": (MicrowaveSource, MicrowaveConstraints, False),
}
"""Each RigDevices field: (its Protocol, its constraints class, required)."""


def check_device(name: str, device: object) -> None:
    """DeviceError 'devices.<name>: <Class> lacks read()' when `device` does not fit its Protocol."""
    protocol, constraints, _ = DEVICE_INTERFACES[name]
    cls = type(device).__name__
    members = sorted(set(getattr(protocol, "__annotations__", {}))
                     | {m for m in vars(protocol) if not m.startswith("_")})
    for member in members:
        value = getattr(device, member, None)
        if value is None:
            raise DeviceError(f"devices.{name}: {cls} lacks {member}{'' if member == 'constraints' else '()'}")
        if member != "constraints" and not callable(value):
            raise DeviceError(f"devices.{name}: {cls}.{member} is not callable")
    if not isinstance(device.constraints, constraints):
        raise DeviceError(f"devices.{name}: {cls}.constraints is a {type(device.constraints).__name__}, "
                          f"not {constraints.__name__}")
    if not isinstance(device, protocol):  # pragma: no cover (the member checks above are the same test)
        raise DeviceError(f"devices.{name}: {cls} is not a {protocol.__name__}")


def check_devices(devices: RigDevices) -> None:
    """Conformance check at start-up: every device fits its Protocol and constraints; DeviceError names
    the first that does not ('devices.tagger: SimFoo lacks read()'), or a required one that is missing."""
    for name, (_, _, required) in DEVICE_INTERFACES.items():
        device = getattr(devices, name)
        if device is None:
            if required:
                raise DeviceError(f"devices.{name}: missing (the rig needs one)")
            continue
        check_device(name, device)
    if (devices.counter is None) != (devices.pulser is None):
        raise DeviceError("devices.counter, devices.pulser: a pulsed readout needs both a photon counter and a "
                          "pulse generator")


__all__ = ["DeviceError", "DeviceTimeout", "ScannerConstraints", "Scanner", "TimeTaggerConstraints", "TagBlock", "TimeTagger",
           "MicrowaveConstraints", "MicrowaveSource", "PhotonCounterConstraints", "GateCounts", "PhotonCounter",
           "PulseGeneratorConstraints", "PulseGenerator", "Pulse", "Sequence", "CHANNELS", "RigDevices",
           "DEVICE_INTERFACES", "check_device", "check_devices"]
