"""Coherence curves: CPMG-n (FID, echo) compiled from the pulse timing in `rt.kernels.pulses`,
played on the pulse generator, counted by the photon counter and read out in rt (`rt.readout`)."""

from __future__ import annotations

import numpy as np

from nvscope.proto.messages import Coherence

from .hal import DeviceError, GateCounts, PhotonCounter, PulseGenerator, RigDevices
from .kernels.pulses import Sequence, ShotTiming, coherence_shot, cpmg_pulse_times, reference_shot
from .readout import coherence_from_counts


def play_and_count(pulser: PulseGenerator, counter: PhotonCounter, sequence: Sequence,
                   repetitions: int) -> GateCounts:
    """Load `sequence`, play it `repetitions` times and return the photons of its two gates."""
    pulser.load(sequence)
    counter.arm()
    pulser.play(repetitions)
    return counter.gated_counts()


def acquire_coherence(devices: RigDevices, run_id: str, seq: int, n_pulses: int, t: np.ndarray,
                      repetitions: int, timing: ShotTiming = ShotTiming()) -> Coherence:
    """Measure C(t) under CPMG-n (0: FID, 1: echo) at the total times t (s), `repetitions` shots per
    point, and pack the message.

    Every point's shots are compiled first (ValueError, nothing played, for a sequence that cannot
    be played); then each point is played and counted, and a dark reference (one pi pulse) is
    played for as many shots. The bright reference is the reference gate of every shot (the spin
    is back in ms=0 at the end of each laser pulse).
    """
    t = np.asarray(t, dtype=np.float64)
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 0 \
            or t.ndim != 1 or not len(t) or not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"cannot play CPMG-{n_pulses} at times {t!r}: need n >= 0 and times > 0 s")
    if devices.pulser is None or devices.counter is None:
        raise DeviceError("this rig has no pulse generator and photon counter for coherence curves")
    shots = [coherence_shot(ti, cpmg_pulse_times(ti, n_pulses), timing) for ti in t]
    dark_shot = reference_shot(dark=True, timing=timing)
    for s in shots + [dark_shot]:
        devices.pulser.constraints.check(s)
    counts = [play_and_count(devices.pulser, devices.counter, s, repetitions) for s in shots]
    dark = play_and_count(devices.pulser, devices.counter, dark_shot, repetitions)
    bright = sum(c.reference for c in counts) + dark.reference
    c, sigma = coherence_from_counts(np.array([k.signal for k in counts]), repetitions,
                                     bright, repetitions * (len(counts) + 1), dark.signal, repetitions)
    return Coherence(run_id=run_id, seq=seq, n_pulses=int(n_pulses), t=t, coherence=c, sigma=sigma,
                     repetitions=repetitions)


__all__ = ["cpmg_pulse_times", "play_and_count", "acquire_coherence"]
