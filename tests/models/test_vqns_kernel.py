"""Fast Lorentzian kernel (models/vqns/kernel.py) against attenuation.py, torch autograd and
finite differences (docs/physics.md section 3.2).

References, each independent of the kernel's code:
* J: `attenuation.attenuation` (numpy, its own stable evaluation, itself tested against a
  60-digit reference in test_vqns_attenuation.py);
* J' = dJ/dk: torch autograd of `attenuation_torch` (float64), dchi/dg + i dchi/dw0 at a = 1;
* J': 4th-order central differences of the kernel's own J in g and in w0 (dJ/dg = J',
  dJ/dw0 = -i J', since J is holomorphic in k = g - i w0), and of numpy `attenuation` in g and
  in w0 (the Cauchy-Riemann pair dchi/dg = a Re J', dchi/dw0 = a Im J').

Measured on these grids (20k / 6k / 4k points; fd = finite difference): Re J vs numpy <= 2e-13
relative where chi > 1e-6 a t^2 and Re J >= 1e-2 |J|, 3e-16 a t^2 absolute; in the cancellation
corner Re J < 1e-2 |J| (g t << 1, a fifth of those points) up to 5e-12 relative = 2e-15 |J|:
there numpy and the kernel each carry ~1e-16 |J| absolute error and are each up to ~1e-11 off
a 60-digit value. J' vs torch autograd <= 6e-13 (median 4e-16); vs fd of J <= 1.6e-8 where
|J'| << |J| t (fd rounding) and <= 0.15 of the tolerance below, median 1e-11; Cauchy-Riemann
vs fd of numpy chi <= 4e-9 of |J'|, median 1e-12.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import torch

from nvscope.models.vqns.attenuation import attenuation, attenuation_torch
from nvscope.models.vqns.kernel import _exp_neg_v, chi_and_grads, chi_values, lorentzian_j, lorentzian_j_values

N_PULSES = np.array([0, 1, 2, 3, 4, 8, 16, 32, 64, 255, 256])


def _grid(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """w0 (rad/s), g (rad/s), t (s), n: g t in [1e-6, 1e3] (log), w0 t in [0, 1e3] (15% exactly
    0), 35% of the CPMG points at or next to a resonance w0 h = pi/2 + m pi (h = t/2n, relative
    offsets 0, 1e-9 .. 3e-2, either sign), a tenth of those at g t = 1e-6; t in [1e-7, 1e-3] s."""
    rng = np.random.default_rng(seed)
    n = rng.choice(N_PULSES, size)
    gt = 10.0 ** rng.uniform(-6.0, 3.0, size)
    w0t = np.where(rng.random(size) < 0.15, 0.0, rng.uniform(0.0, 1e3, size))
    nn = np.maximum(n, 1)
    m_max = np.maximum(np.floor((1e3 / (2 * nn) - math.pi / 2) / math.pi), 0)
    m = np.floor(rng.random(size) * (m_max + 1))
    offset = rng.choice([0.0, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2], size) * rng.choice([-1, 1], size)
    w0t_res = (math.pi / 2 + math.pi * m) * 2 * nn * (1.0 + offset)
    res = (rng.random(size) < 0.35) & (n > 0)
    w0t = np.where(res, w0t_res, w0t)
    gt = np.where(res & (rng.random(size) < 0.1), 1e-6, gt)
    t = 10.0 ** rng.uniform(-7.0, -3.0, size)
    return w0t / t, gt / t, t, n


def _torch_dj(w0: np.ndarray, g: np.ndarray, t: np.ndarray, n: np.ndarray) -> np.ndarray:
    """dchi/dg + i dchi/dw0 of attenuation_torch at a = 1 (= J'), float64 autograd."""
    w0_t = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    g_t = torch.tensor(g, dtype=torch.float64, requires_grad=True)
    chi = attenuation_torch(1.0, w0_t, g_t, torch.tensor(t), torch.tensor(n))
    chi.sum().backward()
    assert w0_t.grad is not None and g_t.grad is not None
    return g_t.grad.numpy() + 1j * w0_t.grad.numpy()


def _fd4(f, x: np.ndarray, step: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """4th-order central difference of f at x (elementwise steps)."""
    return (
        8.0 * (f(x + step) - f(x - step)) - (f(x + 2.0 * step) - f(x - 2.0 * step))
    ) / (12.0 * step)


def _fd_step(t: np.ndarray) -> np.ndarray:
    """J varies in k on the scale 1/t (e^-kt oscillates with period 2 pi/t in w0, G_n has
    width ~1/t around a resonance): a step 2e-3/t leaves a truncation error ~(2e-3)^4/30 ~ 1e-12
    relative and a rounding error ~1.5 eps |J| / step ~ 1e-13 |J| t, which matters only where
    |J'| << |J| t (the FID at |k| t >> 1, J' ~ J/k)."""
    return 2e-3 / t


def test_j_matches_numpy_attenuation() -> None:
    w0, g, t, n = _grid(20_000)
    # a few elements of the kernel's scalar path beyond the vector loops' ranges
    w0 = np.concatenate([w0, np.array([4.5e5, 9e5, 3e6]) / 1e-5])
    g = np.concatenate([g, np.array([10.0, 1e-3, 1.0]) / 1e-5])
    t = np.concatenate([t, np.full(3, 1e-5)])
    n = np.concatenate([n, np.array([0, 8, 100_001])])
    j, _ = lorentzian_j(w0, g, t, n)
    ref = attenuation(1.0, w0, g, t, n)
    t2 = t * t
    err = np.abs(j.real - ref)
    big_phase = np.abs(w0 * t) > 1e3
    # the phase w0 t is rounded differently (p = -e^-2x from x, not from the reduced z), which
    # beyond w0 t = 1e3 costs ~1e-16 w0 t relative in either implementation
    assert np.all(err[~big_phase] <= 1e-14 * t2[~big_phase])
    assert np.all(err[big_phase] <= 1e-9 * np.abs(ref[big_phase]))
    main = (np.abs(ref) > 1e-6 * t2) & ~big_phase
    clean = main & (np.abs(j.real) >= 1e-2 * np.abs(j))
    assert clean.sum() > 10_000
    assert np.max(err[clean] / np.abs(ref[clean])) <= 1e-12
    # Re J << |J| (g t << 1): both carry ~1e-16 |J| absolute, i.e. up to ~1e-11 relative
    corner = main & ~clean
    assert corner.sum() > 100
    assert np.all(err[corner] <= 1e-14 * np.abs(j[corner]))
    assert np.max(err[corner] / np.abs(ref[corner])) <= 1e-10


def test_j_exact_values() -> None:
    """Closed forms at simple points: FID J = t^2 phi(kt) at k = 0 is t^2/2; echo and CPMG-n
    at k = 0 are 0 (the switching function integrates to 0); FID at w0 = 0, g t = 1:
    t^2 (e^-1 - 1 + 1) = t^2/e; echo at w0 = 0: (2x - 3 + 4e^-x - e^-2x)/k^2 with x = g t/2."""
    t = np.array([1e-5, 1e-5, 1e-5, 1e-5, 1e-5])
    g = np.array([0.0, 0.0, 0.0, 1e5, 3e5])
    n = np.array([0, 1, 32, 0, 1])
    j, dj = lorentzian_j(np.zeros(5), g, t, n)
    x = 3e5 * 1e-5 / 2
    echo = (2 * x - 3 + 4 * math.exp(-x) - math.exp(-2 * x)) / 3e5**2
    expected = np.array([1e-10 / 2, 0.0, 0.0, 1e-10 / math.e, echo])
    np.testing.assert_allclose(j, expected, rtol=1e-14, atol=1e-30)
    # J' at k = 0: FID t^3 phi'(0) = -t^3/6; CPMG-n h^3 n (x m)'(0) = h^3 n m(0) = t^3/(12 n^2)
    np.testing.assert_allclose(
        dj[:3], [-1e-15 / 6, 1e-15 / 12, 1e-15 / (12 * 32**2)], rtol=1e-14, atol=1e-30
    )


def test_dj_matches_torch_autograd() -> None:
    w0, g, t, n = _grid(6_000, seed=1)
    _, dj = lorentzian_j(w0, g, t, n)
    ref = _torch_dj(w0, g, t, n)
    rel = np.abs(dj - ref) / np.abs(ref)
    assert np.max(rel) <= 1e-8
    assert np.median(rel) <= 1e-14


def test_dj_matches_finite_differences_of_j() -> None:
    """dJ/dg = J' and dJ/dw0 = -i J' (holomorphy), 4th-order central differences of the
    kernel's J; the stencil may cross g = 0 (J is entire, the kernel evaluates g < 0)."""
    w0, g, t, n = _grid(4_000, seed=2)
    j, dj = lorentzian_j(w0, g, t, n)
    step = _fd_step(t)
    fd_g = _fd4(lambda v: lorentzian_j(w0, v, t, n)[0], g, step)
    fd_w0 = _fd4(lambda v: lorentzian_j(v, g, t, n)[0], w0, step)
    tol = 1e-8 * np.abs(dj) + 1e-12 * np.abs(j) * t  # 1e-8 relative + the fd's rounding floor
    assert np.all(np.abs(fd_g - dj) <= tol)
    assert np.all(np.abs(fd_w0 - (-1j) * dj) <= tol)
    assert np.median(np.abs(fd_g - dj) / np.abs(dj)) <= 1e-10


def test_cauchy_riemann_against_numpy_finite_differences() -> None:
    """dchi/dg = a Re J' and dchi/dw0 = a Im J' from chi_and_grads against separate finite
    differences of numpy `attenuation` in g and in w0 (g t >= 0.05, steps below g/4)."""
    w0, g, t, n = _grid(4_000, seed=3)
    keep = g * t >= 0.05
    w0, g, t, n = w0[keep], g[keep], t[keep], n[keep]
    a = 2.5e9
    chi, dchi_da, dchi_dg, dchi_dw0 = chi_and_grads(a, w0, g, t, n)
    j, _ = lorentzian_j(w0, g, t, n)
    step = np.minimum(_fd_step(t), g / 4)
    fd_g = _fd4(lambda v: attenuation(a, w0, v, t, n), g, step)
    fd_w0 = _fd4(lambda v: attenuation(a, v, g, t, n), w0, step)
    # 1e-8 of a |J'| (the gradient's size), plus the fd's rounding floor
    tol = 1e-8 * np.hypot(dchi_dg, dchi_dw0) + 1e-12 * a * np.abs(j) * t
    assert np.all(np.abs(fd_g - dchi_dg) <= tol)
    assert np.all(np.abs(fd_w0 - dchi_dw0) <= tol)
    np.testing.assert_allclose(chi, a * dchi_da, rtol=1e-15)
    assert np.all(np.abs(chi - attenuation(a, w0, g, t, n)) <= 1e-14 * a * t * t)


def test_chi_and_grads_broadcasts() -> None:
    a = np.array([1e9, 3e9]).reshape(2, 1, 1, 1)  # restarts
    w0 = np.array([[2e6, 7e6], [1e6, 4e6]]).reshape(2, 2, 1, 1)  # (restarts, lorentzians)
    g = np.array([[1e5, 3e5], [5e4, 2e6]]).reshape(2, 2, 1, 1)
    n = np.array([0, 1, 8, 64]).reshape(1, 1, 4, 1)  # sequences
    t = np.geomspace(1e-7, 1e-4, 5).reshape(1, 1, 1, 5)  # times
    chi, dchi_da, dchi_dg, dchi_dw0 = chi_and_grads(a, w0, g, t, n)
    for out in (chi, dchi_da, dchi_dg, dchi_dw0):
        assert out.shape == (2, 2, 4, 5) and out.dtype == np.float64
    b = np.broadcast_arrays(a, w0, g, t, n)
    j, dj = lorentzian_j(b[1].ravel(), b[2].ravel(), b[3].ravel(), b[4].ravel())
    np.testing.assert_array_equal(chi.ravel(), b[0].ravel() * j.real)
    np.testing.assert_array_equal(dchi_da.ravel(), j.real)
    np.testing.assert_array_equal(dchi_dg.ravel(), b[0].ravel() * dj.real)
    np.testing.assert_array_equal(dchi_dw0.ravel(), b[0].ravel() * dj.imag)
    np.testing.assert_allclose(chi, attenuation(a, w0, g, t, n), rtol=1e-12)


def test_inlined_exp_cos_sin_within_an_ulp_or_two() -> None:
    """The vector loops' e^-x (fdlibm exp, cos, sin without branches) against numpy's libm."""

    @numba.njit
    def exp_neg_all(x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _exp_neg_v(x[i])
        return out

    rng = np.random.default_rng(5)
    re = np.concatenate([rng.uniform(0.0, 700.0, 50_000), 10.0 ** rng.uniform(-8, 2, 50_000)])
    im = np.concatenate([rng.uniform(-4e5, 4e5, 50_000), rng.uniform(-10.0, 10.0, 50_000)])
    im[:2000] = np.round(im[:2000] / (math.pi / 2)) * (math.pi / 2)  # next to multiples of pi/2
    x = re + 1j * im
    got = exp_neg_all(x)
    ref = np.exp(-x)
    mag = np.abs(ref)
    assert np.all(np.abs(got - ref) <= 4.5e-16 * mag)  # |e^-x| (1 ulp + 1 ulp + rounding)
    assert exp_neg_all(np.array([800.0 + 1.0j]))[0] == pytest.approx(math.exp(-700) * np.exp(-1j))


def test_threads_give_the_same_result() -> None:
    w0, g, t, n = _grid(70_000, seed=4)
    j1, dj1 = lorentzian_j(w0, g, t, n, workers=1)
    j2, dj2 = lorentzian_j(w0, g, t, n, workers=2)
    np.testing.assert_array_equal(j1, j2)
    np.testing.assert_array_equal(dj1, dj2)


def test_values_only_kernel_gives_the_same_j() -> None:
    """The values-only kernel (no derivative) returns J bit for bit, in every branch (vector
    categories A-D and the scalar path: g < 0, |w0 t| >= 4e5, n >= 1e5), on one and two threads."""
    w0, g, t, n = _grid(70_000, seed=7)
    w0[:50], g[50:100], n[100:150] = 1e6 / t[:50], -g[50:100], 100_000
    j, _ = lorentzian_j(w0, g, t, n, workers=1)
    np.testing.assert_array_equal(lorentzian_j_values(w0, g, t, n, workers=1), j)
    np.testing.assert_array_equal(lorentzian_j_values(w0, g, t, n, workers=2), j)
    a = np.array([1e9, 3e9]).reshape(2, 1, 1)
    chi = chi_values(a, w0[:40].reshape(1, 4, 10), g[:40].reshape(1, 4, 10), t[:40].reshape(1, 4, 10),
                     n[:40].reshape(1, 4, 10))
    assert chi.shape == (2, 4, 10)
    np.testing.assert_array_equal(chi, chi_and_grads(a, w0[:40].reshape(1, 4, 10), g[:40].reshape(1, 4, 10),
                                                     t[:40].reshape(1, 4, 10), n[:40].reshape(1, 4, 10))[0])
    with pytest.raises(ValueError, match=">= 0"):
        lorentzian_j_values(np.ones(2), np.ones(2), np.ones(2), np.array([0, -1]))
    assert lorentzian_j_values(np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=int)).shape == (0,)


def test_rejects_bad_input() -> None:
    one = np.ones(3)
    with pytest.raises(ValueError, match=">= 0"):
        lorentzian_j(one, one, one, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="integers"):
        lorentzian_j(one, one, one, np.array([0.0, 1.5, 2.0]))
    with pytest.raises(ValueError, match="same length"):
        lorentzian_j(one, one, np.ones(2), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="flat"):
        lorentzian_j(np.ones((3, 1)), one, one, np.zeros(3, dtype=int))
    j, dj = lorentzian_j(np.empty(0), np.empty(0), np.empty(0), np.empty(0, dtype=int))
    assert j.shape == dj.shape == (0,)
