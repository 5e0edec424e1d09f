"""Fast kernel for the VQNS fit: J of one symmetrized Lorentzian and its derivative dJ/dk.

docs/physics.md section 3.2; the math is that of `attenuation.py` (read its docstring first), with the
same branches, thresholds and Taylor coefficients (imported from it: one source of truth). With
k = g - i w0, chi(t) = a Re J, and J is holomorphic in k (entire: psi, phi, m are entire and G_n
is a polynomial in p), so one complex derivative J' = dJ/dk gives both gradients:

    d chi / d a  = Re J,    d chi / d g = a Re J'  (dk/dg = 1),
    d chi / d w0 = a Re(-i J') = a Im J'           (dk/dw0 = -i).

Formula (attenuation.py), and its analytic derivative:

    FID (n = 0):  J = t^2 phi(k t),                     J' = t^3 phi'(k t)
    n >= 1:       J = h^2 c(x),  x = k h,  h = t/2n,    J' = h^3 c'(x)
                  c = n x m(x) + r^2 G_n(p),  r = x psi(x)^2,  p = -e^-2x = e^-z,
                  c' = n (x m)' + 2 r r' G_n + r^2 dG_n/dx,   dG_n/dx = 2 dG_n/dz

* |x| < 1/2: the Taylor series of psi, phi, m (`attenuation._PSI`, `_PHI`, `_M`) and, for the
  derivatives, the same series differentiated term by term (j c_j; (j+1) c_j for (x m)'),
  r' = psi^2 + 2 x psi psi';
* |x| >= 1/2, from e = e^-x: phi = (e - 1 + x)/x^2, phi' = (psi - 2 phi)/x;
  r = (e - 1)^2/x, r' = (-2 (e - 1) e - r)/x; x m = (2 + (4 (e-1) - (e^-2x - 1))/x)/x,
  (x m)' = 2 (psi^2 - m) = 2 (r - x m)/x;
* G_n, z = 2x + i pi reduced to |Im z| <= pi (a constant shift: dz/dx = 2): near the CPMG
  resonance (|z| < 1/2) G = n (n phi(nz) - phi(z))/psi(z)^2 and
  dG/dz = [n (n^2 phi'(nz) - phi'(z)) - 2 G psi psi'(z)]/psi(z)^2; elsewhere, q = 1 - p,
  G = (n q + p^n - 1)/q^2 and dG/dz = [n (p - p^n) - 2 G q p]/q^2 (dp/dz = -p).

Nothing in the derivatives subtracts O(1) numbers that the value does not (the closed forms are
used only for |x| >= 1/2, where they lose at most a few tens of ulp), so J' is as stable as J.

Speed. One element costs one or two complex exponentials and ~40 complex operations, so a scalar
loop is bound by libm calls and by the latency of its branches. The kernel therefore sorts each
block of 1024 elements into the formula's branches (A: FID with |k t| >= 1/2; B: |x|, |z| >= 1/2;
C: |x| < 1/2 <= |z|; D: |z| < 1/2 <= |nz|) and runs each as a branch-free loop that LLVM
vectorizes (AVX2: 4 lanes), with exp, cos and sin inlined from fdlibm (<= 1 ulp from libm) and
the series unrolled (the coefficient tables are compile-time constants); the few elements
outside these (FID with |k t| < 1/2, |nz| < 1/2 at the resonance, g < 0, |w0 t| >= 4e5 or
n >= 1e5) go through a scalar path with libm. The roundings differ from attenuation.py's in
places: p = -e^2 and p^n = (-1)^n e^-2nx are taken from x itself instead of from the reduced z
(consistent with each other to O(n) ulp for any w0 t), the series use Knuth's real recurrence
for a complex point instead of complex Horner, and divisions are products with a reciprocal.
Large arrays are split over threads (the kernel releases the GIL). The first call compiles for
~15-20 s; numba caches the result on disk (__pycache__), later processes load it in ~0.6 s.

Accuracy (tests/models/test_vqns_kernel.py, measured): Re J against `attenuation.attenuation`
<= 2e-13 relative where chi > 1e-6 a t^2 and Re J >= 1e-2 |J|, <= 3e-16 a t^2 absolute
everywhere; where Re J << |J| (g t << 1: Re J ~ g t |J|) up to 5e-12 relative, i.e. 2e-15 |J|,
which is the size of either implementation's own error there (each is up to ~1e-11 relative off
a 60-digit value at such points). J' against torch autograd of `attenuation_torch` <= 6e-13
relative, against 4th-order central differences <= 1e-8 (their own error).

Speed (2-core AMD EPYC VM, 1e5..1e6 elements, g t in 1e-3..1e2, w0 t in 0..1e3, n in
{0, 1, 2, 4, ..., 64}): ~65-75 ns/element on one thread, ~36-41 on two, against ~570-700 for
`attenuation_torch` forward + backward (two threads): 15-19x.

API: `lorentzian_j(w0, g, t, n) -> (J, dJ_dk)` on flat arrays; `chi_and_grads(a, w0, g, t, n,
pi_s=0.0) -> (chi, dchi_da, dchi_dg, dchi_dw0)` with numpy broadcasting; `lorentzian_j_values` and
`chi_values` the same without the derivatives (a second kernel built from the same source with
the derivative's stores switched off at compile time, where nobody asks for gradients: LM trial
steps, predictions; benchmarks/bench_vqns.py prints the speed-up). Units: a rad^2/s^2, w0 and g
rad/s, t s; J in s^2, dJ/dk in s^3.

Finite pi pulses: where `pi_s` > 0 (s, broadcast like n) and n >= 1, chi_and_grads and chi_values
take J and J' from models/vqns/finite_pulses.py (pi pulses of that length, cos-ramped switching
function, pi/2 pulses ideal); every other element goes through this kernel exactly as without pi_s.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import ArrayLike

from nvscope.models.vqns.attenuation import _M, _PHI, _PSI, _SMALL

__all__ = ["lorentzian_j", "lorentzian_j_values", "chi_and_grads", "chi_values"]

# ------------------------------------------------------------------------ series tables
# Taylor coefficients (ascending powers) from attenuation.py's tuples (one source of truth) and
# the same series differentiated term by term. Rows are padded with zeros at the top so that a
# table's rows share one length; the evaluation passes leading zeros through exactly.
_D_PSI = [j * c for j, c in enumerate(_PSI)][1:]  # psi'
_D_PHI = [j * c for j, c in enumerate(_PHI)][1:]  # phi'
_D_XM = [(j + 1) * c for j, c in enumerate(_M)]  # (x m)' = d/dx sum_j c_j x^(j+1)


def _table(*rows: tuple[float, ...] | list[float]) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.float64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


_C_X = _table(_PSI, _D_PSI, _M, _D_XM)  # cells at |x| < 1/2: psi, psi', m, (x m)'
_C_Z = _table(_PSI, _D_PSI, _PHI, _D_PHI)  # psi, psi', phi, phi' (FID; G_n at the resonance)
_SMALL2 = _SMALL * _SMALL
_TWO_PI = 2.0 * math.pi
_INV_TWO_PI = 1.0 / _TWO_PI

# The vector loops take elements with g >= 0, g t < _VEC_DECAY, |w0 t| < _VEC_PHASE and
# n < _VEC_N; the scalar path takes every element (libm exp, cos, sin).
_VEC_PHASE = 4.0e5
_VEC_DECAY = 1.0e6
_VEC_N = 100_000
_CHUNK = 1024  # elements classified, gathered and computed per block (buffers stay in cache)

# ----------------------------------------------------------- e^-x for the vector loops
# libm calls keep LLVM from vectorizing a loop, so the vector loops inline fdlibm's exp
# (e_exp.c) and cos/sin (k_sin.c, k_cos.c, and e_rem_pio2.c's medium path, here always with its
# second Cody-Waite step, good to ~118 bits), written without branches: <= 1 ulp from libm
# (tested). The reduction is exact for |Im x| < 2^19 pi/2 (fn * _PIO2_1, fn * _PIO2_2 exact).
_INVLN2 = 1.44269504088896338700e00
_LN2HI = 6.93147180369123816490e-01
_LN2LO = 1.90821492927058770002e-10
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08
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


@intrinsic
def _bits_to_f64(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float64 whose IEEE bit pattern is the int64 `bits` (an LLVM bitcast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@numba.njit(cache=True, inline="always")
def _exp_neg_v(x: complex) -> complex:
    """e^-x without branches or calls, for -700 < Re x and |Im x| < 2^19 pi/2 (Re x > 700
    gives e^-700 ~ 1e-304, which in this kernel only ever meets O(1) numbers)."""
    # e^-Re x, fdlibm e_exp.c
    y = min(max(-x.real, -700.0), 700.0)
    kf = math.floor(y * _INVLN2 + 0.5)
    hi = y - kf * _LN2HI
    lo = kf * _LN2LO
    r = hi - lo
    r2 = r * r
    c = r - r2 * (_P1 + r2 * (_P2 + r2 * (_P3 + r2 * (_P4 + r2 * _P5))))
    mag = (1.0 - ((lo - (r * c) / (2.0 - c)) - hi)) * _bits_to_f64(
        (np.int64(np.int32(kf)) + 1023) << 52
    )
    # cos, sin of th = Im x: th - fn pi/2 = y0 + y1, |y0| <= pi/4, then the quadrant
    th = x.imag
    fn = math.floor(th * _INVPIO2 + 0.5)
    r0 = th - fn * _PIO2_1
    w = fn * _PIO2_2
    rr = r0 - w
    w = fn * _PIO2_2T - ((r0 - rr) - w)
    y0 = rr - w
    y1 = (rr - y0) - w
    z = y0 * y0
    v = z * y0
    rs = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    s = y0 - ((z * (0.5 * y1 - v * rs) - y1) - v * _S1)
    ww = z * z
    rc = z * (_C1 + z * (_C2 + z * _C3)) + ww * ww * (_C4 + z * (_C5 + z * _C6))
    hz = 0.5 * z
    ww = 1.0 - hz
    c = ww + (((1.0 - ww) - hz) + (z * rc - y0 * y1))
    q = np.int32(fn)
    odd = (q & 1) != 0
    cs = s if odd else c
    sn = c if odd else s
    cs = -cs if ((q + 1) & 2) != 0 else cs  # cos < 0 in quadrants 1, 2
    sn = -sn if (q & 2) != 0 else sn  # sin < 0 in quadrants 2, 3
    return complex(mag * cs, -(mag * sn))


@numba.njit(cache=True, inline="always")
def _exp_neg(x: complex) -> complex:
    """e^-x, libm (the scalar path: any finite x)."""
    r = math.exp(-x.real)
    return complex(r * math.cos(x.imag), -(r * math.sin(x.imag)))


# ---------------------------------------------------------------------- the math pieces


@numba.njit(cache=True, inline="always")
def _series(x: complex, c: np.ndarray, row: int, nt: int) -> tuple[complex, complex]:
    """The series of rows `row` and `row + 1` of table c (nt columns) at complex x, |x| < 1/2.

    Real coefficients at a complex point by the remainder of the division by
    (X - x)(X - conj x) = X^2 - 2 Re x X + |x|^2 (Knuth, TAOCP 4.6.4): b_j = c_j + 2 Re x b_(j+1)
    - |x|^2 b_(j+2), p(x) = b_1 x + (c_0 - |x|^2 b_2); two real multiply-adds per term instead
    of complex Horner's eight operations. Its error propagators are
    (x^m - conj(x)^m)/(x - conj x), |.| <= m 2^(1-m) for |x| < 1/2, and the coefficients fall
    factorially, so it is as accurate as Horner here.
    """
    r = 2.0 * x.real
    s = -(x.real * x.real + x.imag * x.imag)
    a0 = c[row, nt - 1]
    b0 = c[row, nt - 2]
    a1 = c[row + 1, nt - 1]
    b1 = c[row + 1, nt - 2]
    for j in range(nt - 3, -1, -1):
        a0, b0 = b0 + r * a0, c[row, j] + s * a0
        a1, b1 = b1 + r * a1, c[row + 1, j] + s * a1
    return a0 * x + b0, a1 * x + b1


@numba.njit(cache=True, inline="always")
def _reduce_z(x: complex) -> complex:
    """z = 2x + i pi with Im z reduced to [-pi, pi]: p = -e^-2x = e^-z (dz/dx = 2)."""
    im = x.imag * 2.0 + math.pi
    im = im - _TWO_PI * math.floor(im * _INV_TWO_PI + 0.5)
    return complex(x.real * 2.0, im)


@numba.njit(cache=True, inline="always")
def _phi_direct(x: complex, e: complex) -> tuple[complex, complex]:
    """phi(x) = (e^-x - 1 + x)/x^2, phi'(x) = (psi - 2 phi)/x, from e = e^-x; |x| >= 1/2."""
    d = 1.0 / (x.real * x.real + x.imag * x.imag)
    inv = complex(x.real * d, -(x.imag * d))  # 1/x
    ph = (e - 1.0 + x) * inv * inv
    return ph, ((1.0 - e) * inv - 2.0 * ph) * inv


