"""Coherence curves: the switching times of FID, spin echo and CPMG-n, and their acquisition."""

from __future__ import annotations

import numpy as np

from nvscope.proto.messages import Coherence

from .hal import PulsedQubit


def cpmg_pulse_times(t: float, n_pulses: int) -> np.ndarray:
    """pi-pulse times of CPMG-n over a total time t (s): t (2k - 1) / (2n), k = 1..n (FID: none)."""
    k = np.arange(1, n_pulses + 1)
    return t * (2 * k - 1) / (2 * n_pulses) if n_pulses else np.zeros(0)


def acquire_coherence(qubit: PulsedQubit, run_id: str, seq: int, n_pulses: int, t: np.ndarray,
                      repetitions: int) -> Coherence:
    """Measure C(t) under CPMG-n (0: FID, 1: echo) at the total times t (s) and pack the message."""
    t = np.asarray(t, dtype=np.float64)
    if n_pulses < 0 or t.ndim != 1 or not len(t) or (t <= 0).any() or not np.isfinite(t).all():
        raise ValueError(f"cannot play CPMG-{n_pulses} at times {t!r}: need n >= 0 and times > 0 s")
    c, sigma = qubit.measure_coherence([cpmg_pulse_times(ti, n_pulses) for ti in t], t, repetitions)
    return Coherence(run_id=run_id, seq=seq, n_pulses=n_pulses, t=t, coherence=np.asarray(c, dtype=np.float64),
                     sigma=np.asarray(sigma, dtype=np.float64), repetitions=repetitions)
