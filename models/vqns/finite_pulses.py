"""J of one symmetrized Lorentzian under CPMG-n with pi pulses of finite length, and dJ/dk.

docs/physics.md section 3.2; read `attenuation.py` (the ideal-pulse derivation) and `kernel.py`
first: same J, same k = g - i w0, chi = a Re J, J holomorphic in k (one complex J' = dJ/dk gives
dchi/dg = a Re J' and dchi/dw0 = a Im J').

Pulses. CPMG-n (n >= 1) over total time t: pi pulses of length tp centred at the CPMG times
t (2j - 1)/2n; the pi/2 pulses stay ideal, acting at their centres (times 0 and t: the time the
kernel's t measures). During a pi pulse the Bloch vector turns at a constant rate and the
pure-dephasing switching function y(s) goes from +-1 to -+1 as cos(pi u / tp), u from the
pulse's start (Cywinski et al., PRB 77, 174509 (2008), finite pulses; the toggling frame's z
component). Requires tp <= t/n (the pulses may touch, not overlap).

Derivation. With h = t/2n, CPMG-n is n cells of length 2h with signs +, -, +, ...; each cell
f(u), u in [0, 2h]: +1 on [0, a], cos(pi (u - a)/tp) on [a, a + tp], -1 on [a + tp, 2h],
a = h - tp/2 (the free time on either side of the pulse), and f(2h - u) = -f(u). As in
attenuation.py, J = sum over cells (J_cell) + sum over pairs of cells d apart; a pair gives
(-1)^d e^{-2khd} P Q with P = int f(u) e^{-ku} du, Q = int f(v) e^{kv} dv = -e^{2kh} P (the
antisymmetry), so with p = -e^{-2kh} and the same G_n(p) = sum_j (n-1-j) p^j:

    J = n J_cell + P^2 G_n(p).

The cell, from its three pieces (two flat, one ramp; kappa = k tp, y = k a, b = a + tp):

    J_cell = a^2 [y m(y) + kappa psi(kappa) psi(y)^2] + 2 tp a c(kappa) psi(y) + tp^2 r(kappa)
    P      = k a b psi(k b) psi(y) + tp e^{-y} c(kappa)

    c(kappa) = (1 + e^{-kappa}) kappa / (kappa^2 + pi^2)     (int_0^1 cos(pi s) e^{-kappa s} ds)
    r(kappa) = kappa (1/2 - c) / (kappa^2 + pi^2)            (the ramp with itself)

(psi, phi, m of attenuation.py). The flat pieces' 2 phi(y) - e^{-kappa} psi(y)^2 are written as
y m(y) + (1 - e^{-kappa}) psi(y)^2, so nothing cancels at small |k| (every term is O(k) with the
same sign there, as J_cell -> 0: the cell's f integrates to 0). c and r have removable 0/0 at
kappa = +-i pi (the ramp's own frequency, w0 tp = -+pi): with delta = kappa -+ i pi, s = +-1,
|delta| < 1/2,

    c = kappa psi(delta) / (delta + 2 s i pi),
    r = kappa [1 + 2 s i pi phi(delta) - 2 psi(delta)] / (2 (delta + 2 s i pi)^2).

Derivatives (d/dk: dy = a, dkappa = tp, dx = h): (y m)', psi' and phi' as in kernel.py;
(kappa psi)' = e^{-kappa}; c' = (1 + e^{-kappa} - kappa e^{-kappa} - 2 kappa c)/(kappa^2 + pi^2),
r' = (pi^2 - kappa^2)(1/2 - c)/(kappa^2 + pi^2)^2 - kappa c'/(kappa^2 + pi^2) (and the
near-resonance forms differentiated); dP/dk = a b [e^{-kb} psi(y) + e^{-y} psi(kb) -
psi(y) psi(kb)] + tp e^{-y} (tp c' - a c); dG_n/dk = 2 h dG_n/dz (kernel.py).

tp -> 0 gives a = b = h, c = r = 0 and attenuation.py's J = h^2 [n x m(x) + x^2 psi(x)^4 G_n].
Tested (tests/models/test_vqns_finite_pulses.py) against that limit, against numerical
quadrature of (1/pi) int S(w) F(w)/w^2 dw with F from a brute-force Fourier integral of y(s),
and dJ/dk against finite differences.

A scalar numba loop (libm exp: three or four complex exponentials per element), split over
threads as kernel.py's; slower per element than kernel.py's vectorized ideal kernel (see
kernel.py's docstring for the measured numbers); only elements with finite pulses come here.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike

from nvscope.models.vqns.kernel import (_C_X, _C_Z, _SMALL2, _exp_neg, _g_far, _g_near, _phi_direct, _reduce_z,
                                        _run_threads, _series)

__all__ = ["finite_pulse_j", "finite_pulse_j_values"]

_PI = math.pi
_PI2 = math.pi * math.pi


@numba.njit(cache=True, inline="always")
def _psi_pair(x: complex, e: complex, c_x: np.ndarray, ntx: int) -> tuple[complex, complex]:
    """psi(x) = (1 - e^-x)/x and psi'(x) = (e^-x - psi)/x, from e = e^-x."""
    if x.real * x.real + x.imag * x.imag < _SMALL2:
        return _series(x, c_x, 0, ntx)
    inv = 1.0 / x
    ps = (1.0 - e) * inv
    return ps, (e - ps) * inv


