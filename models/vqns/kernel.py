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

# Series coefficients (ascending powers), values and derivatives, all from attenuation.py's
# tuples. Rows of one (4, L) table are evaluated together (one Horner loop, four independent
# chains); shorter series are padded with leading zeros, which Horner passes through exactly.
_D_PSI = [j * c for j, c in enumerate(_PSI)][1:]  # psi'
_D_PHI = [j * c for j, c in enumerate(_PHI)][1:]  # phi'
_D_XM = [(j + 1) * c for j, c in enumerate(_M)]  # (x m)' = d/dx sum c_j x^(j+1)


def _table(*rows) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


_C_X = _table(_PSI, _D_PSI, _M, _D_XM)  # cells at |x| < 1/2: psi, psi', m, (x m)'
_C_Z = _table(_PSI, _D_PSI, _PHI, _D_PHI)  # G_n near the resonance: psi, psi', phi, phi'
_SMALL2 = _SMALL * _SMALL
_TWO_PI = 2.0 * math.pi

# cos/sin: fdlibm (k_sin.c, k_cos.c, e_rem_pio2.c medium path, always with the second
# Cody-Waite step, good to ~118 bits) for |theta| < 8e5, where 2^19 pi/2 keeps fn * _PIO2_1 and
# fn * _PIO2_2 exact; libm beyond. <= 1 ulp from libm (tested); about half libm's time here,
# and the quadrant is selected without branches (the phases w0 h are effectively random).
_INVPIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e00  # first 33 bits of pi/2
_PIO2_2 = 6.07710050630396597660e-11  # next 33 bits
_PIO2_2T = 2.02226624879595063154e-21  # pi/2 - _PIO2_1 - _PIO2_2
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11
_REDUCE_MAX = 8.0e5


@numba.njit(cache=True, inline="always")
def _cos_sin(th: float) -> tuple[float, float]:
    """(cos th, sin th), fdlibm's algorithm."""
    if not abs(th) < _REDUCE_MAX:
        return math.cos(th), math.sin(th)
    fn = math.floor(th * _INVPIO2 + 0.5)
    r0 = th - fn * _PIO2_1
    w = fn * _PIO2_2
    r = r0 - w
    w = fn * _PIO2_2T - ((r0 - r) - w)
    y0 = r - w  # th - fn pi/2 = y0 + y1, |y0| <= pi/4
    y1 = (r - y0) - w
    z = y0 * y0
    v = z * y0
    rs = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    s = y0 - ((z * (0.5 * y1 - v * rs) - y1) - v * _S1)
    ww = z * z
    rc = z * (_C1 + z * (_C2 + z * _C3)) + ww * ww * (_C4 + z * (_C5 + z * _C6))
    hz = 0.5 * z
    ww = 1.0 - hz
    c = ww + (((1.0 - ww) - hz) + (z * rc - y0 * y1))
    q = int(fn)
    sw = float(q & 1)  # odd quadrant: swap (exact: v * 0 + u * 1 = u)
    sg_c = 1.0 - float((q + 1) & 2)  # cos < 0 in quadrants 1, 2
    sg_s = 1.0 - float(q & 2)  # sin < 0 in quadrants 2, 3
    return sg_c * (c * (1.0 - sw) + s * sw), sg_s * (s * (1.0 - sw) + c * sw)


@numba.njit(cache=True, inline="always")
def _exp_neg(x: complex) -> complex:
    """e^-x for finite x."""
    r = math.exp(-x.real)
    c, s = _cos_sin(x.imag)
    return complex(r * c, -(r * s))


@numba.njit(cache=True, inline="always")
def _recip(z: complex) -> complex:
    """1/z for 1e-150 < |z| < 1e150 (here |z| >= 1/4), without Smith's branches."""
    d = 1.0 / (z.real * z.real + z.imag * z.imag)
    return complex(z.real * d, -(z.imag * d))


@numba.njit(cache=True, inline="always")
def _series(x: complex, c: np.ndarray, row: int) -> tuple[complex, complex]:
    """The series of rows `row` and `row + 1` of c at complex x, |x| < 1/2.

    Real coefficients at a complex point by the remainder of the division by
    (X - x)(X - conj x) = X^2 - 2 Re x X + |x|^2 (Knuth, TAOCP 4.6.4): b_j = c_j + 2 Re x b_(j+1)
    - |x|^2 b_(j+2), p(x) = b_1 x + (c_0 - |x|^2 b_2). Two real multiply-adds per term instead of
    complex Horner's eight operations. Its error propagators are (x^m - conj(x)^m)/(x - conj x),
    |.| <= m 2^(1-m) for |x| < 1/2, and the coefficients fall factorially: a few ulp, as Horner.
    """
    top = c.shape[1] - 1
    r = 2.0 * x.real
    s = -(x.real * x.real + x.imag * x.imag)
    a0 = c[row, top]
    b0 = c[row, top - 1]
    a1 = c[row + 1, top]
    b1 = c[row + 1, top - 1]
    for j in range(top - 2, -1, -1):
        a0, b0 = b0 + r * a0, c[row, j] + s * a0
        a1, b1 = b1 + r * a1, c[row + 1, j] + s * a1
    return a0 * x + b0, a1 * x + b1


