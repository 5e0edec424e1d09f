"""The variational spectrum: a sum of symmetrized Lorentzians (docs/physics.md section 3.2)."""

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


def sensitive_band(t: np.ndarray, n_pulses: np.ndarray, coherence: np.ndarray | None = None,
                   sigma: np.ndarray | None = None) -> tuple[float, float]:
    """The angular-frequency range (rad/s) the measured curves inform: from pi/(2 t_max) of the
    longest curve to the highest CPMG-n filter peak pi n / t among the points where the coherence
    has measurably decayed (1 - C > 3 sigma; every point when no coherence is given), x2 margin."""
    t = np.asarray(t, dtype=float)
    n = np.asarray(n_pulses)
    use = np.isfinite(t) & (t > 0)
    if coherence is not None:
        s = np.nan_to_num(sigma, nan=0.01) if sigma is not None else 0.01
        decayed = use & (1.0 - np.nan_to_num(coherence, nan=1.0) > 3.0 * s)
        use = decayed if decayed.any() else use
    w_hi = max(np.pi * max(int(n[i]), 1) / np.min(t[i][use[i]]) for i in range(len(n)) if use[i].any())
    return 0.5 * np.pi / np.nanmax(t), 2.0 * w_hi
