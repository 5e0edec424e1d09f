"""Finite pi pulses in the VQNS model (models/vqns/finite_pulses.py, kernel.py's pi_s, filters.py)
against independent calculations (docs/physics.md section 3.2):

* the defining integral chi = (1/pi) int_0^inf S(w) F(w)/w^2 dw = (1/2pi) int S(w) |Y(w)|^2 dw,
  Y(w) = int y(s) e^{iws} ds a brute-force Gauss-Legendre Fourier integral of the switching
  function y(s) itself (flat pieces and cos ramps), nothing of the closed form;
* a 50-digit mpmath evaluation of the closed form's plain (unstabilized) expressions, for the
  float64 evaluation where it guards against cancellation (small |k|, k tp near +-i pi, CPMG
  resonances);
* the ideal kernel as tp -> 0; 4th-order finite differences for dJ/dk.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from scipy.integrate import quad

from nvscope.models.vqns.filters import filter_function, pi_pulse_envelope
from nvscope.models.vqns.finite_pulses import finite_pulse_j, finite_pulse_j_values
from nvscope.models.vqns.kernel import chi_and_grads, chi_values, lorentzian_j


def _pieces(n: int, rho: float) -> list[tuple[float, float, int, float]]:
    """(start, length, kind, sign) of y on [0, 1] for CPMG-n with pi pulses of length rho (t = 1):
    kind 0 flat (y = sign), 1 ramp (y = sign cos(pi u/rho))."""
    h = 0.5 / n
    out, s, sign = [], 0.0, 1.0
    for j in range(1, n + 1):
        start = (2 * j - 1) * h - 0.5 * rho
        out += [(s, start - s, 0, sign), (start, rho, 1, sign)]
        s, sign = start + rho, -sign
    return out + [(s, 1.0 - s, 0, sign)]


def _y_nodes(n: int, rho: float, u_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes s and weights * y(s) on [0, 1], exact for e^{ius} up to |u| = u_max."""
    s_all, wy_all = [], []
    for start, length, kind, sign in _pieces(n, rho):
        if length <= 0:
            continue
        m = int(u_max * length / 2) + 24
        x, w = np.polynomial.legendre.leggauss(m)
        u = 0.5 * length * (x + 1.0)
        y = sign * (np.cos(np.pi * u / length) if kind else np.ones_like(u))
        s_all.append(start + u)
        wy_all.append(0.5 * length * w * y)
    return np.concatenate(s_all), np.concatenate(wy_all)


def _y_hat(u: np.ndarray, n: int, rho: float) -> np.ndarray:
    """Y(u) = int_0^1 y(s) e^{ius} ds, brute force (t = 1)."""
    s, wy = _y_nodes(n, rho, float(np.max(np.abs(u))))
    out = np.empty(u.shape, dtype=np.complex128)
    for i in range(0, u.size, 2048):
        out[i:i + 2048] = np.exp(1j * np.outer(u[i:i + 2048], s)) @ wy
    return out


def _chi_quadrature(w0: float, g: float, n: int, rho: float, u_max: float = 800.0) -> float:
    """chi / a in units t = 1 for a Lorentzian at w0 of half width g (a = 1):
    (1/2pi) int_0^u_max S(u) |Y(u)|^2 du (panels of 0.25, 8 GL nodes), plus the tail above u_max
    with |Y|^2 by its mean 2/u^2 there (the ideal pi/2 pulses' two jumps; the pi pulses' part has
    fallen as (pi/(u tp))^4 to < 1e-4 of it)."""
    x, w = np.polynomial.legendre.leggauss(8)
    edges = np.linspace(0.0, u_max, int(u_max / 0.25) + 1)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    u = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    wu = (half[:, None] * w[None, :]).ravel()
    s = g / ((u - w0) ** 2 + g * g) + g / ((u + w0) ** 2 + g * g)
    head = np.sum(wu * s * np.abs(_y_hat(u, n, rho)) ** 2) / (2.0 * np.pi)
    tail = quad(lambda v: (g / ((v - w0) ** 2 + g * g) + g / ((v + w0) ** 2 + g * g)) / v**2, u_max, np.inf,
                epsabs=0.0, epsrel=1e-10)[0] / np.pi
    return float(head + tail)