@numba.njit(cache=True, inline="always")
def _pow_n(p: complex, n: int) -> complex:
    """p^n, n >= 1, by binary powering (relative error <~ 2 n ulp, |p| <= 1 here)."""
    acc = complex(1.0, 0.0)
    first = True
    while True:
        if n & 1:
            if first:
                acc = p
                first = False
            else:
                acc = acc * p
        n >>= 1
        if n == 0:
            return acc
        p = p * p


@numba.njit(cache=True, inline="always")
def _phi_direct(x: complex, e: complex) -> tuple[complex, complex]:
    """phi(x) = (e^-x - 1 + x)/x^2 and phi'(x) = (psi - 2 phi)/x, from e = e^-x, |x| >= 1/2."""
    inv = _recip(x)
    ph = (e - 1.0 + x) * inv * inv
    return ph, ((1.0 - e) * inv - 2.0 * ph) * inv


@numba.njit(cache=True, error_model="numpy")
def _j_kernel(w0, g, t, n, c_x, c_z, out_j, out_dj):
    for i in range(w0.shape[0]):
        ni = n[i]
        ti = t[i]
        if ni == 0:  # FID: J = t^2 phi(k t), J' = t^3 phi'(k t)
            x = complex(g[i] * ti, -w0[i] * ti)
            if x.real * x.real + x.imag * x.imag < _SMALL2:
                ph, dph = _series(x, c_z, 2)
            else:
                ph, dph = _phi_direct(x, _exp_neg(x))
            out_j[i] = (ti * ti) * ph
            out_dj[i] = (ti * ti * ti) * dph
            continue

        nf = float(ni)
        h = ti / (2.0 * nf)
        x = complex(g[i] * h, -w0[i] * h)
        # p = -e^-2x = e^-z, z = 2x + i pi reduced to Im z in [-pi, pi] (dz/dx = 2)
        im = x.imag * 2.0 + math.pi
        im = im - _TWO_PI * math.floor(im / _TWO_PI + 0.5)
        z = complex(x.real * 2.0, im)
        # e = e^-x, p = -e^2 (= e^-z), p^n by powering: one exp(complex) per element, except
        # near the resonance
        e = _exp_neg(x)
        p = -(e * e)

        if z.real * z.real + z.imag * z.imag < _SMALL2:  # G = n (n phi(nz) - phi(z)) / psi(z)^2
            ps_z, dps_z = _series(z, c_z, 0)
            ph_z, dph_z = _series(z, c_z, 2)
            nz = nf * z
            if nz.real * nz.real + nz.imag * nz.imag < _SMALL2:
                ph_nz, dph_nz = _series(nz, c_z, 2)
            else:
                # e^-nz from nz itself, not p^n: phi(nz) must see the e^-nz of the (rounded,
                # reduced) nz it divides by; p^n differs by the rounding of z times n.
                ph_nz, dph_nz = _phi_direct(nz, _exp_neg(nz))
            ips2 = _recip(ps_z * ps_z)
            gn = nf * (nf * ph_nz - ph_z) * ips2
            dgn = (nf * (nf * nf * dph_nz - dph_z) - 2.0 * gn * ps_z * dps_z) * ips2
        else:  # G = (n q + p^n - 1) / q^2, q = 1 - p, |q| > 0.39
            pn = _pow_n(p, ni)
            q = 1.0 - p
            iq2 = _recip(q * q)
            gn = (nf * q + pn - 1.0) * iq2
            dgn = (nf * (p - pn) - 2.0 * gn * q * p) * iq2

        if x.real * x.real + x.imag * x.imag < _SMALL2:  # cells: series
            ps, dps = _series(x, c_x, 0)
            hm, dxm = _series(x, c_x, 2)
            ps2 = ps * ps
            r = x * ps2  # x psi^2
            cells = nf * x * hm + x * x * ps2 * ps2 * gn
            dr = ps2 + 2.0 * x * ps * dps
        else:  # cells: from e = e^-x
            inv = _recip(x)
            em1 = e - 1.0
            e2m1 = em1 * (em1 + 2.0)
            r = em1 * em1 * inv
            xm = (2.0 + (4.0 * em1 - e2m1) * inv) * inv  # x m(x)
            cells = nf * xm + r * r * gn
            dr = (-2.0 * em1 * e - r) * inv
            dxm = 2.0 * (r - xm) * inv
        # c'(x) = n (x m)' + 2 r r' G + r^2 dG/dx, dG/dx = 2 dG/dz
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
    _j_kernel(w0, g, t, n_arr, _C_X, _C_Z, out_j, out_dj)
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