@numba.njit(cache=True, inline="always")
def _g_far(nf: float, p: complex, pn: complex) -> tuple[complex, complex]:
    """G_n = (n q + p^n - 1)/q^2, q = 1 - p, and dG_n/dz = [n (p - p^n) - 2 G q p]/q^2
    (p = e^-z, dp/dz = -p); |q| > 0.39 here."""
    q = 1.0 - p
    q2 = q * q
    d = 1.0 / (q2.real * q2.real + q2.imag * q2.imag)
    iq2 = complex(q2.real * d, -(q2.imag * d))  # 1/q^2
    gn = (nf * q + pn - 1.0) * iq2
    return gn, (nf * (p - pn) - 2.0 * gn * q * p) * iq2


@numba.njit(cache=True, inline="always")
def _g_near(
    nf: float, z: complex, ph_nz: complex, dph_nz: complex, c_z: np.ndarray, ntz: int
) -> tuple[complex, complex]:
    """G_n = n (n phi(nz) - phi(z)) / psi(z)^2 (no 0/0 at the resonance z = 0) and
    dG_n/dz = [n (n^2 phi'(nz) - phi'(z)) - 2 G psi psi'] / psi^2; |z| < 1/2."""
    ps, dps = _series(z, c_z, 0, ntz)  # (two rows per loop: small enough for LLVM to unroll
    ph, dph = _series(z, c_z, 2, ntz)  # fully, which the vectorization of the caller needs)
    ps2 = ps * ps
    d = 1.0 / (ps2.real * ps2.real + ps2.imag * ps2.imag)
    ips2 = complex(ps2.real * d, -(ps2.imag * d))  # 1/psi^2
    gn = nf * (nf * ph_nz - ph) * ips2
    return gn, (nf * (nf * nf * dph_nz - dph) - 2.0 * gn * ps * dps) * ips2