# (w0 t, g t, n, tp / t): a line between filter peaks, a slow bath, many pulses, the ramp's own
# frequency w0 tp = pi, a CPMG resonance w0 h = pi/2, pulses that touch (tp = t/n)
CASES = [(30.0, 2.0, 4, 0.05), (0.0, 1.0, 8, 0.1), (100.0, 3.0, 16, 0.04), (np.pi / 0.05, 1.5, 4, 0.05),
         (4 * np.pi, 1.0, 4, 0.1), (40.0, 2.0, 8, 0.125), (25.0, 2.0, 1, 0.2)]


@pytest.mark.parametrize("w0t, gt, n, rho", CASES)
def test_closed_form_matches_quadrature_of_the_brute_force_filter(w0t, gt, n, rho):
    t = 2e-6  # s; the quadrature is in units t = 1
    chi = chi_values(1.0, w0t / t, gt / t, t, n, rho * t) / t**2
    ref = _chi_quadrature(w0t, gt, n, rho)
    ideal = chi_values(1.0, w0t / t, gt / t, t, n) / t**2
    assert chi == pytest.approx(ref, rel=2e-7)
    assert abs(ideal - ref) > 1e3 * 2e-7 * ref  # the pulses' length matters here: the test can fail


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("rho_n", [0.02, 0.3, 1.0])  # tp / (t/n): up to touching pulses
def test_finite_pulse_filter_function_is_that_of_the_switching_function(n, rho_n):
    rho = rho_n / n
    u = np.concatenate([np.linspace(0.01, 60.0 * n, 3001), [np.pi / rho, np.pi / rho * (1 + 1e-9)]])
    brute = 0.5 * u**2 * np.abs(_y_hat(u, n, rho)) ** 2
    f = filter_function(u, n, rho)
    np.testing.assert_allclose(f, brute, rtol=1e-8, atol=1e-10 * (2 * n + 1))
    np.testing.assert_array_equal(filter_function(u, n, 0.0), filter_function(u, n))
    assert not np.allclose(f, filter_function(u, n), rtol=1e-3)
    np.testing.assert_array_equal(filter_function(u, 0, rho), filter_function(u, 0))  # FID: no pi pulse
    assert pi_pulse_envelope(0.0) == 1.0 and pi_pulse_envelope(np.pi) == pytest.approx(np.pi / 4, rel=1e-15)
    with pytest.raises(ValueError, match="pi_over_t"):
        filter_function(u, n, -0.1)


def _j_mpmath(w0t: float, gt: float, n: int, rho: float) -> complex:
    """J / t^2 (t = 1) from the plain closed-form expressions at 50 digits (no series, no
    rewriting: the digits absorb the cancellations)."""
    with mpmath.workdps(50):
        k = mpmath.mpc(gt, -w0t)
        h = mpmath.mpf(1) / (2 * n)
        tp = mpmath.mpf(rho)
        a = h - tp / 2
        b = a + tp
        pi = mpmath.pi

        def psi(x):  # type: ignore[no-untyped-def]
            return (1 - mpmath.exp(-x)) / x

        def phi(x):  # type: ignore[no-untyped-def]
            return (mpmath.exp(-x) - 1 + x) / x**2

        kap = k * tp
        c = (1 + mpmath.exp(-kap)) * kap / (kap**2 + pi**2)
        r = kap * (mpmath.mpf(1) / 2 - c) / (kap**2 + pi**2)
        j_cell = a**2 * (2 * phi(k * a) - mpmath.exp(-kap) * psi(k * a) ** 2) + 2 * tp * a * c * psi(k * a) + tp**2 * r
        p = (1 - mpmath.exp(-k * a)) * (1 - mpmath.exp(-k * b)) / k + tp * mpmath.exp(-k * a) * c
        q = -mpmath.exp(-2 * k * h)
        gn = sum((n - 1 - j) * q**j for j in range(n - 1))
        return complex(n * j_cell + p * p * gn)