@numba.njit(cache=True, inline="always")
def _xm_pair(x: complex, e: complex, c_x: np.ndarray, ntx: int) -> tuple[complex, complex]:
    """x m(x) = 2 phi(x) - psi(x)^2 and (x m)' (kernel.py's `_cells_direct`), from e = e^-x."""
    if x.real * x.real + x.imag * x.imag < _SMALL2:
        hm, dxm = _series(x, c_x, 2, ntx)
        return x * hm, dxm
    inv = 1.0 / x
    em1 = e - 1.0
    e2m1 = em1 * (em1 + 2.0)  # e^-2x - 1
    r = em1 * em1 * inv
    xm = (2.0 + (4.0 * em1 - e2m1) * inv) * inv
    return xm, 2.0 * (r - xm) * inv


@numba.njit(cache=True, inline="always")
def _ramp(kap: complex, e: complex, c_x: np.ndarray, ntx: int, c_z: np.ndarray,
          ntz: int) -> tuple[complex, complex, complex, complex]:
    """c(kappa), c'(kappa), r(kappa), r'(kappa) of the module docstring (no 0/0 at kappa = +-i pi),
    from e = e^-kappa."""
    sg = 1.0 if kap.imag >= 0.0 else -1.0
    d = kap - complex(0.0, sg * _PI)
    if d.real * d.real + d.imag * d.imag < _SMALL2:
        ps, dps = _series(d, c_x, 0, ntx)
        ph, dph = _series(d, c_z, 2, ntz)
        iden = 1.0 / (d + complex(0.0, 2.0 * sg * _PI))
        c = kap * ps * iden
        dc = (ps + kap * dps) * iden - c * iden
        two_i_pi = complex(0.0, 2.0 * sg * _PI)
        nn = 1.0 + two_i_pi * ph - 2.0 * ps
        dnn = two_i_pi * dph - 2.0 * dps
        r = 0.5 * kap * nn * iden * iden
        dr = 0.5 * (nn + kap * dnn) * iden * iden - 2.0 * r * iden
        return c, dc, r, dr
    i_d = 1.0 / (kap * kap + _PI2)
    op = 1.0 + e
    c = op * kap * i_d
    dc = (op - kap * e - 2.0 * kap * c) * i_d
    half = 0.5 - c
    r = kap * i_d * half
    dr = (_PI2 - kap * kap) * i_d * i_d * half - kap * dc * i_d
    return c, dc, r, dr


@numba.njit(cache=True, inline="always")
def _element(w0: float, g: float, t: float, ni: int, tp: float, c_x: np.ndarray, c_z: np.ndarray, ntx: int,
             ntz: int) -> tuple[complex, complex]:
    """(J, J') of CPMG-n (n >= 1) with pi pulses of length tp (0 < tp <= t/n)."""
    nf = float(ni)
    h = t / (2.0 * nf)
    a = max(h - 0.5 * tp, 0.0)
    b = a + tp
    k = complex(g, -w0)
    y = k * a
    kap = k * tp
    x = k * h
    ea = _exp_neg(y)
    ek = _exp_neg(kap)
    eb = ea * ek  # e^-kb
    # G_n(p), p = -e^-2x, and dG_n/dz (kernel.py's scalar path)
    z = _reduce_z(x)
    if z.real * z.real + z.imag * z.imag < _SMALL2:
        nz = nf * z
        if nz.real * nz.real + nz.imag * nz.imag < _SMALL2:
            ph_nz, dph_nz = _series(nz, c_z, 2, ntz)
        else:
            ph_nz, dph_nz = _phi_direct(nz, _exp_neg(nz))
        gn, dgn = _g_near(nf, z, ph_nz, dph_nz, c_z, ntz)
    else:
        e = _exp_neg(x)
        pn = _exp_neg(complex(2.0 * nf * x.real, 2.0 * nf * x.imag))
        gn, dgn = _g_far(nf, -(e * e), -pn if ni & 1 else pn)
    # the cell
    psy, dpsy = _psi_pair(y, ea, c_x, ntx)
    xmy, dxmy = _xm_pair(y, ea, c_x, ntx)
    psk, _ = _psi_pair(kap, ek, c_x, ntx)
    c, dc, r, dr = _ramp(kap, ek, c_x, ntx, c_z, ntz)
    psy2 = psy * psy
    j_cell = a * a * (xmy + kap * psk * psy2) + 2.0 * tp * a * c * psy + tp * tp * r
    dj_cell = (a * a * a * dxmy + a * a * (tp * ek * psy2 + 2.0 * a * kap * psk * psy * dpsy)
               + 2.0 * tp * a * (tp * dc * psy + a * c * dpsy) + tp * tp * tp * dr)
    # P
    psb, _ = _psi_pair(k * b, eb, c_x, ntx)
    pp = k * a * b * psb * psy + tp * ea * c
    dpp = a * b * (eb * psy + ea * psb - psy * psb) + tp * ea * (tp * dc - a * c)
    j = nf * j_cell + pp * pp * gn
    dj = nf * dj_cell + 2.0 * pp * dpp * gn + pp * pp * (2.0 * h) * dgn
    return j, dj


