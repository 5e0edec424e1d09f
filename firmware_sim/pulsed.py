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
- otherwise: a coherence shot of the qubit, or a readout reference (no microwave pulse: bright; one:
  dark), with the imperfections of a real readout that references exist for (`PulsedImperfections`):
  a pi pulse that inverts the spin with probability `pi_fidelity` f < 1, so the dark reference ends in
  ms=0 with probability 1 - f, and a coherence sequence keeps f of its coherence (its two pi/2 pulses
  keep sqrt(f) each under the same drive error; CPMG's pi pulses, along the coherence, keep it to first
  order), so that C read against the references is C - (1 - f)/f (rt/readout.py: amplitude 1, offset
  -(1 - f)/f; the residual ms=0 population the pi/2 errors leave, ~(1 - f)(1 - 2f)^n, is not simulated);
  and a slow drift of the collected photon rate, exp(x) with x an Ornstein-Uhlenbeck process of rms
  `drift_rms` and correlation time `drift_time_s` over the sequence time played (focus and laser
  drift). DEER shots and their echo reference share that readout (with the dark spins' factor on the
  DEER shot's coherence); the ODMR path (CW counts) keeps a steady rate.
Playing is not paced: a coherence point of 1e7 shots would otherwise take a minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from nvscope.rt.hal import (DeviceError, GateCounts, MicrowaveConstraints, PhotonCounterConstraints,
                            PulseGeneratorConstraints)
from nvscope.rt.kernels.pulses import Sequence, microwave_pi_times

from .mri_sample import SimMriSample
from .qubit import SimQubit


@dataclass(frozen=True)
class PulsedImperfections:
    """`[sim.pulsed]`: the pulsed readout's imperfections (module docstring). The defaults are a real
    rig's: a pi pulse that inverts 97 % of the spins (a 40 ns pulse on the central 14N line leaves
    the +-2.16 MHz hyperfine lines about 3 % short; Rabi inhomogeneity adds to it), and a collected
    photon rate that wanders by 5 % rms with a correlation time of 10 minutes (about 2 % in a minute:
    focus drift between re-tracking)."""

    pi_fidelity: float = 0.97
    drift_rms: float = 0.05
    drift_time_s: float = 600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pi_fidelity) and 0.5 < self.pi_fidelity <= 1):
            raise ValueError(f"pi_fidelity must be in (0.5, 1] (the fraction of spins a pi pulse inverts), "
                             f"got {self.pi_fidelity!r}")
        if not (math.isfinite(self.drift_rms) and 0 <= self.drift_rms <= 1):
            raise ValueError(f"drift_rms must be in [0, 1] (relative rms of the collected rate), "
                             f"got {self.drift_rms!r}")
        if not (math.isfinite(self.drift_time_s) and self.drift_time_s > 0):
            raise ValueError(f"drift_time_s must be > 0 s, got {self.drift_time_s!r}")


IDEAL_PULSES = PulsedImperfections(pi_fidelity=1.0, drift_rms=0.0)
"""Perfect pi pulses and a steady photon rate."""


class RateDrift:
    """The relative collected photon rate exp(x) over sequence time, x an Ornstein-Uhlenbeck process
    (rms `rms`, correlation time `time_s` s) starting at 0, advanced exactly in steps of at most
    time_s / 100."""

    def __init__(self, rms: float, time_s: float, seed: int = 0):
        self.rms, self.time_s = float(rms), float(time_s)
        self.rng = np.random.default_rng(seed)
        self.x = 0.0
        self.elapsed_s = 0.0

    def mean_factor(self, duration_s: float) -> float:
        """Advance by `duration_s` s and return the mean rate factor over that time (trapezoid over the steps)."""
        if self.rms == 0 or duration_s <= 0:
            self.elapsed_s += max(duration_s, 0.0)
            return 1.0
        steps = max(1, math.ceil(duration_s / (self.time_s / 100.0)))
        a = math.exp(-duration_s / steps / self.time_s)
        kicks = self.rms * math.sqrt(1.0 - a * a) * self.rng.standard_normal(steps)
        x = np.concatenate([[self.x], lfilter([1.0], [1.0, -a], kicks, zi=[a * self.x])[0]])  # x_k+1 = a x_k + kick
        self.x = float(x[-1])
        self.elapsed_s += duration_s
        f = np.exp(x)
        return float(0.5 * (f[:-1] + f[1:]).mean())


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
                 constraints: PulseGeneratorConstraints | None = None, sample: SimMriSample | None = None,
                 imperfections: PulsedImperfections = IDEAL_PULSES, seed: int = 0):
        self.constraints = constraints or PulseGeneratorConstraints()
        self.qubit = qubit
        self.counter = counter
        self.sample = sample
        self.imperfections = imperfections
        self.drift = RateDrift(imperfections.drift_rms, imperfections.drift_time_s, seed)
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
        rate = self.drift.mean_factor(n * self.sequence.length_s)
        if self._odmr is not None:
            mw = self.sample.microwave
            f, dev = mw.frequency_hz, mw.fm_deviation_hz
            rates = np.array([self.sample.odmr.rate_cps, self.sample.cw_rate(f + dev), self.sample.cw_rate(f - dev)])
            counts = self.qubit.rng.poisson(n * (self._odmr @ rates))
            self.counter.gate_input(GateCounts(int(counts[0]), int(counts[1])))
        elif self._deer is not None:  # the same readout as its echo reference without RF (rt.mri), dark spins' factor on
            self.counter.gate_input(self._readout_counts(n, rate, self.sample.deer_factor(*self._deer)))
        else:
            self.counter.gate_input(self._readout_counts(n, rate))
        self.played += n

    def ms0_probability(self, sequence: Sequence, factor: float = 1.0) -> float:
        """Probability (0-1) that a coherence or reference shot ends in ms=0 with `imperfections`' pi pulses,
        its coherence multiplied by `factor` (0-1: the dark spins' DEER factor; 1: none)."""
        f = self.imperfections.pi_fidelity
        n_mw = len(sequence.on("mw"))
        if n_mw == 1:
            return 1.0 - f
        return self.qubit.ms0_probability(sequence, f * factor) if n_mw else 1.0

    def _readout_counts(self, n: int, rate: float, factor: float = 1.0) -> GateCounts:
        """The two gates' photons of n shots of the loaded sequence at `rate` x the qubit's photon rate
        (`factor`: a DEER factor on its coherence)."""
        bright, deficit = self.qubit.gate_means(self.sequence)
        in_ms0 = self.qubit.rng.binomial(n, self.ms0_probability(self.sequence, factor))
        lam = rate * (n * bright - (n - in_ms0) * deficit)
        signal, reference = self.qubit.rng.poisson(np.maximum(lam, 0.0))
        return GateCounts(int(signal), int(reference))


__all__ = ["PulsedImperfections", "IDEAL_PULSES", "RateDrift", "SimMicrowaveSource", "SimPhotonCounter",
           "odmr_gate_times", "SimPulseGenerator"]