def test_float64_evaluation_against_50_digits_where_it_could_cancel():
    rng = np.random.default_rng(3)
    rows = []
    for n in (1, 2, 3, 8, 32):
        for rho_n in (1e-6, 0.05, 0.5, 0.999):
            rho = rho_n / n
            for gt in (1e-7, 1e-3, 0.3, 30.0):
                w0_list = [0.0, 1e-5, 2.0, 300.0 * rng.random()]
                w0_list += [np.pi / rho * (1 + d) for d in (0.0, 1e-8, -3e-3, 2e-2)]  # w0 tp = pi
                w0_list += [np.pi * n * (1 + d) for d in (0.0, 1e-7, 1e-2)]  # CPMG resonance w0 h = pi/2
                rows += [(w0t, gt, n, rho) for w0t in w0_list]
    w0t, gt, n, rho = (np.array(v) for v in zip(*rows))
    j = finite_pulse_j_values(w0t, gt, np.ones(len(rows)), n.astype(int), rho)
    ref = np.array([_j_mpmath(*row) for row in rows])
    err = np.abs(j - ref)
    assert np.all(err <= 1e-12 * np.abs(ref) + 1e-17), (np.max(err / np.abs(ref)), rows[int(np.argmax(err / np.abs(ref)))])
    # chi itself: relative where Re J is not << |J|; where it is (g t = 1e-7), within the rounding
    # of |J| (the ideal kernel's 2e-15 |J| there, kernel.py)
    assert np.all(np.abs(j.real - ref.real) <= 1e-10 * np.abs(ref.real) + 2e-15 * np.abs(ref))


def test_pulse_length_to_zero_is_the_ideal_kernel():
    rng = np.random.default_rng(4)
    size = 4000
    n = rng.choice([1, 2, 3, 8, 64], size)
    t = 10.0 ** rng.uniform(-7, -3, size)
    w0, g = rng.uniform(0, 300, size) / t, 10.0 ** rng.uniform(-5, 2, size) / t
    ideal, d_ideal = lorentzian_j(w0, g, t, n)
    for eps in (1e-6, 1e-9):
        j, dj = finite_pulse_j(w0, g, t, n, eps * t / n)
        scale = np.abs(ideal) + 1e-300
        assert np.max(np.abs(j - ideal) / scale) < 30 * eps
        assert np.max(np.abs(dj - d_ideal) / (np.abs(d_ideal) + np.abs(ideal) * t)) < 30 * eps


def test_dj_dk_matches_finite_differences():
    rng = np.random.default_rng(5)
    size = 3000
    n = rng.choice([1, 2, 5, 16], size)
    t = 10.0 ** rng.uniform(-7, -4, size)
    rho = rng.uniform(0.01, 1.0, size) / n
    w0t = np.where(rng.random(size) < 0.3, np.pi / rho * (1 + rng.uniform(-0.05, 0.05, size)), rng.uniform(0, 300, size))
    w0, g, tp = w0t / t, 10.0 ** rng.uniform(-4, 1.5, size) / t, rho * t
    j, dj = finite_pulse_j(w0, g, t, n, tp)
    np.testing.assert_array_equal(finite_pulse_j_values(w0, g, t, n, tp), j)
    step = 2e-3 / t

    def fd(f):  # type: ignore[no-untyped-def]
        return (8.0 * (f(step) - f(-step)) - (f(2 * step) - f(-2 * step))) / (12.0 * step)

    dg = fd(lambda d: finite_pulse_j_values(w0, g + d, t, n, tp))  # dJ/dg = J'
    dw = fd(lambda d: finite_pulse_j_values(w0 + d, g, t, n, tp))  # dJ/dw0 = -i J'
    tol = 1e-7 * (np.abs(dj) + np.abs(j) * t)
    assert np.all(np.abs(dg - dj) <= tol)
    assert np.all(np.abs(dw + 1j * dj) <= tol)


