"""The simulated pulsed instrument: microwave and RF sources, pulse generator and photon counter around
the simulated NV spin (`SimQubit`) and the NV-MRI sample (`SimMriSample`), each implementing its
`rt.hal` Protocol. One instrument serves noise spectroscopy and NV-MRI on one rig.

The pulse generator plays a loaded sequence; the photons of its `gate` and `gate_ref` channels go to
the photon counter, as the generator's gate outputs drive a real counter's gate inputs. What a
sequence plays decides the physics (docs/physics.md section 2):
- it drives `mw_fm` (the lock's dither, `dither_cycle`): CW ODMR photons, each gate counting at
  f_mw + deviation while `mw_fm` is high and f_mw - deviation while low, against the NV line with
  the tip where the scanner is (Poisson counts);
- it plays RF pulses (DEER): the echo's coherence from the qubit times the dark spins' DEER factor
  at the RF source's frequency, through the pulsed readout's counts;
- otherwise: a coherence shot of the qubit.
Playing is not paced: a coherence point of 1e7 shots would otherwise take a minute.
"""

from __future__ import annotations

import numpy as np

from nvscope.rt.hal import (DeviceError, GateCounts, MicrowaveConstraints, PhotonCounterConstraints,
                            PulseGeneratorConstraints)
from nvscope.rt.kernels.pulses import Sequence, microwave_pi_times

from .mri_sample import SimMriSample
from .qubit import SimQubit


class SimMicrowaveSource:
    """A CW microwave source with an external FM input that keeps its settings (what it drives is
    simulated by `SimMriSample` and the pulse generator)."""

    def __init__(self, constraints: MicrowaveConstraints | None = None):
        self.constraints = constraints or MicrowaveConstraints((9e3, 20e9), (-120.0, 25.0), 32e6)
        self.frequency_hz = 2.87e9
        self.power_dbm = -120.0
        self.output_on = False
        self.fm_deviation_hz = 0.0

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

    def set_fm_deviation(self, deviation_hz: float) -> None:
        """Set the external FM deviation in Hz (0: FM off); DeviceError outside [0, max_fm_deviation_hz]."""
        hi = self.constraints.max_fm_deviation_hz
        if not (np.isfinite(deviation_hz) and 0 <= deviation_hz <= hi):
            raise DeviceError(f"microwave: an FM deviation of {deviation_hz!r} Hz is outside [0, {hi:.4g}] Hz")
        self.fm_deviation_hz = float(deviation_hz)


class SimPhotonCounter:
    """Counts the NV's photons: ungated at the CW rate (the ODMR dip at the microwave's frequency when
    an NV-MRI `sample` is simulated), or in the two gates the pulse generator opens."""

    def __init__(self, qubit: SimQubit, seed: int = 0, constraints: PhotonCounterConstraints | None = None,
                 sample: SimMriSample | None = None):
        self.constraints = constraints or PhotonCounterConstraints(max_count_s=10.0)
        self.qubit = qubit
        self.sample = sample
        self.rng = np.random.default_rng(seed)
        self._counts = np.zeros(2, dtype=np.int64)
        self.armed = False

    def count(self, duration_s: float) -> int:
        """Photons counted during `duration_s` s (ungated): Poisson at the CW rate."""
        if not (np.isfinite(duration_s) and 0 < duration_s <= self.constraints.max_count_s):
            raise DeviceError(f"photon counter: a count of {duration_s!r} s is outside "
                              f"(0, {self.constraints.max_count_s}] s")
        if self.sample is not None:
            rate = self.sample.cw_rate(self.sample.microwave.frequency_hz)
        else:
            rate = self.qubit.readout.cw_rate
        return int(self.rng.poisson(rate * duration_s))

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


def _overlap(a: tuple, b: tuple) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _time_in(gate: tuple, pulses: tuple) -> float:
    return sum(_overlap(gate, (p.start_s, p.end_s)) for p in pulses)


