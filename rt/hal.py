"""Device capabilities the rt loop asks for, as typed Protocols with their constraints (SI units).

`firmware_sim` and the VISA drivers implement these; the rt loop is handed objects that
satisfy them and never asks for a concrete class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class DeviceError(RuntimeError):
    """An instrument did not answer, answered with an error, or was asked for something out of range."""


@dataclass(frozen=True)
class ScannerConstraints:
    """Travel range of a scanner in metres, per axis (min, max)."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z_range: tuple[float, float]


@runtime_checkable
class Scanner(Protocol):
    """Moves the sample (or the tip) to an absolute position in metres."""

    constraints: ScannerConstraints

    def move_to(self, x: float, y: float, z: float) -> None:
        """Move to (x, y, z) in m; raises DeviceError outside `constraints`."""
        ...


@dataclass(frozen=True)
class TimeTaggerConstraints:
    """Time tagger: tag resolution in ps and the longest single read in s."""

    resolution_ps: int
    max_read_s: float


@runtime_checkable
class TimeTagger(Protocol):
    """Returns photon time tags of detector A (channel 0) and B (channel 1)."""

    constraints: TimeTaggerConstraints

    def read_tags(self, duration_s: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Acquire for `duration_s` s; return (t_a, t_b, t_end): sorted int64 ps tags of A and B
        on the tagger's continuous clock, and the clock time (ps) at which this read ended.

        Consecutive reads join seamlessly: read k covers [t_end(k-1), t_end(k)).
        """
        ...


@dataclass(frozen=True)
class MicrowaveConstraints:
    """Microwave source: frequency range in Hz and power range in dBm."""

    frequency_range: tuple[float, float]
    power_range: tuple[float, float]


@runtime_checkable
class MicrowaveSource(Protocol):
    """A CW microwave source."""

    constraints: MicrowaveConstraints

    def set_frequency(self, frequency_hz: float) -> None:
        """Set the output frequency in Hz."""
        ...


@runtime_checkable
class PhotonCounter(Protocol):
    """Counts photons in a gate."""

    def count(self, duration_s: float) -> int:
        """Photon counts collected during `duration_s` s."""
        ...


@runtime_checkable
class PulsedQubit(Protocol):
    """Plays pi-pulse sequences on the NV spin and reads out its coherence optically."""

    def measure_coherence(self, pulse_times: list[np.ndarray], t: np.ndarray,
                          repetitions: int) -> tuple[np.ndarray, np.ndarray]:
        """Coherence and its one-sigma error at each total time t[i] (s), with the pi pulses of
        point i at pulse_times[i] (s from the first pi/2 pulse), averaged over `repetitions` shots."""
        ...