def test_chi_takes_pi_s_like_n_and_is_exactly_the_ideal_kernel_elsewhere():
    rng = np.random.default_rng(6)
    a = rng.uniform(1e9, 1e10, (3, 4, 1, 1))
    w0 = rng.uniform(0, 2e7, (3, 4, 1, 1))
    g = 10.0 ** rng.uniform(4, 6, (3, 4, 1, 1))
    n = np.array([0, 1, 8, 32, 2])[None, None, :, None]
    pi_s = np.array([40e-9, 40e-9, 0.0, 40e-9, 100e-9])[None, None, :, None]
    t = np.geomspace(2e-6, 60e-6, 7)[None, None, None, :]
    ideal = chi_and_grads(a, w0, g, t, n)
    mixed = chi_and_grads(a, w0, g, t, n, pi_s)
    same = ((pi_s == 0) | (n == 0)) & np.ones(mixed[0].shape, dtype=bool)
    for x, y in zip(ideal, mixed):
        assert x.shape == y.shape == (3, 4, 5, 7)
        np.testing.assert_array_equal(x[same], y[same])
        assert np.all(x[~same] != y[~same])
    np.testing.assert_array_equal(chi_values(a, w0, g, t, n, pi_s), mixed[0])
    full = [np.broadcast_to(v, (3, 4, 5, 7))[:, :, 3].ravel() for v in (a, w0, g, t, n, pi_s)]  # CPMG-32, 40 ns
    j, dj = finite_pulse_j(*full[1:])
    np.testing.assert_allclose(mixed[0][:, :, 3].ravel(), full[0] * j.real, rtol=1e-15)
    np.testing.assert_allclose(mixed[2][:, :, 3].ravel(), full[0] * dj.real, rtol=1e-15)
    np.testing.assert_allclose(mixed[3][:, :, 3].ravel(), full[0] * dj.imag, rtol=1e-15)
    with pytest.raises(ValueError, match="overlap"):  # CPMG-32 over 1 us: 31 ns spacing < 40 ns pulses
        chi_values(1e9, 1e6, 1e5, 1e-6, 32, 40e-9)
    with pytest.raises(ValueError, match="pi_s"):
        chi_values(1e9, 1e6, 1e5, 1e-6, 2, -1e-9)
    chi_values(1e9, 1e6, 1e5, 1e-6, 0, 40e-9)  # an FID has no pi pulse: pi_s does not matter


def test_the_correction_grows_with_the_number_of_pulses():
    """A 40 ns pi pulse on a bath whose line sits at the CPMG-n filter peak (w0 = pi n / t): the
    finite pulses' filter passes less of it, and more so the more pulses (measured: -0.3 %, -1.2 %,
    -4.7 % for CPMG-8/16/32 at 4 us)."""
    tp, t = 40e-9, 4e-6
    rel = []
    for n in (8, 16, 32):
        w0 = np.pi * n / t
        ideal = chi_values(1e10, w0, 2e5, t, n)
        finite = chi_values(1e10, w0, 2e5, t, n, tp)
        rel.append(float(finite / ideal - 1.0))
    assert rel[0] < 0 and rel[0] > rel[1] > rel[2]
    # at the peak F ~ E(w0 tp)^2: 1 - E ~ (w0 tp)^2 (1/8 - 1/pi^2), w0 tp = pi n tp / t = 0.25, 0.5, 1.0
    assert -0.005 < rel[0] < -0.002 and -0.06 < rel[2] < -0.035
