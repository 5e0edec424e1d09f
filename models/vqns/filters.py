"""Filter functions F(w t) of FID, spin echo and CPMG-n (docs/physics.md section 3.1).

The attenuation of a sequence of total length t is

    chi(t) = (1/pi) integral_0^inf S(w) F(w t) / w^2 dw,
    F(w t) = (w^2 / 2) |integral_0^t y(s) exp(i w s) ds|^2,

with y(s) = +-1 the switching function, flipped by each ideal pi pulse. For CPMG-n the pulses
sit at t (2k - 1) / (2n), k = 1..n (`nvscope.rt.kernels.pulses.cpmg_pulse_times`, the pulse
timing the rig plays, defined there once); n_pulses = 0 is the FID, n_pulses = 1 the spin echo:

    FID:     F = 2 sin^2(wt/2)
    echo:    F = 8 sin^4(wt/4)
    CPMG-n:  F = 8 sin^4(wt/4n) sin^2(wt/2) / cos^2(wt/2n)    (n even; cos^2(wt/2) for n odd)

(VQNS paper, Appendix A, Eqs. (10)-(11); Cywinski et al., PRB 77, 174509 (2008).)

The CPMG ratio has removable 0/0 singularities where cos(wt/2n) = 0. With theta = wt/2n and
phi = pi/2 - theta, both parities give |sin(wt/2)/cos(wt/2n)| resp. |cos(wt/2)/cos(wt/2n)|
= |sin(n phi) / sin(phi)|, the Dirichlet kernel, which is pi-periodic in phi. `filter_function`
reduces phi to [-pi/2, pi/2] and evaluates n sinc(n phi) / sinc(phi), where sinc(phi) >= 2/pi:
no 0/0 anywhere, and full relative accuracy near the filter's peaks.

Finite pi pulses (models/vqns/finite_pulses.py: length tp, centred at the CPMG times, y going
from +-1 to -+1 as cos(pi u/tp) across each; pi/2 pulses ideal). With y' the sum of the
switching events, F = (1/2) |sum_j D_j(w) e^{i w s_j}|^2: an ideal pulse's event is a jump
D_j = +-2, a finite one's the same jump times its envelope

    E(w tp) = cos(w tp/2) / (1 - (w tp/pi)^2)     (E(0) = 1, E(pi) = pi/4),

and the CPMG sum over the pi pulses is -cos(theta) times the pi/2 pulses' pair
(theta = wt/2n), so

    F = 2 D_n^2 (cos(theta) - E)^2,   D_n = sin(n phi)/sin(phi)   (n >= 1),

which is the ideal 8 sin^4(theta/2) D_n^2 at E = 1. E is evaluated as
(pi/2) sinc((pi - w tp)/2) / (1 + w tp/pi), without the 0/0 at w tp = pi. Above w ~ 1/tp the
pi pulses stop flipping the noise (E ~ (pi/(w tp))^2): what is left is the FID-like filter
2 D_n^2 cos^2(theta) of the pi/2 pulses.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["filter_function", "pi_pulse_envelope"]


def _as_pulse_numbers(n_pulses: ArrayLike) -> np.ndarray:
    n = np.asarray(n_pulses)
    if n.dtype.kind not in "iub":
        if not np.all(np.isfinite(n)) or np.any(n != np.round(n)):
            raise ValueError("n_pulses must be integers")
        n = n.astype(np.int64)
    if np.any(n < 0):
        raise ValueError("n_pulses must be >= 0")
    return n.astype(np.int64)


def pi_pulse_envelope(w_tp: ArrayLike) -> np.ndarray:
    """E(w tp) = cos(w tp/2) / (1 - (w tp/pi)^2): a pi pulse of length tp (s) seen at w (rad/s),
    relative to an ideal one (dimensionless; module docstring)."""
    u = np.abs(np.asarray(w_tp, dtype=np.float64))
    return 0.5 * np.pi * np.sinc((np.pi - u) / (2.0 * np.pi)) / (1.0 + u / np.pi)


def filter_function(wt: ArrayLike, n_pulses: ArrayLike, pi_over_t: ArrayLike = 0.0) -> np.ndarray:
    """F(w t) of docs/physics.md section 3.1 (dimensionless), float64.

    wt: w t, the angular frequency (rad/s) times the sequence length (s), any real array.
    n_pulses: number of pi pulses (0 = FID, 1 = spin echo, n = CPMG-n), int or int array.
    pi_over_t: the pi pulses' length over t (0: ideal pulses; finite ones as in the module
    docstring, pi/2 pulses ideal; no effect on the FID).
    The three broadcast against each other. F is even in wt, F(0) = 0, and F(wt) / (wt)^2 -> 1/2
    (FID) resp. 0 (n >= 1) as wt -> 0.
    """
    u = np.abs(np.asarray(wt, dtype=np.float64))  # F is even
    n = _as_pulse_numbers(n_pulses)
    rho = np.asarray(pi_over_t, dtype=np.float64)
    if not np.all(np.isfinite(rho) & (rho >= 0)):
        raise ValueError("pi_over_t must be finite and >= 0")
    u, n, rho = np.broadcast_arrays(u, n, rho)
    nf = np.maximum(n, 1).astype(np.float64)
    theta = u / (2.0 * nf)  # w t / 2n
    # phi = pi/2 - theta, reduced to [-pi/2, pi/2] (the kernel below is pi-periodic in phi)
    phi = 0.5 * np.pi - theta
    phi = phi - np.pi * np.round(phi / np.pi)
    dirichlet = nf * np.sinc(nf * phi / np.pi) / np.sinc(phi / np.pi)  # sin(n phi)/sin(phi)
    s = np.sin(0.5 * theta)  # sin(wt/4n)
    cpmg = 8.0 * s**4 * dirichlet**2
    if np.any(rho > 0):
        finite = 2.0 * dirichlet**2 * (np.cos(theta) - pi_pulse_envelope(u * rho)) ** 2
        cpmg = np.where(rho > 0, finite, cpmg)
    fid = 2.0 * np.sin(0.5 * u) ** 2
    return np.where(n == 0, fid, cpmg)
