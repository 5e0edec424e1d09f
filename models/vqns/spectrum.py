"""The variational spectrum: a sum of symmetrized Lorentzians (physics.md section 3)."""

from __future__ import annotations

import numpy as np


def lorentzian_spectrum(omega: np.ndarray, a: np.ndarray, w0: np.ndarray, g: np.ndarray) -> np.ndarray:
    """S(w) in rad^2/s for Lorentzians with leading shape (..., M): returns (..., F) for omega (F,) rad/s.

    S(w) = sum_j a_j [g_j / ((w - w0_j)^2 + g_j^2) + g_j / ((w + w0_j)^2 + g_j^2)], the Fourier
    transform of the correlation sum_j a_j exp(-g_j |tau|) cos(w0_j tau).
    """
    w = np.asarray(omega, dtype=float)[..., None, :] if np.ndim(a) else np.asarray(omega, dtype=float)
    a, w0, g = (np.asarray(v, dtype=float)[..., None] for v in (a, w0, g))
    s = a * (g / ((w - w0) ** 2 + g**2) + g / ((w + w0) ** 2 + g**2))
    return s.sum(axis=-2)


def sensitive_band(t: np.ndarray, n_pulses: np.ndarray) -> tuple[float, float]:
    """The angular-frequency range (rad/s) the measured sequences probe: from pi/t_max of the FID
    to the highest CPMG-n filter peak, pi n / t_min, with a factor 2 margin each way."""
    t = np.asarray(t, dtype=float)
    n = np.asarray(n_pulses)
    t_max = np.nanmax(t)
    t_min_n = [np.nanmin(t[i][t[i] > 0]) / max(int(n[i]), 1) for i in range(len(n)) if np.any(t[i] > 0)]
    return 0.5 * np.pi / t_max, 2.0 * np.pi / min(t_min_n)
