"""Closed-form Lorentzian attenuation chi(t) and filter functions (docs/physics.md sections 3.1-3.2).

Two references, each independent of the closed form's algebra and of its floating point:

* `_chi_quadrature`: the defining frequency integral (1/pi) int_0^inf S(w) F(wt)/w^2 dw by
  Gauss-Legendre panels (refined geometrically around the Lorentzian peak, in the offset from
  the peak so that u - w0 is not rounded) up to a multiple U of the period P of F; the tail
  [U, inf) is folded onto one period, int_0^P F(v) sum_m f(U + mP + v) dv with f = S/u^2,
  summed term by term for 40 periods and by Euler-Maclaurin (closed-form integral) beyond.
  It agrees with the 60-digit reference to ~1e-12 relative.
* `_chi_time_mpmath`: the time-domain double integral in 60-digit mpmath, as
  int_0^t R(tau) exp(-k tau) dtau with R the autocorrelation of the switching function built
  from `cpmg_pulse_times` (piecewise linear between multiples of t/2n), integrated exactly
  piece by piece. No geometric series, no cancellation (60 digits).

Measured (float64), over g t in [1e-6, 1e3], w0 t in [0, 1e3] and at/near the CPMG
resonances, n in {0, 1, 2, 3, 8, 32, 255, 256}: against the 60-digit time domain (1500 random
points) max 9e-13 relative where chi > 1e-6 a t^2 and 3e-15 a t^2 absolute; against the
quadrature (330 grid points) 7e-12 and 1e-14, the quadrature's own error. The textbook form at
|k| t = 1e-3, n = 32 (g t = 1e-3, w0 = 0) is 9e-2 off in float64 and 100% off in float32; over
the random points it is up to 0.64 off where chi > 1e-6 a t^2.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from nvscope.models.vqns.attenuation import (
    attenuation,
    attenuation_cpmg,
    attenuation_echo,
    attenuation_fid,
    attenuation_textbook,
    attenuation_torch,
)
from nvscope.models.vqns.filters import filter_function
from nvscope.rt.kernels.pulses import cpmg_pulse_times

N_PULSES = (0, 1, 2, 3, 8, 32, 255, 256)
T = 20e-6  # s: the grids below are in w0 t, g t; the functions are called in SI units
A = 3.0e9  # rad^2/s^2

# ---------------------------------------------------------------- frequency-domain reference

_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)


def _gl_nodes(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = edges[:-1, None], edges[1:, None]
    half = 0.5 * (b - a)
    return ((a + b) * 0.5 + half * _GL_X).ravel(), (half * _GL_W).ravel()


def _s(u, w0, g):
    return g / ((u - w0) ** 2 + g * g) + g / ((u + w0) ** 2 + g * g)


def _ds(u, w0, g):
    lo, hi = u - w0, u + w0
    return -2 * g * lo / (lo * lo + g * g) ** 2 - 2 * g * hi / (hi * hi + g * g) ** 2


def _tail_integral(X, w0, g):
    """int_X^inf S(u)/u^2 du (a = 1) from S = Im[1/(u-p) + 1/(u-p')], p = w0 + ig, p' = -w0 + ig."""
    total = 0.0
    for p in (w0 + 1j * g, -w0 + 1j * g):
        y = p / X  # int_X^inf du / ((u - p) u^2) = X^-2 sum_{j>=2} y^(j-2) / j
        small = np.abs(y) < 0.5
        ys = np.where(small, y, 0)
        series = sum(ys ** (j - 2) / j for j in range(2, 60))
        yd = np.where(small, 0.9, y)
        total = total + np.imag(np.where(small, series, (-np.log(1 - yd) - yd) / yd**2)) / X**2
    return total


def _chi_quadrature(w0t: float, gt: float, n: int, panel: float = 3.0, periods: int = 40) -> float:
    """chi / (a t^2) = (1/pi) int_0^inf S(u) F(u)/u^2 du in units t = 1 (u = w t)."""
    w0, g = w0t, gt
    P = 2 * np.pi if n == 0 else 4 * np.pi * n  # period of F(u)
    U = P * np.ceil((w0 + 10 + 2 * g) / P)
    offsets = [np.linspace(0, U, int(np.ceil(U / panel)) + 1) - w0]
    if g < panel:
        r = g * 3.0 ** np.arange(-3, 60)
        r = r[r < 2 * panel]
        offsets += [r, -r, -w0 + r]  # around the peak at w0 and its mirror image through 0
    e = np.unique(np.concatenate(offsets))
    v, w = _gl_nodes(e[(e >= -w0) & (e <= U - w0)])
    lorentz = g / (v * v + g * g) + g / ((v + 2 * w0) ** 2 + g * g)  # S at u = w0 + v
    head = np.sum(w * lorentz * filter_function(w0 + v, n) / (w0 + v) ** 2)
    v, w = _gl_nodes(np.linspace(0, P, int(np.ceil(P / panel)) + 1))
    H = np.zeros_like(v)
    for m in range(periods):
        u = U + m * P + v
        H += _s(u, w0, g) / u**2
    X = U + periods * P + v  # Euler-Maclaurin: (1/P) int_X^inf f + f(X)/2 - (P/12) f'(X)
    f, df = _s(X, w0, g) / X**2, _ds(X, w0, g) / X**2 - 2 * _s(X, w0, g) / X**3
    H += _tail_integral(X, w0, g) / P + 0.5 * f - P / 12 * df
    return float((head + np.sum(w * filter_function(v, n) * H)) / np.pi)


# ------------------------------------------------------------- time-domain mpmath reference


def _switching_signs(n: int) -> np.ndarray:
    """y on the 2n half-segments (1 segment for the FID), from the pulse times."""
    if n == 0:
        return np.ones(1, dtype=np.int64)
    mid = (np.arange(2 * n) + 0.5) / (2 * n)
    flips = np.searchsorted(cpmg_pulse_times(1.0, n), mid)
    return np.where(flips % 2 == 0, 1, -1)


def _chi_time_mpmath(w0t: float, gt: float, n: int) -> float:
    """chi / (a t^2) = Re int_0^1 R(tau) exp(-k tau) dtau (t = 1), 60 digits."""
    with mpmath.workdps(60):
        y = _switching_signs(n)
        h = mpmath.mpf(1) / len(y)
        c = np.correlate(y, y, mode="full")[len(y) - 1 :]  # R(j h) = h c_j, exact integers
        c = [int(v) for v in c] + [0]
        k = mpmath.mpc(gt, -w0t)
        if k == 0:  # R piecewise linear: int_0^h (A + (B - A) s/h) ds
            return float(sum(h * h * (c[j] + c[j + 1]) / 2 for j in range(len(y))))
        e = mpmath.exp(-k * h)
        i0 = (1 - e) / k  # int_0^h e^{-ks} ds
        i1 = (1 - e * (1 + k * h)) / k**2  # int_0^h s e^{-ks} ds
        total, ej = mpmath.mpc(0), mpmath.mpc(1)
        for j in range(len(y)):
            total += ej * h * (c[j] * i0 + (c[j + 1] - c[j]) * i1 / h)
            ej *= e
        return float(mpmath.re(total))


def _resonances(n: int) -> list[float]:
    """w0 t at and next to the first CPMG resonance (cos(wt/2n) = 0), within w0 t <= 1e3."""
    if n == 0:
        return []
    w = n * math.pi
    return [w, w * (1 + 1e-6), w * (1 - 3e-3)] if w <= 1e3 else []


def _grid(n: int) -> list[tuple[float, float]]:
    if n <= 32:
        gts = (1e-6, 1e-4, 1e-2, 1.0, 30.0, 1e3)
        w0ts = [0.0, 1e-3, 0.7, 7.5, 100.0, 1e3] + _resonances(n)
    else:  # the quadrature costs ~0.1 s a point here
        gts = (1e-6, 1e-2, 1e3)
        w0ts = [0.0, 100.0, 1e3] + _resonances(n)[:1]
    return [(w0t, gt) for gt in gts for w0t in w0ts]


def _assert_close(got, ref, what, rel=1e-8, floor=1e-6, absolute=1e-12):
    """docs/physics.md section 3.2: 1e-8 relative wherever chi > 1e-6 a t^2, 1e-12 a t^2 absolute everywhere."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    err = np.abs(got - ref)
    big = ref > floor
    rel_err = np.where(big, err / np.where(big, ref, 1.0), 0.0)
    i, j = int(np.argmax(err)), int(np.argmax(rel_err))
    assert err.flat[i] <= absolute, f"{what}: abs error {err.flat[i]:.2e} at {i}, ref {ref.flat[i]:.6e}"
    assert rel_err.flat[j] <= rel, f"{what}: rel error {rel_err.flat[j]:.2e} at {j}, ref {ref.flat[j]:.6e}"


# ------------------------------------------------------------------------------ attenuation


@pytest.mark.parametrize("n", N_PULSES)
def test_attenuation_matches_frequency_quadrature(n):
    grid = _grid(n)
    w0t = np.array([p[0] for p in grid])
    gt = np.array([p[1] for p in grid])
    ref = np.array([_chi_quadrature(a, b, n) for a, b in grid])
    got = attenuation(A, w0t / T, gt / T, T, n) / (A * T * T)
    _assert_close(got, ref, f"CPMG-{n} vs quadrature")


def test_attenuation_full_precision_against_mpmath_time_domain():
    rng = np.random.default_rng(7)
    size = 240
    n = rng.choice(N_PULSES, size, p=[0.15, 0.15, 0.15, 0.15, 0.15, 0.13, 0.06, 0.06])
    gt = 10 ** rng.uniform(-6, 3, size)
    w0t = np.where(rng.random(size) < 0.15, 0.0, 10 ** rng.uniform(-3, 3, size))
    near = (rng.random(size) < 0.3) & (n > 0)  # at and near the CPMG resonances w0 t = n pi (2m+1)
    detune = rng.normal(size=size) * 10 ** rng.uniform(-12, -1, size)
    w0t = np.where(near, np.pi * n * (2 * rng.integers(0, 3, size) + 1) * (1 + detune), w0t)
    ref = np.array([_chi_time_mpmath(a, b, int(c)) for a, b, c in zip(w0t, gt, n)])
    got = attenuation(1.0, w0t, gt, 1.0, n)
    # measured on 1500 such points: 9e-13 relative, 3e-15 absolute
    _assert_close(got, ref, "vs 60-digit time domain", rel=1e-11, absolute=1e-14)


def test_slow_noise_limits():
    gt = np.array([0.0, 1e-12, 1e-9])
    fid = attenuation_fid(A, 0.0, gt / T, T) / (A * T * T)
    np.testing.assert_allclose(fid, 0.5 - gt / 6, rtol=1e-15, atol=0)  # FID -> a t^2 / 2
    assert attenuation_echo(A, 0.0, 0.0, T) == 0.0
    for n in (1, 2, 3, 32, 256):  # quasi-static: chi -> a g t^3 / (12 n^2) -> 0
        chi = attenuation_cpmg(A, 0.0, gt[1:] / T, T, n) / (A * T * T)
        np.testing.assert_allclose(chi, gt[1:] / (12 * n * n), rtol=1e-8)


def test_white_noise_limit_is_exact():
    # g t >> n: chi = a Re[t/k - (2n+1)/k^2] up to terms in exp(-g t / 2n), k = g - i w0
    g, w0 = 1e5 / T, 3e4 / T
    k2 = g * g + w0 * w0
    for n in N_PULSES:
        expect = A * (T * g / k2 - (2 * n + 1) * (g * g - w0 * w0) / k2**2)
        np.testing.assert_allclose(attenuation(A, w0, g, T, n), expect, rtol=1e-13)


def test_narrow_line_is_the_filter_function():
    # g -> 0: S -> pi a [delta(w - w0) + delta(w + w0)], chi = a F(w0 t) / w0^2
    n = np.array([0, 1, 2, 3, 8, 32, 255, 256])[:, None]
    w0t = np.concatenate([np.geomspace(1e-3, 1e3, 40), math.pi * np.array([1, 2, 3, 8, 32, 255, 256])])
    chi = attenuation(A, w0t / T, 0.0, T, n)
    expect = A * filter_function(w0t, n) / (w0t / T) ** 2
    _assert_close(chi / (A * T * T), expect / (A * T * T), "g = 0", rel=1e-11, absolute=1e-13)


def test_broadcasting_and_named_entry_points():
    w0 = np.array([0.0, 2e5, 3e6])[:, None, None]
    g = np.array([1e3, 5e4])[None, :, None]
    t = np.linspace(1e-6, 5e-5, 7)
    n = np.array([[0], [1], [4]])[:, :, None] * np.ones((1, 1, 7), dtype=int)
    chi = attenuation(A, w0, g, t, n)
    assert chi.shape == (3, 2, 7)
    np.testing.assert_array_equal(attenuation_fid(A, w0, g, t), attenuation(A, w0, g, t, 0))
    np.testing.assert_array_equal(attenuation_echo(A, w0, g, t), attenuation(A, w0, g, t, 1))
    np.testing.assert_array_equal(attenuation_cpmg(A, w0, g, t, 4), attenuation(A, w0, g, t, 4))
    for i in range(3):  # n varies along the first axis here
        np.testing.assert_array_equal(chi[i], attenuation(A, w0[i], g, t, n[i, 0, 0])[0])
    assert attenuation(A, 1.0, 1.0, np.zeros(0), 2).shape == (0,)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        attenuation(A, 0.0, -1.0, T, 2)
    with pytest.raises(ValueError):
        attenuation(A, 0.0, 1.0, T, 1.5)
    with pytest.raises(ValueError):
        attenuation(A, 0.0, 1.0, T, -1)
    with pytest.raises(ValueError):
        filter_function(1.0, -2)


# ----------------------------------------------------------------------------- textbook form


def test_textbook_form_cancels_where_the_stable_form_does_not():
    # |k| t = 1e-3, n = 32: measured 9.1e-2 relative error (float64), 1.0 (float32)
    ref = _chi_time_mpmath(0.0, 1e-3, 32)
    stable = float(attenuation(1.0, 0.0, 1e-3, 1.0, 32))
    textbook = float(attenuation_textbook(1.0, 0.0, 1e-3, 1.0, 32))
    textbook32 = float(attenuation_textbook(1.0, 0.0, 1e-3, 1.0, 32, dtype=np.float32))
    assert abs(stable - ref) <= 1e-14 * ref
    assert abs(textbook - ref) > 1e-2 * ref
    assert abs(textbook32 - ref) > 0.5 * ref
    # where nothing cancels (|k| t / 2n ~ 1) the two forms agree
    w0t, gt = np.array([3.0, 40.0, 100.0]), np.array([2.0, 30.0, 5.0])
    for n in (0, 1, 2, 8, 32):
        textbook = attenuation_textbook(A, w0t / T, gt / T, T, n)
        np.testing.assert_allclose(textbook, attenuation(A, w0t / T, gt / T, T, n), rtol=1e-12)


# ------------------------------------------------------------------------------ torch version


def _random_params(rng, shape):
    return (
        10 ** rng.uniform(8, 11, shape),
        np.where(rng.random(shape) < 0.2, 0.0, 10 ** rng.uniform(2, 8, shape)),
        10 ** rng.uniform(0, 7, shape),
    )


def test_torch_equals_numpy_batched():
    rng = np.random.default_rng(3)
    a, w0, g = _random_params(rng, (4, 5, 1, 1))  # restarts x lorentzians x 1 x 1
    n = np.array([0, 1, 2, 3, 8, 32, 255, 256]).reshape(1, 1, 8, 1)
    t = np.geomspace(1e-7, 1e-3, 30).reshape(1, 1, 1, 30)  # 1 x 1 x sequences x times
    w0[0, 0] = n[0, 0, 4, 0] * math.pi / t[0, 0, 0, 12]  # an exact CPMG-8 resonance
    got = attenuation_torch(*(torch.tensor(v) for v in (a, w0, g, t, n)))
    assert got.shape == (4, 5, 8, 30) and got.dtype == torch.float64
    ref = attenuation(a, w0, g, t, n)
    scale = a * t * t
    np.testing.assert_allclose(got.numpy() / scale, ref / scale, rtol=1e-12, atol=1e-16)
    # float32 in, float32 out; about 1e-3 relative at w0 t ~ 1e3 (phase rounding)
    got32 = attenuation_torch(*(torch.tensor(v, dtype=torch.float32) for v in (a, w0, g, t)), torch.tensor(n))
    assert got32.dtype == torch.float32
    _assert_close(got32.double().numpy() / scale, ref / scale, "float32", rel=3e-3, absolute=3e-6)


def test_torch_gradient_matches_finite_differences():
    # points chosen to exercise every branch: series and direct helpers, resonance, FID
    a = np.array([2e9, 5e9, 1e10, 3e9, 7e9, 1e9])
    w0 = np.array([0.0, 3e5, 2 * math.pi * 1e6, 8 * math.pi / T * (1 + 1e-5), 4e4, 2e7])
    g = np.array([1e2, 4e4, 1e5, 3e3, 1e6, 2e2])
    t = np.full(6, T)
    n = np.array([1, 0, 2, 8, 32, 256])
    params = [torch.tensor(v, requires_grad=True) for v in (a, w0, g, t)]
    chi = attenuation_torch(*params, torch.tensor(n))
    chi.sum().backward()
    for i, p in enumerate((a, w0, g, t)):
        step = 1e-6 * np.where(p == 0, 1e3, p)
        hi = [v.copy() for v in (a, w0, g, t)]
        lo = [v.copy() for v in (a, w0, g, t)]
        hi[i] = p + step
        lo[i] = p - step
        fd = (attenuation(*hi, n) - attenuation(*lo, n)) / (2 * step)
        ad = params[i].grad.numpy()
        scale = np.abs(fd * step) + 1e-6 * np.abs(chi.detach().numpy())  # both in units of chi
        np.testing.assert_array_less(np.abs(ad - fd) * step, 1e-6 * scale)


def test_torch_gradient_finite_at_special_points():
    # x = 0 (g = w0 = 0), exact resonance (z = 0), FID beside CPMG, huge g t
    w0 = torch.tensor([0.0, 0.0, 4 * math.pi / T, 1e6, 0.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.0, 1e-3, 0.0, 1e12, 1.0], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([0, 1, 4, 256, 0])
    chi = attenuation_torch(A, w0, g, T, n)
    chi.sum().backward()
    assert torch.isfinite(chi).all() and torch.isfinite(w0.grad).all() and torch.isfinite(g.grad).all()
    ok = torch.autograd.gradcheck(
        lambda w, gg: attenuation_torch(1.0, w, gg, 1.0, torch.tensor([0, 1, 2, 3, 8])),
        (torch.tensor([0.3, 2.0, 6.0, 3 * math.pi, 50.0], dtype=torch.float64, requires_grad=True),
         torch.tensor([0.1, 0.4, 3.0, 0.01, 20.0], dtype=torch.float64, requires_grad=True)),
    )
    assert ok


# --------------------------------------------------------------------------- filter functions


def _filter_direct(u: np.ndarray, n: int) -> np.ndarray:
    """(w^2/2) |int_0^t y(s) e^{iws} ds|^2 from the pulse times (t = 1): y jumps at 0, pulses, 1."""
    s = np.concatenate([[0.0], cpmg_pulse_times(1.0, n), [1.0]])
    y = (-1.0) ** np.arange(n + 1)  # sign on [s_j, s_{j+1}]
    phase = np.exp(1j * u[:, None] * s[None, :])
    amp = (y[None, :] * (phase[:, 1:] - phase[:, :-1])).sum(axis=1)  # = i w int y e^{iws} ds
    return 0.5 * np.abs(amp) ** 2


def _filter_mpmath(u: float, n: int) -> float:
    """F of docs/physics.md section 3.1, evaluated at 50 digits (at a float u the 0/0 points are not hit)."""
    with mpmath.workdps(50):
        u = mpmath.mpf(u)
        if n == 0:
            return float(2 * mpmath.sin(u / 2) ** 2)
        ratio = (mpmath.sin(u / 2) if n % 2 == 0 else mpmath.cos(u / 2)) / mpmath.cos(u / (2 * n))
        return float(8 * mpmath.sin(u / (4 * n)) ** 4 * ratio**2)


@pytest.mark.parametrize("n", N_PULSES)
def test_filter_function_against_switching_function(n):
    rng = np.random.default_rng(n)
    top = 4 * math.pi * max(n, 1) + 50  # beyond the first period of F
    u = np.concatenate([rng.uniform(0, top, 400), math.pi * max(n, 1) * np.arange(1, 8)])
    got = filter_function(u, n)
    peak = 2.0 * max(n, 2) ** 2  # >= max F (2 n^2 at the CPMG resonance, 8 for the echo)
    # measured: 3e-14 peak (direct), 6e-15 peak and 3e-14 relative (mpmath)
    np.testing.assert_allclose(got, _filter_direct(u, n), rtol=1e-11, atol=1e-12 * peak)
    ref = np.array([_filter_mpmath(v, n) for v in u[::8]])
    np.testing.assert_allclose(got[::8], ref, rtol=1e-12, atol=1e-13 * peak)
    # at the removable singularities cos(wt/2n) = 0 and right next to them: finite, continuous
    w = math.pi * max(n, 1) * np.array([1.0, 3.0, 5.0])
    np.testing.assert_allclose(filter_function(w, n), filter_function(w * (1 + 1e-13), n), rtol=1e-9)
    np.testing.assert_allclose(filter_function(w, n), [_filter_mpmath(v, n) for v in w], rtol=1e-11)


def test_filter_function_small_argument_and_symmetry():
    u = np.geomspace(1e-8, 1e-2, 13)
    fid = 0.5 * np.sinc(u / (2 * math.pi)) ** 2  # 2 sin^2(u/2) / u^2
    np.testing.assert_allclose(filter_function(u, 0) / u**2, fid, rtol=1e-14)
    for n in (1, 3):  # odd n: F ~ u^4 / (32 n^4);  even n: F ~ u^6 / (128 n^4)
        np.testing.assert_allclose(filter_function(u, n), u**4 / (32 * n**4), rtol=1e-3)
    for n in (2, 256):
        np.testing.assert_allclose(filter_function(u, n), u**6 / (128 * n**4), rtol=1e-3)
    for n in N_PULSES:
        v = np.linspace(-300, 300, 101)
        np.testing.assert_array_equal(filter_function(v, n), filter_function(-v, n))
        assert np.all(filter_function(v, n) >= 0)
    assert filter_function(np.zeros((2, 3)), np.array([0, 1, 2])).shape == (2, 3)


def test_cpmg_pulse_times():
    """The rig's pulse timing (rt.kernels.pulses), which the filter functions here assume."""
    np.testing.assert_allclose(cpmg_pulse_times(2.0, 1), [1.0])
    np.testing.assert_allclose(cpmg_pulse_times(1.0, 4), [1 / 8, 3 / 8, 5 / 8, 7 / 8])
    assert cpmg_pulse_times(np.ones((2, 3)), 3).shape == (2, 3, 3)
    assert cpmg_pulse_times(1.0, 0).shape == (0,)
