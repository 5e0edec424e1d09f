"""Pulse timing, defined once: the pi-pulse times of FID, spin echo, CPMG-n and DEER, and the
compilation of one shot into channel pulses for a pulse generator (docs/physics.md sections 3.1 and 2.5, noise
spectroscopy and NV-MRI).

Times are seconds. A coherence sequence of total time t runs from the centre of its first pi/2
pulse (time 0) to the centre of its last (time t); the pi pulses sit at the times the functions
below return, measured from time 0, and each pulse of a compiled shot is centred on its ideal
time. A duration of 0 is the ideal (zero-length) pulse. Pure numpy: nothing here touches a device.

A compiled shot (`coherence_shot`, `reference_shot`) is one repetition that the pulse generator
plays N times: the microwave pulses, then one laser pulse that reads the spin out and
re-polarizes it for the next repetition. The photon counter's signal gate (`gate`) opens when
the laser turns on, while the fluorescence still depends on the spin state; its reference gate
(`gate_ref`) closes with the laser, when the spin is back in ms = 0 (the bright reference of
every shot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS: tuple[str, ...] = ("laser", "mw", "mw_fm", "rf", "gate", "gate_ref")
"""The pulse generator's channels: green laser, NV microwave, the NV microwave's external FM (high:
+deviation, low: -deviation), dark-spin RF, and the photon counter's signal and reference gates."""


@dataclass(frozen=True)
class Pulse:
    """One pulse on one channel: on during [start_s, start_s + duration_s) in s from the shot's start."""

    channel: str
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        """When the pulse ends (s)."""
        return self.start_s + self.duration_s

    @property
    def centre_s(self) -> float:
        """The pulse's centre (s): where an ideal pulse of the same rotation would act."""
        return self.start_s + 0.5 * self.duration_s


@dataclass(frozen=True)
class Sequence:
    """One shot: its pulses (sorted by channel then start) and its length (s), the repetition period."""

    pulses: tuple[Pulse, ...]
    length_s: float

    def on(self, channel: str) -> tuple[Pulse, ...]:
        """The pulses on `channel`, in time order."""
        return tuple(p for p in self.pulses if p.channel == channel)


def _pulse_number(n_pulses: object) -> int:
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 0:
        raise ValueError(f"the number of pi pulses must be an integer >= 0, got {n_pulses!r}")
    return int(n_pulses)


def cpmg_pulse_times(t: float | np.ndarray, n_pulses: int) -> np.ndarray:
    """pi-pulse times (s) of CPMG-n over a total time t (s): t (2k - 1) / (2n), k = 1..n.

    Shape shape(t) + (n,); n = 0 is the FID (no pulse), n = 1 the spin echo (Cywinski et al.,
    PRB 77, 174509 (2008)).
    """
    n = _pulse_number(n_pulses)
    t = np.asarray(t, dtype=np.float64)
    if n == 0:
        return np.zeros(t.shape + (0,))
    k = np.arange(1, n + 1, dtype=np.float64)
    return t[..., None] * ((2.0 * k - 1.0) / (2.0 * n))


def sequence_name(n_pulses: int) -> str:
    """The one name of the coherence sequence with n_pulses pi pulses: "FID" (0), "echo" (1), "CPMG-n" (n >= 2)."""
    n = _pulse_number(n_pulses)
    return "FID" if n == 0 else "echo" if n == 1 else f"CPMG-{n}"


def shortest_time(n_pulses: int, timing: ShotTiming) -> float:
    """The shortest total time t (s) at which CPMG-n (n = 0: FID) compiles with `timing` (`coherence_shot`).

    Pulses are centred on their ideal times, so the tightest gaps are the first and last: t/(2n)
    between the pi/2 and the first pi pulse's centres must hold half of each and min_gap_s, giving
    t >= n (pi_half_s + pi_s + 2 min_gap_s); the gaps t/n between pi pulses then hold pi_s + min_gap_s.
    FID: t >= pi_half_s + min_gap_s. Every t must also be > 0 s (ideal pulses give 0).
    """
    n = _pulse_number(n_pulses)
    if n == 0:
        return float(timing.pi_half_s + timing.min_gap_s)
    return float(n * (timing.pi_half_s + timing.pi_s + 2.0 * timing.min_gap_s))