@numba.njit(cache=True, inline="always")
def _cells_direct(
    x: complex, e: complex, nf: float, gn: complex, dgn: complex
) -> tuple[complex, complex]:
    """c = n x m(x) + r^2 G_n and c'(x), r = x psi^2 = (e - 1)^2/x, from e = e^-x; |x| >= 1/2.

    (x m)' = m + x m' = 2 (psi^2 - m) = 2 (r - x m)/x,  r' = (-2 (e - 1) e - r)/x,
    c' = n (x m)' + 2 r r' G_n + r^2 dG_n/dx,  dG_n/dx = 2 dG_n/dz.
    """
    d = 1.0 / (x.real * x.real + x.imag * x.imag)
    inv = complex(x.real * d, -(x.imag * d))  # 1/x
    em1 = e - 1.0
    e2m1 = em1 * (em1 + 2.0)  # e^-2x - 1
    r = em1 * em1 * inv
    xm = (2.0 + (4.0 * em1 - e2m1) * inv) * inv  # x m(x)
    cells = nf * xm + r * r * gn
    dr = (-2.0 * em1 * e - r) * inv
    dxm = 2.0 * (r - xm) * inv
    return cells, nf * dxm + 2.0 * r * dr * gn + 2.0 * (r * r) * dgn


@numba.njit(cache=True, inline="always")
def _cells_series(
    x: complex, c_x: np.ndarray, ntx: int, nf: float, gn: complex, dgn: complex
) -> tuple[complex, complex]:
    """c = n x m(x) + x^2 psi^4 G_n and c'(x) from the series; |x| < 1/2.

    r = x psi^2, r' = psi^2 + 2 x psi psi', (x m)' = sum_j (j+1) c_j x^j.
    """
    ps, dps = _series(x, c_x, 0, ntx)
    hm, dxm = _series(x, c_x, 2, ntx)
    ps2 = ps * ps
    r = x * ps2
    cells = nf * x * hm + x * x * ps2 * ps2 * gn
    dr = ps2 + 2.0 * x * ps * dps
    return cells, nf * dxm + 2.0 * r * dr * gn + 2.0 * (r * r) * dgn


