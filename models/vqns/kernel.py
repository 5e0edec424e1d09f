"""Fast Numba kernel for the fit: J of one symmetrized Lorentzian and its derivative dJ/dk.

physics.md section 3; the math is that of `attenuation.py` (read its docstring first). With
k = g - i w0, chi(t) = a Re J and J is holomorphic in k (an entire function: psi, phi, m are
entire and G_n is a polynomial in p), so one complex derivative J' = dJ/dk gives both gradients:

    d chi / d g  = a Re J'          (dk/dg = 1)
    d chi / d w0 = a Re(-i J') = a Im J'   (dk/dw0 = -i)
    d chi / d a  = Re J.

Per element (scalar loop, one pass, no temporaries):

    FID (n = 0):  J = t^2 phi(k t),                       J' = t^3 phi'(k t)
    n >= 1:       J = h^2 c(x),  x = k h,  h = t/2n,      J' = h^3 c'(x)
                  c(x) = n x m(x) + r(x)^2 G_n(p),   r = x psi(x)^2,   p = -e^-2x = e^-z,
                  c'(x) = n (x m)'(x) + 2 r r' G_n + r^2 dG_n/dx,      dG_n/dx = 2 dG_n/dz.

The helpers and their analytic derivatives, in the same two regimes as `attenuation.py`:

* |x| < 1/2: the Taylor series of `attenuation.py` (`_PSI`, `_PHI`, `_M`, imported, one source
  of truth) by Horner in the same order, and for the derivatives the same series differentiated
  term by term (coefficients j c_j, and (j+1) c_j for (x m)');
* |x| >= 1/2, from e = e^-x:  psi = (1 - e)/x,  psi' = (e - psi)/x;
  phi = (e - 1 + x)/x^2,  phi' = (psi - 2 phi)/x;  (x m)' = 2 (psi^2 - m) = 2 (r - x m)/x;
  r = (e - 1)^2/x,  r' = (-2 (e - 1) e - r)/x.
* G_n, with z = 2x + i pi reduced to |Im z| <= pi (dz/dx = 2, the reduction is a constant
  shift): near the resonance (|z| < 1/2) G = n (n phi(nz) - phi(z)) / psi(z)^2,
  dG/dz = [n (n^2 phi'(nz) - phi'(z)) - 2 G psi(z) psi'(z)] / psi(z)^2;
  elsewhere (|1 - p| > 0.39) with q = 1 - e^-z:  G = (n q + e^-nz - 1)/q^2,
  dG/dz = [n (e^-z - e^-nz) - 2 G q e^-z] / q^2.

The value J repeats `attenuation.py`'s operations in the same order, so it matches its numpy
result to rounding (tests: <= 1e-12 relative where chi > 1e-6 a t^2, <= 1e-14 a t^2 absolute).
No subtraction of O(1) numbers appears in the derivatives either (the direct forms are used
only for |x| >= 1/2, where they lose at most a few tens of ulp), so J' is as stable as J:
tests compare it with torch autograd of `attenuation_torch` and with 4th-order central
differences, <= 1e-8 relative.

Public API: `lorentzian_j(w0, g, t, n) -> (J, dJ_dk)` on flat arrays, and
`chi_and_grads(a, w0, g, t, n) -> (chi, dchi_da, dchi_dg, dchi_dw0)` with numpy broadcasting.
Units: a rad^2/s^2, w0 and g rad/s, t s; J in s^2, dJ/dk in s^3.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike

from nvscope.models.vqns.attenuation import _M, _PHI, _PSI, _SMALL

__all__ = ["lorentzian_j", "chi_and_grads"]

# Series coefficients (ascending powers), value and derivative, all from attenuation.py's tuples.
_C_PSI = np.array(_PSI, dtype=np.float64)
_C_PHI = np.array(_PHI, dtype=np.float64)
_C_M = np.array(_M, dtype=np.float64)
_D_PSI = np.array([j * c for j, c in enumerate(_PSI)][1:], dtype=np.float64)  # psi'
_D_PHI = np.array([j * c for j, c in enumerate(_PHI)][1:], dtype=np.float64)  # phi'
_D_XM = np.array([(j + 1) * c for j, c in enumerate(_M)], dtype=np.float64)  # (x m)'

_TWO_PI = 2.0 * math.pi


@numba.njit(cache=True, inline="always")
def _cexp(z: complex) -> complex:
    """e^z for finite z (no inf/nan special cases, hence cheaper than cmath.exp)."""
    r = math.exp(z.real)
    return complex(r * math.cos(z.imag), r * math.sin(z.imag))


@numba.njit(cache=True, inline="always")
def _horner(x: complex, c: np.ndarray) -> complex:
    """sum_j c_j x^j, Horner from the top, in `attenuation._horner`'s order."""
    acc = x * c[c.shape[0] - 1] + c[c.shape[0] - 2]
    for i in range(c.shape[0] - 3, -1, -1):
        acc = acc * x + c[i]
    return acc


@numba.njit(cache=True, inline="always")
def _psi_d(x: complex, c_psi: np.ndarray, d_psi: np.ndarray) -> tuple[complex, complex]:
    """psi(x) = (1 - e^-x)/x and psi'(x)."""
    if abs(x) < _SMALL:
        return _horner(x, c_psi), _horner(x, d_psi)
    e = _cexp(-x)
    ps = (1.0 - e) / x
    return ps, (e - ps) / x