def fid_pulse_times(t: float | np.ndarray) -> np.ndarray:
    """pi-pulse times (s) of a free induction decay (Ramsey) over t (s): none, shape shape(t) + (0,)."""
    return cpmg_pulse_times(t, 0)


def echo_pulse_times(t: float | np.ndarray) -> np.ndarray:
    """pi-pulse times (s) of a Hahn spin echo over t (s): t / 2, shape shape(t) + (1,)."""
    return cpmg_pulse_times(t, 1)


def deer_pulse_times(t: float, rf_offset_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(NV pi-pulse times, dark-spin RF pi-pulse times) in s of DEER over a total time t (s).

    A spin echo on the NV (pi at t/2) with an RF pi pulse on the dark spins centred at
    t/2 + rf_offset_s (docs/physics.md section 2.5: each flipped dark spin multiplies the echo by
    1 - p (1 - cos(pi J tau))).
    """
    nv = echo_pulse_times(float(t))
    rf = np.array([0.5 * float(t) + rf_offset_s])
    if not 0.0 < rf[0] < t:
        raise ValueError(f"DEER: the RF pi pulse at {rf[0]:.4g} s lies outside the echo (0, {t:.4g}) s")
    return nv, rf


@dataclass(frozen=True)
class ShotTiming:
    """Durations (s) of the pulses of one shot; 0 for a pi or pi/2 pulse is the ideal zero-length pulse.

    The defaults are a real NV's pulses (a 40 ns pi, a 20 ns pi/2). min_gap_s: the shortest free time
    between the end of one microwave pulse and the start of the next (what the microwave switch and
    amplifier need; 0: pulses may touch). lead_s: from the shot's start (the previous laser pulse's end) to the first microwave pulse's
    centre, the time the NV needs to leave the shelving state. tail_s: from the last microwave or
    RF pulse's end to the laser.
    """

    pi_s: float = 40e-9
    pi_half_s: float = 20e-9
    rf_pi_s: float = 150e-9
    laser_s: float = 3e-6
    gate_s: float = 300e-9
    lead_s: float = 1e-6
    tail_s: float = 100e-9
    min_gap_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("pi_s", "pi_half_s", "rf_pi_s", "lead_s", "tail_s", "laser_s", "min_gap_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite time >= 0 s, got {v!r}")
        if not (np.isfinite(self.gate_s) and 0 < self.gate_s and 2 * self.gate_s <= self.laser_s):
            raise ValueError(f"gate_s must be > 0 s and fit twice in laser_s ({self.laser_s} s), got {self.gate_s!r}")
        if self.lead_s < 0.5 * max(self.pi_s, self.pi_half_s):
            raise ValueError(f"lead_s ({self.lead_s} s) must leave room for half the first pulse")


def _readout(start_s: float, timing: ShotTiming) -> list[Pulse]:
    """The laser pulse from `start_s` with the signal gate at its start and the reference gate at its end."""
    return [Pulse("laser", start_s, timing.laser_s),
            Pulse("gate", start_s, timing.gate_s),
            Pulse("gate_ref", start_s + timing.laser_s - timing.gate_s, timing.gate_s)]


def _centred(channel: str, centres: np.ndarray, duration_s: float) -> list[Pulse]:
    return [Pulse(channel, float(c) - 0.5 * duration_s, duration_s) for c in centres]


_SLACK_S = 1e-18
"""Rounding slack (s) of the gap check: far below any generator's resolution, far above the rounding
of times of a few ms, so that a sequence at exactly `shortest_time` compiles."""


def _no_overlap(pulses: list[Pulse], what: str, min_gap_s: float = 0.0) -> None:
    for a, b in zip(pulses, pulses[1:]):
        if b.start_s - a.end_s < min_gap_s - _SLACK_S or b.centre_s <= a.centre_s:
            gap = f" or are closer than {min_gap_s:.3g} s" if min_gap_s > 0 else ""
            raise ValueError(f"{what}: {a.channel} pulses at {a.centre_s:.4g} s and {b.centre_s:.4g} s overlap{gap} "
                             f"(pulses of {a.duration_s:.3g} s and {b.duration_s:.3g} s)")


def _shot(mw: list[Pulse], rf: list[Pulse], timing: ShotTiming, what: str) -> Sequence:
    _no_overlap(mw, what, timing.min_gap_s)
    _no_overlap(rf, what)
    last = max([p.end_s for p in mw + rf] + [timing.lead_s])
    pulses = mw + rf + _readout(last + timing.tail_s, timing)
    end = max(p.end_s for p in pulses)
    return Sequence(tuple(sorted(pulses, key=lambda p: (CHANNELS.index(p.channel), p.start_s))), end)


def coherence_shot(t: float, pi_times: np.ndarray, timing: ShotTiming = ShotTiming(),
                   rf_times: np.ndarray = np.zeros(0)) -> Sequence:
    """One shot of a coherence measurement over total time t (s): pi/2, pi pulses at `pi_times`
    (s from the first pi/2's centre), pi/2 at t, then the readout; RF pi pulses at `rf_times` (DEER).

    ValueError (one line) when t is not > 0 s, a pulse time lies outside (0, t), or microwave pulses
    overlap or leave less than timing.min_gap_s between them (a CPMG-n below `shortest_time` cannot
    be played).
    """
    t = float(t)
    pi_times = np.asarray(pi_times, dtype=np.float64).reshape(-1)
    rf_times = np.asarray(rf_times, dtype=np.float64).reshape(-1)
    what = f"sequence of {len(pi_times)} pi pulses over t = {t:.4g} s"
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"{what}: t must be > 0 s")
    for name, times in (("pi", pi_times), ("RF pi", rf_times)):
        if times.size and not (np.all(np.isfinite(times)) and times.min() > 0 and times.max() < t):
            raise ValueError(f"{what}: {name} pulse times must lie inside (0, t)")
    c0 = timing.lead_s
    mw = (_centred("mw", np.array([c0]), timing.pi_half_s) + _centred("mw", c0 + np.sort(pi_times), timing.pi_s)
          + _centred("mw", np.array([c0 + t]), timing.pi_half_s))
    rf = _centred("rf", c0 + np.sort(rf_times), timing.rf_pi_s)
    return _shot(mw, rf, timing, what)


def reference_shot(dark: bool, timing: ShotTiming = ShotTiming()) -> Sequence:
    """One shot of a readout reference: bright (ms = 0: no microwave) or dark (one pi pulse: ms = -1)."""
    mw = _centred("mw", np.array([timing.lead_s]), timing.pi_s) if dark else []
    return _shot(mw, [], timing, "dark reference" if dark else "bright reference")


def dither_cycle(gate_s: float) -> Sequence:
    """One period of the frequency lock's dither (docs/physics.md section 2.4), 2 gate_s (s) long:
    laser and microwave on throughout; `mw_fm` high (f_c + deviation) during the signal gate
    [0, gate_s), low (f_c - deviation) during the reference gate [gate_s, 2 gate_s). Played N times,
    the counter's two gates give the lock cycle's (I+, I-); with the FM off, a CW count at f_c."""
    g = float(gate_s)
    if not (np.isfinite(g) and g > 0):
        raise ValueError(f"dither cycle: gate_s must be > 0 s, got {gate_s!r}")
    pulses = (Pulse("laser", 0.0, 2 * g), Pulse("mw", 0.0, 2 * g), Pulse("mw_fm", 0.0, g),
              Pulse("gate", 0.0, g), Pulse("gate_ref", g, g))
    return Sequence(pulses, 2 * g)


def microwave_pi_times(sequence: Sequence) -> tuple[float, np.ndarray] | None:
    """(t, pi-pulse times) in s of a compiled coherence shot, read back from its microwave pulses:
    the first and last are the pi/2 pulses, the ones between are pi pulses; None when the shot has
    fewer than two microwave pulses (a reference shot)."""
    mw = sequence.on("mw")
    if len(mw) < 2:
        return None
    c0 = mw[0].centre_s
    return mw[-1].centre_s - c0, np.array([p.centre_s - c0 for p in mw[1:-1]])


__all__ = ["CHANNELS", "Pulse", "Sequence", "ShotTiming", "sequence_name", "shortest_time", "cpmg_pulse_times",
           "fid_pulse_times", "echo_pulse_times", "deer_pulse_times", "coherence_shot", "reference_shot", "dither_cycle",
           "microwave_pi_times"]