def odmr_gate_times(sequence: Sequence) -> np.ndarray:
    """(2, 3) seconds per repetition that the signal and reference gates count with the laser on
    and (microwave off, microwave at f + deviation (`mw_fm` high), microwave at f - deviation).
    The `mw_fm` pulses are taken to lie inside the microwave pulses, and those inside the laser."""
    lasers, mw, fm = sequence.on("laser"), sequence.on("mw"), sequence.on("mw_fm")
    out = np.zeros((2, 3))
    for k, channel in enumerate(("gate", "gate_ref")):
        for g in sequence.on(channel):
            span = (g.start_s, g.end_s)
            lit, driven, high = _time_in(span, lasers), _time_in(span, mw), _time_in(span, fm)
            out[k] += (max(lit - driven, 0.0), high, max(driven - high, 0.0))
    return out


class SimPulseGenerator:
    """Plays channel-pulse sequences on the simulated NV (and, with `sample`, the NV-MRI sample: CW
    ODMR for sequences that drive `mw_fm`, DEER for sequences with RF pulses; module docstring);
    its gates feed `counter`."""

    def __init__(self, qubit: SimQubit, counter: SimPhotonCounter,
                 constraints: PulseGeneratorConstraints | None = None, sample: SimMriSample | None = None):
        self.constraints = constraints or PulseGeneratorConstraints()
        self.qubit = qubit
        self.counter = counter
        self.sample = sample
        self.sequence: Sequence | None = None
        self.played = 0  # shots played since it was made
        self._odmr: np.ndarray | None = None  # odmr_gate_times of the loaded sequence (it drives mw_fm)
        self._deer: tuple[float, float] | None = None  # (tau, RF pi duration) s of the loaded sequence

    def load(self, sequence: Sequence) -> None:
        """Load one repetition; DeviceError (nothing loaded) when `constraints` forbid it, or when it
        drives `mw_fm` or RF and no NV-MRI sample is simulated."""
        self.constraints.check(sequence)
        odmr, deer = None, None
        if sequence.on("mw_fm"):
            odmr = odmr_gate_times(sequence)
        elif sequence.on("rf"):
            echo = microwave_pi_times(sequence)
            if echo is None:
                raise DeviceError("pulse generator (simulated): RF pulses without an echo on the NV")
            deer = (echo[0], sequence.on("rf")[0].duration_s)
        if (odmr is not None or deer is not None) and self.sample is None:
            raise DeviceError("pulse generator (simulated): this sequence needs the NV-MRI sample ([sim.mri])")
        self.sequence, self._odmr, self._deer = sequence, odmr, deer

    def play(self, repetitions: int) -> None:
        """Play the loaded sequence `repetitions` times; the gates' photons go to the counter."""
        if self.sequence is None:
            raise DeviceError("pulse generator: play() before load()")
        if isinstance(repetitions, bool) or not isinstance(repetitions, (int, np.integer)) \
                or not 1 <= repetitions <= self.constraints.max_repetitions:
            raise DeviceError(f"pulse generator: {repetitions!r} repetitions is outside "
                              f"[1, {self.constraints.max_repetitions}]")
        n = int(repetitions)
        if self._odmr is not None:
            mw = self.sample.microwave
            f, dev = mw.frequency_hz, mw.fm_deviation_hz
            rates = np.array([self.sample.odmr.rate_cps, self.sample.cw_rate(f + dev), self.sample.cw_rate(f - dev)])
            counts = self.qubit.rng.poisson(n * (self._odmr @ rates))
            self.counter.gate_input(GateCounts(int(counts[0]), int(counts[1])))
        elif self._deer is not None:
            factor = self.sample.deer_factor(*self._deer)
            self.counter.gate_input(self.qubit.play(self.sequence, n, factor))
        else:
            self.counter.gate_input(self.qubit.play(self.sequence, n))
        self.played += n


__all__ = ["SimMicrowaveSource", "SimPhotonCounter", "odmr_gate_times", "SimPulseGenerator"]
