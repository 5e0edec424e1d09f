"""Pulsed optical readout: coherence and its one-sigma error from photon counts and the bright and
dark references (docs/physics.md, noise spectroscopy).

A shot that ends in ms=0 with probability p = (1 + C)/2 gives, per shot, the mean photon number
S = p B + (1 - p) D in the signal gate, with B (ms=0, bright) and D (ms=-1, dark) measured by
reference shots. Hence C = 2 (S - D) / (B - D) - 1. Counts are Poisson; the projection adds the
binomial variance p (1 - p) (B - D)^2 per shot; the error of the references is propagated too, so
noisy points may legitimately lie a few sigma outside [0, 1].
"""

from __future__ import annotations

import numpy as np

from .hal import DeviceError


def coherence_from_counts(signal: np.ndarray, shots: int, bright: int, bright_shots: int, dark: int,
                          dark_shots: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, sigma) per point from the signal-gate photons of `shots` shots each and the references'
    photons (bright over `bright_shots` shots, dark over `dark_shots`); DeviceError (one line)
    when the bright reference is not above the dark one (no contrast to read out)."""
    signal = np.asarray(signal, dtype=np.float64)
    s = signal / shots
    b, d = bright / bright_shots, dark / dark_shots
    span = b - d
    if not span > 0:
        raise DeviceError(f"readout: the bright reference ({b:.4g} photons/shot) is not above the dark one "
                          f"({d:.4g}): no contrast (too few shots, or the laser or the microwave is off)")
    c = 2.0 * (s - d) / span - 1.0
    p = np.clip(0.5 * (1.0 + c), 0.0, 1.0)
    var_s = np.maximum(signal, dark * shots / dark_shots) / shots**2 + p * (1.0 - p) * span**2 / shots
    var_b, var_d = max(bright, 1) / bright_shots**2, max(dark, 1) / dark_shots**2
    dc_ds, dc_db, dc_dd = 2.0 / span, -2.0 * (s - d) / span**2, 2.0 * (s - b) / span**2
    sigma = np.sqrt(dc_ds**2 * var_s + dc_db**2 * var_b + dc_dd**2 * var_d)
    return c, sigma


__all__ = ["coherence_from_counts"]