@numba.njit(cache=True, inline="always")
def _element(
    w0: float, g: float, t: float, ni: int, c_x: np.ndarray, c_z: np.ndarray, ntx: int, ntz: int
) -> tuple[complex, complex]:
    """(J, J') of one element, any finite input, every branch (the scalar path)."""
    if ni == 0:  # FID: J = t^2 phi(k t), J' = t^3 phi'(k t)
        x = complex(g * t, -w0 * t)
        if x.real * x.real + x.imag * x.imag < _SMALL2:
            ph, dph = _series(x, c_z, 2, ntz)
        else:
            ph, dph = _phi_direct(x, _exp_neg(x))
        return (t * t) * ph, (t * t * t) * dph
    nf = float(ni)
    h = t / (2.0 * nf)
    x = complex(g * h, -w0 * h)
    z = _reduce_z(x)
    e = _exp_neg(x)  # (|x| < 1/2 and |z| < 1/2 exclude each other: one of them needs e)
    if z.real * z.real + z.imag * z.imag < _SMALL2:
        nz = nf * z
        if nz.real * nz.real + nz.imag * nz.imag < _SMALL2:
            ph_nz, dph_nz = _series(nz, c_z, 2, ntz)
        else:
            # e^-nz of this nz (not p^n): phi(nz) divides by nz^2, so its numerator must see
            # the same rounded, reduced nz
            ph_nz, dph_nz = _phi_direct(nz, _exp_neg(nz))
        gn, dgn = _g_near(nf, z, ph_nz, dph_nz, c_z, ntz)
    else:
        two_n = 2.0 * nf
        pn = _exp_neg(complex(two_n * x.real, two_n * x.imag))
        gn, dgn = _g_far(nf, -(e * e), -pn if ni & 1 else pn)
    if x.real * x.real + x.imag * x.imag < _SMALL2:
        cells, dcells = _cells_series(x, c_x, ntx, nf, gn, dgn)
    else:
        cells, dcells = _cells_direct(x, e, nf, gn, dgn)
    return (h * h) * cells, (h * h * h) * dcells