@numba.njit(cache=True, inline="always")
def _phi_d(x: complex, c_phi: np.ndarray, d_phi: np.ndarray) -> tuple[complex, complex]:
    """phi(x) = (e^-x - 1 + x)/x^2 and phi'(x) = (psi - 2 phi)/x."""
    if abs(x) < _SMALL:
        return _horner(x, c_phi), _horner(x, d_phi)
    e = _cexp(-x)
    ph = (e - 1.0 + x) / x / x
    return ph, ((1.0 - e) / x - 2.0 * ph) / x


@numba.njit(cache=True)
def _j_kernel(w0, g, t, n, c_psi, d_psi, c_phi, d_phi, c_m, d_xm, out_j, out_dj):
    for i in range(w0.shape[0]):
        ni = n[i]
        if ni == 0:
            tt = t[i]
            x = complex(g[i] * tt, -w0[i] * tt)
            ph, dph = _phi_d(x, c_phi, d_phi)
            out_j[i] = (tt * tt) * ph
            out_dj[i] = (tt * tt * tt) * dph
            continue

        nf = float(ni)
        h = t[i] / (2.0 * nf)
        x = complex(g[i] * h, -w0[i] * h)

        # G_n(p) at p = -e^-2x = e^-z, z = 2x + i pi reduced to Im z in [-pi, pi]
        im = x.imag * 2.0 + math.pi
        im = im - _TWO_PI * np.rint(im / _TWO_PI)
        z = complex(x.real * 2.0, im)
        if abs(z) < _SMALL:
            ps_z, dps_z = _psi_d(z, c_psi, d_psi)
            ph_nz, dph_nz = _phi_d(nf * z, c_phi, d_phi)
            ph_z, dph_z = _phi_d(z, c_phi, d_phi)
            ps2_z = ps_z * ps_z
            gn = nf * (nf * ph_nz - ph_z) / ps2_z
            dgn = (nf * (nf * nf * dph_nz - dph_z) - 2.0 * gn * ps_z * dps_z) / ps2_z
        else:
            ez = _cexp(-z)
            q = 1.0 - ez
            enz = _cexp(-nf * z)
            q2 = q * q
            gn = (nf * q + enz - 1.0) / q2
            dgn = (nf * (ez - enz) - 2.0 * gn * q * ez) / q2
        # dG/dx = 2 dG/dz

        if abs(x) < _SMALL:
            ps = _horner(x, c_psi)
            dps = _horner(x, d_psi)
            ps2 = ps * ps
            cells = nf * x * _horner(x, c_m) + x * x * ps2 * ps2 * gn
            r = x * ps2
            dr = ps2 + 2.0 * x * ps * dps
            dxm = _horner(x, d_xm)
        else:
            e = _cexp(-x)
            em1 = e - 1.0
            e2m1 = em1 * (em1 + 2.0)
            r = em1 * em1 / x
            xm = (2.0 + (4.0 * em1 - e2m1) / x) / x
            cells = nf * (2.0 + (4.0 * em1 - e2m1) / x) / x + r * r * gn
            dr = (-2.0 * em1 * e - r) / x
            dxm = 2.0 * (r - xm) / x
        dcells = nf * dxm + 2.0 * r * dr * gn + 2.0 * (r * r) * dgn
        out_j[i] = (h * h) * cells
        out_dj[i] = (h * h * h) * dcells


def lorentzian_j(
    w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """J (s^2) and dJ/dk (s^3), complex128, per element of flat equal-length arrays.

    w0: centre (rad/s), g: half width (rad/s, >= 0 physically; the formula is analytic, so
    g < 0 is evaluated too), t: sequence length (s), n: pulses (int, 0 = FID, 1 = echo,
    CPMG-n). chi = a Re J, dchi/dg = a Re J', dchi/dw0 = a Im J' (k = g - i w0).
    """
    w0, g, t = (np.ascontiguousarray(v, dtype=np.float64) for v in (w0, g, t))
    n_arr = np.asarray(n)
    if n_arr.dtype.kind not in "iub":
        if np.any(n_arr != np.round(n_arr)):
            raise ValueError("n must be integers")
    n_arr = np.ascontiguousarray(n_arr, dtype=np.int64)
    if not (w0.ndim == g.ndim == t.ndim == n_arr.ndim == 1):
        raise ValueError("lorentzian_j takes flat (1-d) arrays; use chi_and_grads to broadcast")
    if not (w0.shape == g.shape == t.shape == n_arr.shape):
        raise ValueError("w0, g, t and n must have the same length")
    if n_arr.size and n_arr.min() < 0:
        raise ValueError("n must be >= 0")
    out_j = np.empty(w0.shape, dtype=np.complex128)
    out_dj = np.empty(w0.shape, dtype=np.complex128)
    _j_kernel(w0, g, t, n_arr, _C_PSI, _D_PSI, _C_PHI, _D_PHI, _C_M, _D_XM, out_j, out_dj)
    return out_j, out_dj


def chi_and_grads(
    a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """chi, dchi/da, dchi/dg, dchi/dw0 (float64, broadcast shape of the five arguments).

    Units as `attenuation.attenuation`: a rad^2/s^2, w0 and g rad/s, t s, n integer pulses.
    E.g. a, w0, g of shape (restarts, lorentzians, 1, 1) against t, n of shape
    (1, 1, sequences, times); sum over the lorentzian axis for the total chi.
    """
    a_b, w0_b, g_b, t_b, n_b = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64),
        np.asarray(w0, dtype=np.float64),
        np.asarray(g, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(n),
    )
    shape = a_b.shape
    j, dj = lorentzian_j(w0_b.ravel(), g_b.ravel(), t_b.ravel(), n_b.ravel())
    j = j.reshape(shape)
    dj = dj.reshape(shape)
    re_j = j.real.copy()
    return a_b * re_j, re_j, a_b * dj.real, a_b * dj.imag
