"""The simulated pulsed instrument: microwave source, pulse generator and photon counter around the
simulated NV spin (`SimQubit`), each implementing its `rt.hal` Protocol.

The pulse generator plays a loaded sequence on the spin; the photons of its `gate` and `gate_ref`
channels go to the photon counter, as the generator's gate outputs drive a real counter's gate
inputs. Playing is not paced: a coherence point of 1e7 shots would otherwise take a minute.
"""

from __future__ import annotations

import numpy as np

from nvscope.rt.hal import (DeviceError, GateCounts, MicrowaveConstraints, PhotonCounterConstraints,
                            PulseGeneratorConstraints)
from nvscope.rt.kernels.pulses import Sequence

from .qubit import SimQubit


class SimMicrowaveSource:
    """A CW microwave source that keeps its settings (the NV's ODMR response comes with NV-MRI)."""

    def __init__(self, constraints: MicrowaveConstraints | None = None):
        self.constraints = constraints or MicrowaveConstraints((9e3, 20e9), (-120.0, 25.0))
        self.frequency_hz = 2.87e9
        self.power_dbm = -120.0
        self.output_on = False

    def set_frequency(self, frequency_hz: float) -> None:
        """Set the output frequency in Hz; DeviceError outside `constraints`."""
        lo, hi = self.constraints.frequency_range
        if not (np.isfinite(frequency_hz) and lo <= frequency_hz <= hi):
            raise DeviceError(f"microwave: {frequency_hz!r} Hz is outside [{lo:.4g}, {hi:.4g}] Hz")
        self.frequency_hz = float(frequency_hz)

    def set_power(self, power_dbm: float) -> None:
        """Set the output power in dBm; DeviceError outside `constraints`."""
        lo, hi = self.constraints.power_range
        if not (np.isfinite(power_dbm) and lo <= power_dbm <= hi):
            raise DeviceError(f"microwave: {power_dbm!r} dBm is outside [{lo}, {hi}] dBm")
        self.power_dbm = float(power_dbm)

    def set_output(self, on: bool) -> None:
        """Switch the output on or off."""
        self.output_on = bool(on)


class SimPhotonCounter:
    """Counts the NV's photons: ungated at the CW rate, or in the two gates the pulse generator opens."""

    def __init__(self, qubit: SimQubit, seed: int = 0, constraints: PhotonCounterConstraints | None = None):
        self.constraints = constraints or PhotonCounterConstraints(max_count_s=10.0)
        self.qubit = qubit
        self.rng = np.random.default_rng(seed)
        self._counts = np.zeros(2, dtype=np.int64)
        self.armed = False

    def count(self, duration_s: float) -> int:
        """Photons counted during `duration_s` s (ungated): Poisson at the CW rate."""
        if not (np.isfinite(duration_s) and 0 < duration_s <= self.constraints.max_count_s):
            raise DeviceError(f"photon counter: a count of {duration_s!r} s is outside "
                              f"(0, {self.constraints.max_count_s}] s")
        return int(self.rng.poisson(self.qubit.readout.cw_rate * duration_s))

    def arm(self) -> None:
        """Zero both gate counters and count the gates from now on."""
        self._counts[:] = 0
        self.armed = True

    def gated_counts(self) -> GateCounts:
        """The photons counted in the signal and the reference gate since `arm()`."""
        if not self.armed:
            raise DeviceError("photon counter: gated_counts() before arm()")
        return GateCounts(int(self._counts[0]), int(self._counts[1]))

    def gate_input(self, counts: GateCounts) -> None:
        """The photons of gates that the pulse generator opened (ignored unless armed)."""
        if self.armed:
            self._counts += counts


class SimPulseGenerator:
    """Plays channel-pulse sequences on the simulated NV; its gates feed `counter`."""

    def __init__(self, qubit: SimQubit, counter: SimPhotonCounter,
                 constraints: PulseGeneratorConstraints | None = None):
        self.constraints = constraints or PulseGeneratorConstraints()
        self.qubit = qubit
        self.counter = counter
        self.sequence: Sequence | None = None
        self.played = 0  # shots played since it was made

    def load(self, sequence: Sequence) -> None:
        """Load one repetition; DeviceError (nothing loaded) when `constraints` forbid it."""
        self.constraints.check(sequence)
        self.sequence = sequence

    def play(self, repetitions: int) -> None:
        """Play the loaded sequence `repetitions` times; the gates' photons go to the counter."""
        if self.sequence is None:
            raise DeviceError("pulse generator: play() before load()")
        if isinstance(repetitions, bool) or not isinstance(repetitions, (int, np.integer)) \
                or not 1 <= repetitions <= self.constraints.max_repetitions:
            raise DeviceError(f"pulse generator: {repetitions!r} repetitions is outside "
                              f"[1, {self.constraints.max_repetitions}]")
        self.counter.gate_input(self.qubit.play(self.sequence, int(repetitions)))
        self.played += int(repetitions)


__all__ = ["SimMicrowaveSource", "SimPhotonCounter", "SimPulseGenerator"]
