"""The three-level emitter's g2 shape from its rates (docs/physics.md section 1.3).

States 1 (ground), 2 (excited), 3 (shelving); rates in 1/s: k12 pump (proportional to the local
excitation intensity), k21 radiative, k23 intersystem crossing, k31 shelf decay. The normalized
intensity correlation of one emitter is

    g2(tau) = 1 - (1 + a) exp(-|tau|/t1) + a exp(-|tau|/t2),      g2(0) = 0,

with -1/t1, -1/t2 the non-zero eigenvalues of the rate matrix. The simulator draws its photons
from these rates (firmware_sim/emitter.py) and the host models a pixel's histogram with the shape
at that pixel's pump (models/g2/local_shape.py): both take the shape from here.
"""

from __future__ import annotations

import numpy as np


def _check_real(k12, k21, k23, k31, s, disc) -> None:
    """ValueError naming the first rates whose rate matrix has complex or degenerate eigenvalues."""
    if not np.all(disc > 1e-12 * s * s):
        bad = np.flatnonzero(np.broadcast_to(~(disc > 1e-12 * s * s), disc.shape).ravel())[0]
        k = [float(np.broadcast_to(x, disc.shape).ravel()[bad]) for x in (k12, k21, k23, k31)]
        raise ValueError(f"the rate matrix of k12={k[0]:.4g}, k21={k[1]:.4g}, k23={k[2]:.4g}, k31={k[3]:.4g} (1/s) has "
                         "complex or degenerate eigenvalues (damped oscillation): g2 is not of the two-exponential form")


def two_exponential(k12, k21, k23, k31) -> np.ndarray:
    """Whether the rates (1/s, broadcast) give a two-exponential g2 (real, distinct eigenvalues), bool."""
    k12, k21, k23, k31 = (np.asarray(k, dtype=float) for k in (k12, k21, k23, k31))
    s = k12 + k21 + k23 + k31
    disc = s * s - 4.0 * (k12 * k23 + k12 * k31 + k21 * k31 + k23 * k31)
    return disc > 1e-12 * s * s


def g2_shape_from_rates(k12, k21, k23, k31) -> tuple:
    """(a, t1 in s, t2 in s) of g2(tau) = 1 - (1 + a) e^{-|tau|/t1} + a e^{-|tau|/t2} for rates in 1/s.

    The rates broadcast (floats in, floats out; arrays in, arrays out). ValueError where the rate
    matrix has complex or degenerate eigenvalues (a damped oscillation, not of this form).
    """
    k12, k21, k23, k31 = (np.asarray(k, dtype=float) for k in (k12, k21, k23, k31))
    # The non-zero eigenvalues of M are -lam1, -lam2: lam^2 - s lam + p = 0 (trace and the sum
    # of the principal 2x2 minors of -M).
    s = k12 + k21 + k23 + k31
    p = k12 * k23 + k12 * k31 + k21 * k31 + k23 * k31
    disc = s * s - 4.0 * p
    _check_real(k12, k21, k23, k31, s, disc)
    lam1 = 0.5 * (s + np.sqrt(disc))
    lam2 = p / lam1
    # p2(tau | p(0) = ground) / p2_ss = g2: g2(0) = 0 and g2'(0+) = k12 / p2_ss fix a.
    a = (lam2 - k31 + k12 * k23 / k31) / (lam1 - lam2)
    t1, t2 = 1.0 / lam1, 1.0 / lam2
    if a.ndim == 0:
        return float(a), float(t1), float(t2)
    return a, t1, t2


def g2_shape_jacobian(k12, k21, k23, k31) -> np.ndarray:
    """d(a, t1, t2)/d(k12, k21, k23, k31) of `g2_shape_from_rates`, shape (3, 4) + the rates' broadcast shape
    (row a in s, rows t1, t2 in s^2; rates in 1/s). ValueError where g2_shape_from_rates raises one."""
    k12, k21, k23, k31 = np.broadcast_arrays(*(np.asarray(k, dtype=float) for k in (k12, k21, k23, k31)))
    one, zero = np.ones_like(k12), np.zeros_like(k12)
    s = k12 + k21 + k23 + k31
    p = k12 * k23 + k12 * k31 + k21 * k31 + k23 * k31
    disc = s * s - 4.0 * p
    _check_real(k12, k21, k23, k31, s, disc)
    r = np.sqrt(disc)
    lam1 = 0.5 * (s + r)
    lam2 = p / lam1
    num = lam2 - k31 + k12 * k23 / k31
    a = num / (lam1 - lam2)
    # derivatives along (k12, k21, k23, k31), stacked on a leading axis of 4
    ds = np.stack([one, one, one, one])
    dp = np.stack([k23 + k31, k31, k12 + k31, k12 + k21 + k23])
    dr = (s * ds - 2.0 * dp) / r
    dlam1 = 0.5 * (ds + dr)
    dlam2 = (dp - lam2 * dlam1) / lam1
    dnum = dlam2 + np.stack([k23 / k31, zero, k12 / k31, -one - k12 * k23 / (k31 * k31)])
    da = (dnum - a * (dlam1 - dlam2)) / (lam1 - lam2)
    return np.stack([da, -dlam1 / (lam1 * lam1), -dlam2 / (lam2 * lam2)])


__all__ = ["g2_shape_from_rates", "g2_shape_jacobian"]