# ----------------------------------------------------------------------------- the kernel


def _build_kernel(c_x: np.ndarray, c_z: np.ndarray, grads: bool):  # type: ignore[no-untyped-def]
    """The kernel, with the series tables frozen in as constants so that LLVM unrolls the series
    and vectorizes the loops. The tables are closure variables, which numba's cache key hashes:
    a change of attenuation.py's coefficients recompiles rather than reusing a stale cache.

    grads=False builds the values-only kernel: J alone (out_dj is not touched and may be empty).
    `grads` is a compile-time constant, so the derivative's arithmetic, whose results are then
    never stored, is removed by LLVM from the inlined helpers (dead code), not computed and dropped.
    """
    ntx = c_x.shape[1]
    ntz = c_z.shape[1]

    @numba.njit(cache=True, error_model="numpy", nogil=True)
    def kernel(w0, g, t, n, out_j, out_dj):  # type: ignore[no-untyped-def]
        # Per block of _CHUNK elements: classify; gather each vector category into contiguous
        # buffers, run its branch-free loop (LLVM vectorizes it: AVX2 = 4 lanes), scatter back;
        # everything else goes through the scalar path `_element`.
        #   A: FID, |k t| >= 1/2                         (phi direct)
        #   B: n >= 1, |x| >= 1/2, |z| >= 1/2            (cells direct, G far)
        #   C: n >= 1, |x| < 1/2, |z| >= 1/2             (cells series, G far)
        #   D: n >= 1, |z| < 1/2 (so |x| > 1/2), |nz| >= 1/2   (cells direct, G near)
        # each only where g >= 0, g t < _VEC_DECAY, |w0 t| < _VEC_PHASE and n < _VEC_N.
        # The vectorization is LLVM's decision, and fragile: a libm call, a branch or a loop that
        # is not fully unrolled (e.g. a 4-row series) in a loop body keeps that loop scalar (3x
        # slower, same results). After a change, compile with NUMBA_CACHE_DIR pointing at an
        # empty folder and count 'vector.body' labels in _j_kernel.inspect_llvm(): 6 (the
        # classification, A, B, C and the two D loops).
        cat = np.empty(_CHUNK, np.int64)
        bi = np.empty((5, _CHUNK), np.int64)
        bw = np.empty((4, _CHUNK))
        bg = np.empty((4, _CHUNK))
        bt = np.empty((4, _CHUNK))
        bn = np.empty((4, _CHUNK))
        cnt = np.zeros(5, np.int64)
        o0 = np.empty(_CHUNK)
        o1 = np.empty(_CHUNK)
        o2 = np.empty(_CHUNK)
        o3 = np.empty(_CHUNK)
        size = w0.shape[0]
        for start in range(0, size, _CHUNK):
            stop = min(start + _CHUNK, size)
            m_all = stop - start
            for k in range(m_all):  # category of each element, branch-free (vectorized)
                i = start + k
                wi = w0[i]
                gi = g[i]
                ti = t[i]
                ni = n[i]
                nf = max(float(ni), 1.0)
                h = ti / (2.0 * nf)
                xr = gi * h
                xi = -wi * h
                zi = xi * 2.0 + math.pi
                zi = zi - _TWO_PI * math.floor(zi * _INV_TWO_PI + 0.5)
                zr = xr * 2.0
                x_big = xr * xr + xi * xi >= _SMALL2
                z2 = zr * zr + zi * zi
                z_far = z2 >= _SMALL2
                nz_big = (nf * nf) * z2 >= _SMALL2
                kt_big = (gi * ti) * (gi * ti) + (wi * ti) * (wi * ti) >= _SMALL2
                vec = (gi >= 0.0) & (gi * ti < _VEC_DECAY) & (abs(wi * ti) < _VEC_PHASE)
                c_cpmg = (1 if x_big else 2) if z_far else (3 if nz_big else 4)
                c = (0 if kt_big else 4) if ni == 0 else (c_cpmg if ni < _VEC_N else 4)
                cat[k] = c if vec else 4
            cnt[:] = 0
            for k in range(m_all):  # indices by category
                c = cat[k]
                m = cnt[c]
                bi[c, m] = start + k
                cnt[c] = m + 1
            for c in range(4):  # gather the vector categories
                for k in range(cnt[c]):
                    i = bi[c, k]
                    bw[c, k] = w0[i]
                    bg[c, k] = g[i]
                    bt[c, k] = t[i]
                    bn[c, k] = n[i]
            for k in range(cnt[4]):  # the scalar path
                i = bi[4, k]
                jj, dj = _element(w0[i], g[i], t[i], n[i], c_x, c_z, ntx, ntz)
                out_j[i] = jj
                if grads:
                    out_dj[i] = dj

            aw, ag, at = bw[0], bg[0], bt[0]
            for k in range(cnt[0]):  # A
                tk = at[k]
                x = complex(ag[k] * tk, -aw[k] * tk)
                ph, dph = _phi_direct(x, _exp_neg_v(x))
                jj = (tk * tk) * ph
                dj = (tk * tk * tk) * dph
                o0[k] = jj.real
                o1[k] = jj.imag
                if grads:
                    o2[k] = dj.real
                    o3[k] = dj.imag
            for k in range(cnt[0]):
                out_j[bi[0, k]] = complex(o0[k], o1[k])
                if grads:
                    out_dj[bi[0, k]] = complex(o2[k], o3[k])

            cw, cg, ct, cn = bw[1], bg[1], bt[1], bn[1]
            for k in range(cnt[1]):  # B
                nf = cn[k]
                h = ct[k] / (2.0 * nf)
                x = complex(cg[k] * h, -cw[k] * h)
                e = _exp_neg_v(x)
                # p^n = (-1)^n e^-2nx: consistent with p = -e^2 to O(n) ulp whatever Im x (not
                # through the reduced z, whose rounding n would multiply)
                two_n = 2.0 * nf
                pn = _exp_neg_v(complex(two_n * x.real, two_n * x.imag))
                half = 0.5 * nf
                pn = (1.0 - 4.0 * (half - math.floor(half))) * pn
                gn, dgn = _g_far(nf, -(e * e), pn)
                cells, dcells = _cells_direct(x, e, nf, gn, dgn)
                jj = (h * h) * cells
                dj = (h * h * h) * dcells
                o0[k] = jj.real
                o1[k] = jj.imag
                if grads:
                    o2[k] = dj.real
                    o3[k] = dj.imag
            for k in range(cnt[1]):
                out_j[bi[1, k]] = complex(o0[k], o1[k])
                if grads:
                    out_dj[bi[1, k]] = complex(o2[k], o3[k])

            cw, cg, ct, cn = bw[2], bg[2], bt[2], bn[2]
            for k in range(cnt[2]):  # C
                nf = cn[k]
                h = ct[k] / (2.0 * nf)
                x = complex(cg[k] * h, -cw[k] * h)
                e = _exp_neg_v(x)
                # p^n = (-1)^n e^-2nx: consistent with p = -e^2 to O(n) ulp whatever Im x (not
                # through the reduced z, whose rounding n would multiply)
                two_n = 2.0 * nf
                pn = _exp_neg_v(complex(two_n * x.real, two_n * x.imag))
                half = 0.5 * nf
                pn = (1.0 - 4.0 * (half - math.floor(half))) * pn
                gn, dgn = _g_far(nf, -(e * e), pn)
                cells, dcells = _cells_series(x, c_x, ntx, nf, gn, dgn)
                jj = (h * h) * cells
                dj = (h * h * h) * dcells
                o0[k] = jj.real
                o1[k] = jj.imag
                if grads:
                    o2[k] = dj.real
                    o3[k] = dj.imag
            for k in range(cnt[2]):
                out_j[bi[2, k]] = complex(o0[k], o1[k])
                if grads:
                    out_dj[bi[2, k]] = complex(o2[k], o3[k])

            cw, cg, ct, cn = bw[3], bg[3], bt[3], bn[3]
            for k in range(cnt[3]):  # D, first G_n near the resonance (into o0..o3)
                nf = cn[k]
                h = ct[k] / (2.0 * nf)
                z = _reduce_z(complex(cg[k] * h, -cw[k] * h))
                nz = nf * z
                ph_nz, dph_nz = _phi_direct(nz, _exp_neg_v(nz))
                gn, dgn = _g_near(nf, z, ph_nz, dph_nz, c_z, ntz)
                o0[k] = gn.real
                o1[k] = gn.imag
                if grads:
                    o2[k] = dgn.real
                    o3[k] = dgn.imag
            for k in range(cnt[3]):  # D, then the cells
                nf = cn[k]
                h = ct[k] / (2.0 * nf)
                x = complex(cg[k] * h, -cw[k] * h)
                gn = complex(o0[k], o1[k])
                dgn = complex(o2[k], o3[k]) if grads else 0j
                cells, dcells = _cells_direct(x, _exp_neg_v(x), nf, gn, dgn)
                jj = (h * h) * cells
                dj = (h * h * h) * dcells
                o0[k] = jj.real
                o1[k] = jj.imag
                if grads:
                    o2[k] = dj.real
                    o3[k] = dj.imag
            for k in range(cnt[3]):
                out_j[bi[3, k]] = complex(o0[k], o1[k])
                if grads:
                    out_dj[bi[3, k]] = complex(o2[k], o3[k])

    return kernel


