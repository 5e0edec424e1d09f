"""Coherence curves: CPMG-n (FID, echo) compiled from the pulse timing in `rt.kernels.pulses`,
played on the pulse generator, counted by the photon counter and read out in rt (`rt.readout`).

Readout as a lab does it: each point's shots are interleaved with shots of the dark reference (one
pi pulse), in blocks of at most `block_s` s of sequence time played in the order S D D S S D ...
(each kind's blocks then share one mean time, so a drift of the collected light that is linear over
the point cancels, and any drift slower than a block largely does); the bright reference is the
reference gate of the point's own sequence shots. Every point is read against its own references.
"""

from __future__ import annotations

import math

import numpy as np

from nvscope.proto.messages import Coherence

from .config import BLOCK_S, dark_repetitions_for
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


def interleaved_blocks(signal_shots: int, dark_shots: int, blocks: int) -> list[tuple[bool, int]]:
    """The plays of one point: (is the dark reference, shots) in the order S D D S S D ... of `blocks`
    blocks of each kind (shots split as evenly as integers allow), neighbouring plays of one kind merged."""
    blocks = max(1, min(blocks, signal_shots, dark_shots))
    sig = np.diff(np.linspace(0, signal_shots, blocks + 1).round().astype(np.int64))
    drk = np.diff(np.linspace(0, dark_shots, blocks + 1).round().astype(np.int64))
    plays: list[tuple[bool, int]] = []
    for k in range(blocks):
        pair = [(False, int(sig[k])), (True, int(drk[k]))]
        for dark, n in (pair if k % 2 == 0 else pair[::-1]):
            if plays and plays[-1][0] == dark:
                plays[-1] = (dark, plays[-1][1] + n)
            else:
                plays.append((dark, n))
    return plays


def point_time_s(shot: Sequence, dark_shot: Sequence, repetitions: int, dark_repetitions: int) -> float:
    """Sequence time (s) one point plays: its shots and its interleaved dark reference's."""
    return repetitions * shot.length_s + dark_repetitions * dark_shot.length_s


def acquire_coherence(devices: RigDevices, run_id: str, seq: int, n_pulses: int, t: np.ndarray,
                      repetitions: int, timing: ShotTiming = ShotTiming(), dark_repetitions: int | None = None,
                      block_s: float = BLOCK_S) -> Coherence:
    """Measure C(t) under CPMG-n (0: FID, 1: echo) at the total times t (s), `repetitions` shots per
    point interleaved with `dark_repetitions` dark-reference shots (None: `dark_repetitions_for`) in
    blocks of at most `block_s` s, and pack the message with the raw counts.

    Every point's shots are compiled and checked first (ValueError or DeviceError, nothing played,
    when one cannot be played). A point costs `point_time_s` of sequence time.
    """
    t = np.asarray(t, dtype=np.float64)
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses < 0 \
            or t.ndim != 1 or not len(t) or not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"cannot play CPMG-{n_pulses} at times {t!r}: need n >= 0 and times > 0 s")
    m = dark_repetitions_for(repetitions) if dark_repetitions is None else dark_repetitions
    for name, v in (("repetitions", repetitions), ("dark_repetitions", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"coherence readout: {name} must be an integer >= 1, got {v!r}")
    if not (math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"coherence readout: block_s must be > 0 s, got {block_s!r}")
    if devices.pulser is None or devices.counter is None:
        raise DeviceError("this rig has no pulse generator and photon counter for coherence curves")
    shots = [coherence_shot(ti, cpmg_pulse_times(ti, n_pulses), timing) for ti in t]
    dark_shot = reference_shot(dark=True, timing=timing)
    for s in shots + [dark_shot]:
        devices.pulser.constraints.check(s)
    counts = np.zeros((len(t), 3))  # signal, bright (the sequence shots' reference gate), dark
    for i, shot in enumerate(shots):
        blocks = math.ceil(point_time_s(shot, dark_shot, repetitions, m) / block_s)
        for dark, n in interleaved_blocks(int(repetitions), int(m), blocks + blocks % 2):
            got = play_and_count(devices.pulser, devices.counter, dark_shot if dark else shot, n)
            counts[i] += (0.0, 0.0, got.signal) if dark else (got.signal, got.reference, 0.0)
    c, sigma = coherence_from_counts(counts[:, 0], repetitions, counts[:, 1], repetitions, counts[:, 2], m)
    return Coherence(run_id=run_id, seq=seq, n_pulses=int(n_pulses), t=t, coherence=c, sigma=sigma,
                     repetitions=int(repetitions), pi_s=timing.pi_s, pi_half_s=timing.pi_half_s,
                     signal_counts=counts[:, 0].copy(), bright_counts=counts[:, 1].copy(),
                     dark_counts=counts[:, 2].copy(), dark_repetitions=int(m))


__all__ = ["cpmg_pulse_times", "play_and_count", "dark_repetitions_for", "interleaved_blocks", "point_time_s",
           "acquire_coherence"]
