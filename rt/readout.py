"""Pulsed optical readout: coherence and its one-sigma error from photon counts and the bright and
dark references of each point (docs/physics.md section 3.5, noise spectroscopy).

Per point, N shots of the sequence give S photons in the signal gate; every shot's reference gate
(the end of the laser pulse, the spin back in ms=0) gives the bright reference; M interleaved shots
of the dark reference (one pi pulse) give D photons in their signal gate. With
s = S / N, b = B / N_b (B photons over N_b reference gates), d = D / M:

    C = 2 (s - d) / (b - d) - 1

(a shot that ends in ms=0 with probability p = (1 + C)/2 gives s = p b + (1 - p) d). An imperfect
dark reference (a pi pulse that inverts with fidelity f) gives d' = d + (1 - f)(b - d), and then
C' = C / f - (1 - f) / f: the fit's readout amplitude and offset, not a spectral feature.

Error, first order in the three independent counts:

    sigma^2 = (2 / (b - d))^2 var(s) + (2 (s - d) / (b - d)^2)^2 var(b) + (2 (s - b) / (b - d)^2)^2 var(d)

with var(s) = max(S, D N / M) / N^2 + p (1 - p) (b - d)^2 / N (Poisson, and the binomial projection of
each shot), var(b) = max(B, 1) / N_b^2, var(d) = max(D, 1) / M^2. Noisy points may legitimately lie a
few sigma outside [0, 1]. (The dark reference's own projection noise, f (1 - f) (b - d)^2 / M, is below
1e-4 of its Poisson term at 0.03 photons per shot and is left out.)
"""

from __future__ import annotations

import numpy as np

from .hal import DeviceError


def coherence_from_counts(signal: np.ndarray, shots: int | np.ndarray, bright: np.ndarray,
                          bright_shots: int | np.ndarray, dark: np.ndarray,
                          dark_shots: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, sigma) per point from its signal-gate photons over `shots` shots and its own references'
    photons (bright over `bright_shots` reference gates, dark over `dark_shots` dark shots); every
    argument is one value per point or one for all (module docstring for the formulas).

    DeviceError (one line) when the references pooled over all points show no contrast (bright not
    above dark: too few shots, or the laser or the microwave is off). A point whose own references
    are not apart by noise alone (few shots) is read against the pooled ones, so that a run is never
    failed by its own noise."""
    signal = np.asarray(signal, dtype=np.float64)
    shape = signal.shape
    n, bright, n_b, dark, n_d = (np.broadcast_to(np.asarray(v, dtype=np.float64), shape)
                                 for v in (shots, bright, bright_shots, dark, dark_shots))
    pooled_b, pooled_d = bright.sum() / n_b.sum(), dark.sum() / n_d.sum()
    if not pooled_b - pooled_d > 0:
        raise DeviceError(f"readout: the bright reference ({pooled_b:.4g} photons/shot) is not above the dark one "
                          f"({pooled_d:.4g}): no contrast (too few shots, or the laser or the microwave is off)")
    own = bright / n_b - dark / n_d > 0
    b_count = np.where(own, bright, bright.sum())
    b_shots = np.where(own, n_b, n_b.sum())
    d_count = np.where(own, dark, dark.sum())
    d_shots = np.where(own, n_d, n_d.sum())
    s, b, d = signal / n, b_count / b_shots, d_count / d_shots
    span = b - d
    c = 2.0 * (s - d) / span - 1.0
    p = np.clip(0.5 * (1.0 + c), 0.0, 1.0)
    var_s = np.maximum(signal, d * n) / n**2 + p * (1.0 - p) * span**2 / n
    var_b, var_d = np.maximum(b_count, 1.0) / b_shots**2, np.maximum(d_count, 1.0) / d_shots**2
    dc_ds, dc_db, dc_dd = 2.0 / span, -2.0 * (s - d) / span**2, 2.0 * (s - b) / span**2
    sigma = np.sqrt(dc_ds**2 * var_s + dc_db**2 * var_b + dc_dd**2 * var_d)
    return c, sigma


__all__ = ["coherence_from_counts"]