_j_kernel = _build_kernel(_C_X, _C_Z, True)
_j_values_kernel = _build_kernel(_C_X, _C_Z, False)


_PAR_MIN = 1 << 15  # elements per thread below which one thread does it all
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1  # the process that made _pool (a forked child must make its own)
_pool_lock = threading.Lock()


def _n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_threads(kernel, ins: tuple, outs: tuple, workers: int | None) -> None:  # type: ignore[no-untyped-def]
    """kernel(*ins, *outs) over flat arrays, split into contiguous slices over threads (an empty
    output array, a values-only kernel's unused dJ, is passed whole)."""
    global _pool, _pool_pid
    size = ins[0].shape[0]
    workers = _n_cpus() if workers is None else int(workers)
    workers = max(1, min(workers, size // _PAR_MIN))
    if workers == 1:
        kernel(*ins, *outs)
        return
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < workers:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vqns-kernel")
            _pool_pid = os.getpid()
        pool = _pool
    cuts = [size * i // workers for i in range(workers + 1)]
    jobs = [pool.submit(kernel, *(v[a:b] for v in ins), *(v[a:b] if v.shape[0] else v for v in outs))
            for a, b in zip(cuts[:-1], cuts[1:])]
    for job in jobs:
        job.result()


def _run(w0, g, t, n, out_j, out_dj, workers: int | None) -> None:  # type: ignore[no-untyped-def]
    """J (and J' unless out_dj is empty: the values-only kernel) into out_j, out_dj, in threads."""
    kernel = _j_kernel if out_dj.shape[0] else _j_values_kernel
    _run_threads(kernel, (w0, g, t, n), (out_j, out_dj), workers)


def _j(w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, workers: int | None,
       grads: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked flat arrays through the kernel: (J, dJ/dk), dJ/dk None unless `grads`."""
    w0, g, t = (np.ascontiguousarray(v, dtype=np.float64) for v in (w0, g, t))
    n_arr = np.asarray(n)
    if n_arr.dtype.kind not in "iub" and np.any(n_arr != np.round(n_arr)):
        raise ValueError("n must be integers")
    n_arr = np.ascontiguousarray(n_arr, dtype=np.int64)
    if not (w0.ndim == g.ndim == t.ndim == n_arr.ndim == 1):
        raise ValueError("lorentzian_j takes flat (1-d) arrays; chi_and_grads broadcasts")
    if not (w0.shape == g.shape == t.shape == n_arr.shape):
        raise ValueError("w0, g, t and n must have the same length")
    if n_arr.size and n_arr.min() < 0:
        raise ValueError("n must be >= 0")
    out_j = np.empty(w0.shape, dtype=np.complex128)
    out_dj = np.empty(w0.shape if grads else (0,), dtype=np.complex128)
    if out_j.size:
        _run(w0, g, t, n_arr, out_j, out_dj, workers)
    return out_j, (out_dj if grads else None)


def lorentzian_j(
    w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, *, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """J (s^2) and dJ/dk (s^3), complex128, per element of flat arrays of one length.

    w0: centre (rad/s); g: half width (rad/s, >= 0 physically; J is analytic in k, so g < 0 is
    evaluated as well); t: sequence length (s); n: pulses (integers >= 0: 0 = FID, 1 = echo,
    CPMG-n). chi = a Re J, dchi/dg = a Re J', dchi/dw0 = a Im J' (k = g - i w0).
    workers: threads (default: the CPUs available; at least 32768 elements per thread).
    """
    j, dj = _j(w0, g, t, n, workers, True)
    assert dj is not None
    return j, dj


def lorentzian_j_values(
    w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, *, workers: int | None = None
) -> np.ndarray:
    """J (s^2), complex128, as `lorentzian_j` but without the derivative (the values-only kernel:
    bit-identical J, ~1.6x faster on one thread: benchmarks/bench_vqns.py section 4)."""
    return _j(w0, g, t, n, workers, False)[0]


def _broadcast(a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike,  # type: ignore[no-untyped-def]
               pi_s: ArrayLike):
    pi = np.asarray(pi_s, dtype=np.float64)
    if not np.all(np.isfinite(pi) & (pi >= 0.0)):
        raise ValueError("the pi-pulse length pi_s must be finite and >= 0 s (0: ideal pulses)")
    return np.broadcast_arrays(
        np.asarray(a, dtype=np.float64),
        np.asarray(w0, dtype=np.float64),
        np.asarray(g, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(n),
        pi,
    )


def _finite(n_b: np.ndarray, pi_b: np.ndarray) -> np.ndarray | None:
    """Flat indices of the elements with finite pi pulses (pi_s > 0, n >= 1), None if there are none."""
    if not np.any(pi_b):
        return None
    idx = np.flatnonzero((pi_b > 0.0) & (np.asarray(n_b) >= 1))
    return idx if idx.size else None


def _j_mixed(w0_b, g_b, t_b, n_b, pi_b, workers: int | None, grads: bool):  # type: ignore[no-untyped-def]
    """(J, J' or None), flat: the ideal kernel where pi_s = 0 or n = 0 (exactly as without pi_s),
    models/vqns/finite_pulses.py where pi_s > 0 and n >= 1."""
    w0_f, g_f, t_f, n_f = w0_b.ravel(), g_b.ravel(), t_b.ravel(), n_b.ravel()
    idx = _finite(n_b, pi_b)
    if idx is None:
        return _j(w0_f, g_f, t_f, n_f, workers, grads)
    from nvscope.models.vqns import finite_pulses  # (it imports this module's numba helpers)

    out_j = np.empty(w0_f.shape, dtype=np.complex128)
    out_dj = np.empty(w0_f.shape, dtype=np.complex128) if grads else None
    ideal = np.ones(w0_f.shape, dtype=bool)
    ideal[idx] = False
    if ideal.any():
        j, dj = _j(w0_f[ideal], g_f[ideal], t_f[ideal], n_f[ideal], workers, grads)
        out_j[ideal] = j
        if grads:
            out_dj[ideal] = dj
    args = (w0_f[idx], g_f[idx], t_f[idx], n_f[idx], pi_b.ravel()[idx])
    if grads:
        out_j[idx], out_dj[idx] = finite_pulses.finite_pulse_j(*args, workers=workers)
    else:
        out_j[idx] = finite_pulses.finite_pulse_j_values(*args, workers=workers)
    return out_j, out_dj


def chi_and_grads(
    a: ArrayLike,
    w0: ArrayLike,
    g: ArrayLike,
    t: ArrayLike,
    n: ArrayLike,
    pi_s: ArrayLike = 0.0,
    *,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """chi, dchi/da, dchi/dg, dchi/dw0 (float64 arrays of the broadcast shape of the arguments).

    Units as `attenuation.attenuation`: a rad^2/s^2, w0 and g rad/s, t s, n integer pulses; e.g.
    a, w0, g of shape (restarts, lorentzians, 1, 1) against t, n of shape (1, 1, sequences,
    times), then sum over the lorentzian axis for the total chi (C = exp(-sum chi)).
    pi_s: pi-pulse length (s), broadcast like n (e.g. (1, 1, sequences, 1)); where pi_s > 0 and
    n >= 1, CPMG-n with pi pulses of that length (models/vqns/finite_pulses.py; pi/2 pulses ideal),
    elsewhere ideal pulses, bit for bit the result without pi_s. ValueError where pi_s > t/n.
    `chi_values` gives chi alone, at about half the cost, where nobody needs the gradients.
    """
    a_b, w0_b, g_b, t_b, n_b, pi_b = _broadcast(a, w0, g, t, n, pi_s)
    shape = a_b.shape
    j, dj = _j_mixed(w0_b, g_b, t_b, n_b, pi_b, workers, True)
    re_j = j.real.reshape(shape)
    dj = dj.reshape(shape)
    return a_b * re_j, re_j.copy(), a_b * dj.real, a_b * dj.imag


def chi_values(
    a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike, pi_s: ArrayLike = 0.0, *,
    workers: int | None = None
) -> np.ndarray:
    """chi = a Re J (float64, the broadcast shape of the arguments), units and pi_s as `chi_and_grads`,
    without its gradients (LM trial steps, predictions): identical to `chi_and_grads(...)[0]`."""
    a_b, w0_b, g_b, t_b, n_b, pi_b = _broadcast(a, w0, g, t, n, pi_s)
    j, _ = _j_mixed(w0_b, g_b, t_b, n_b, pi_b, workers, False)
    return a_b * j.real.reshape(a_b.shape)