def _build_kernel(c_x: np.ndarray, c_z: np.ndarray, grads: bool):  # type: ignore[no-untyped-def]
    """The loop over elements, tables and `grads` frozen in as constants (grads=False: J alone,
    the derivative's arithmetic removed as dead code, as in kernel.py)."""
    ntx = c_x.shape[1]
    ntz = c_z.shape[1]

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def kernel(w0, g, t, n, tp, out_j, out_dj):  # type: ignore[no-untyped-def]
        for i in range(w0.shape[0]):
            jj, dj = _element(w0[i], g[i], t[i], n[i], tp[i], c_x, c_z, ntx, ntz)
            out_j[i] = jj
            if grads:
                out_dj[i] = dj

    return kernel


_j_kernel = _build_kernel(_C_X, _C_Z, True)
_j_values_kernel = _build_kernel(_C_X, _C_Z, False)


def _j(w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, pi_s: ArrayLike, grads: bool,
       workers: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    w0, g, t, tp = (np.ascontiguousarray(v, dtype=np.float64) for v in (w0, g, t, pi_s))
    n_arr = np.asarray(n)
    if n_arr.dtype.kind not in "iub" and np.any(n_arr != np.round(n_arr)):
        raise ValueError("n must be integers")
    n_arr = np.ascontiguousarray(n_arr, dtype=np.int64)
    if not (w0.ndim == g.ndim == t.ndim == n_arr.ndim == tp.ndim == 1):
        raise ValueError("finite_pulse_j takes flat (1-d) arrays; kernel.chi_and_grads broadcasts")
    if not (w0.shape == g.shape == t.shape == n_arr.shape == tp.shape):
        raise ValueError("w0, g, t, n and pi_s must have the same length")
    if n_arr.size:
        if n_arr.min() < 1:
            raise ValueError("finite pulses need n >= 1 pi pulses (the FID has none)")
        if not (np.all(np.isfinite(tp)) and tp.min() > 0):
            raise ValueError("the pi-pulse length pi_s must be > 0 s here (0: the ideal kernel)")
        over = tp * n_arr > t * (1.0 + 1e-9)
        if np.any(over):
            i = int(np.argmax(over))
            raise ValueError(f"CPMG-{n_arr[i]} over t = {t[i]:.4g} s cannot hold {n_arr[i]} pi pulses of "
                             f"{tp[i]:.3g} s (they would overlap)")
    out_j = np.empty(w0.shape, dtype=np.complex128)
    out_dj = np.empty(w0.shape if grads else (0,), dtype=np.complex128)
    if out_j.size:
        _run_threads(_j_kernel if grads else _j_values_kernel, (w0, g, t, n_arr, tp), (out_j, out_dj), workers)
    return out_j, (out_dj if grads else None)


def finite_pulse_j(w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, pi_s: ArrayLike, *,
                   workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """J (s^2) and dJ/dk (s^3), complex128, of CPMG-n with pi pulses of pi_s (s) per element of flat
    arrays of one length: w0, g in rad/s, t in s, n >= 1 integers, 0 < pi_s <= t/n; workers as
    `kernel.lorentzian_j`."""
    j, dj = _j(w0, g, t, n, pi_s, True, workers)
    assert dj is not None
    return j, dj


def finite_pulse_j_values(w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, pi_s: ArrayLike, *,
                          workers: int | None = None) -> np.ndarray:
    """J (s^2), complex128, as `finite_pulse_j` without the derivative."""
    return _j(w0, g, t, n, pi_s, False, workers)[0]
