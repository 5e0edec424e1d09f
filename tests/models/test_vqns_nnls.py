"""The batched non-negative least squares against scipy's Lawson-Hanson row by row (independent code),
on random and on nearly collinear Lorentzian kernels, and the amplitudes of varpro with finite pulses."""

import numpy as np
import pytest
from scipy.optimize import nnls

from nvscope.models.vqns.data import coherence_set
from nvscope.models.vqns.kernel import chi_values
from nvscope.models.vqns.nnls import nnls_batched
from nvscope.models.vqns.varpro import log_coherence_data, nonneg_amplitudes, varpro_fit

TAU = 30e-6
T = np.geomspace(0.05e-6, TAU, 20)
NS = np.array([0, 1, 2, 4, 8, 16, 32, 48])


def scipy_rows(k, y):
    """Reference: scipy.optimize.nnls on each row."""
    x = np.zeros(k.shape[:2])
    cost = np.empty(len(k))
    for i in range(len(k)):
        x[i], rn = nnls(k[i].T, y[i], maxiter=100 * k.shape[1])
        cost[i] = rn**2
    return x, cost


def lorentzian_kernels(rng, b, m, collinear=False):
    """Unit-amplitude chi of random Lorentzians (B, M, S*T), log-uniform over 1e4..1e8 rad/s; with
    `collinear`, odd columns are copies of the even ones moved by 1e-4 in ln g and ln w0."""
    lw0 = rng.uniform(np.log(1e4), np.log(1e8), (b, m))
    lg = rng.uniform(np.log(1e4) - 1.0, np.log(1e8), (b, m))
    if collinear:
        lw0[:, 1::2] = lw0[:, 0:m - 1:2] + 1e-4 * rng.standard_normal((b, m // 2))
        lg[:, 1::2] = lg[:, 0:m - 1:2] + 1e-4 * rng.standard_normal((b, m // 2))
    k = chi_values(1.0, np.exp(lw0)[:, :, None, None], np.exp(lg)[:, :, None, None], T[None, None, None],
                   NS[None, None, :, None])
    return k.reshape(b, m, -1) * TAU**2


def noisy_targets(rng, k, frac_zero=0.5):
    """y = a . k + noise with about half the true amplitudes zero (so the constraint binds)."""
    a = np.exp(rng.uniform(-3, 3, k.shape[:2])) * (rng.random(k.shape[:2]) > frac_zero)
    clean = np.einsum("bm,bmn->bn", a, k)
    return clean + 0.05 * np.abs(clean).mean() * rng.standard_normal(clean.shape)


def assert_same_solution(k, y, x, cost, amplitudes_too):
    ref, ref_cost = scipy_rows(k, y)
    yy = np.einsum("bn,bn->b", y, y)
    assert np.all(x >= 0.0)
    np.testing.assert_allclose(cost, ref_cost, rtol=0, atol=1e-10 * yy.max())
    assert np.all(np.abs(cost - ref_cost) <= 1e-10 * yy)
    fit_diff = np.abs(np.einsum("bm,bmn->bn", x - ref, k)).max(1)
    assert np.all(fit_diff <= 1e-8 * np.sqrt(yy))  # the fitted vectors agree
    if amplitudes_too:
        scale = np.abs(ref).max(1, keepdims=True)
        assert np.all(np.abs(x - ref) <= 1e-10 * scale)
    # the cost returned is the cost of the amplitudes returned
    r = y - np.einsum("bm,bmn->bn", x, k)
    np.testing.assert_allclose(cost, np.einsum("bn,bn->b", r, r), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("m", [1, 3, 8, 24, 30])
def test_random_problems_match_scipy(m):
    rng = np.random.default_rng(m)
    k = rng.standard_normal((40, m, 150))
    y = rng.standard_normal((40, 150)) + 0.5 * np.einsum("bm,bmn->bn", rng.random((40, m)), k)
    x, cost = nnls_batched(k, y)
    assert_same_solution(k, y, x, cost, amplitudes_too=True)
    assert 0 < (x > 0).sum() < x.size  # the constraint binds somewhere, not everywhere


@pytest.mark.parametrize("m", [4, 8, 24])
def test_lorentzian_kernels_match_scipy(m):
    rng = np.random.default_rng(10 + m)
    k = lorentzian_kernels(rng, 30, m)
    y = noisy_targets(rng, k)
    x, cost = nonneg_amplitudes(k, y)
    assert_same_solution(k, y, x, cost, amplitudes_too=False)


@pytest.mark.parametrize("m", [4, 24])
def test_nearly_collinear_kernels_match_scipy(m):
    rng = np.random.default_rng(20 + m)
    k = lorentzian_kernels(rng, 30, m, collinear=True)
    kn = k / np.linalg.norm(k, axis=2, keepdims=True)
    assert np.median(np.linalg.cond(kn)) > 1e5  # the case: ill-conditioned
    y = noisy_targets(rng, k)
    x, cost = nnls_batched(k, y)
    assert_same_solution(k, y, x, cost, amplitudes_too=False)
    _, ref_cost = scipy_rows(k, y)
    assert np.all(cost <= ref_cost * (1 + 1e-12) + 1e-300)  # never a worse point than scipy's


def test_all_zero_rows():
    """y pointing away from every column: the solution is a = 0 and the cost |y|^2 (mixed with normal rows)."""
    rng = np.random.default_rng(3)
    k = lorentzian_kernels(rng, 12, 8)
    y = noisy_targets(rng, k)
    y[::2] = -np.einsum("bm,bmn->bn", rng.random((6, 8)), k[::2])  # every gradient at 0 is positive
    y[1] = 0.0
    x, cost = nnls_batched(k, y)
    assert np.all(x[::2] == 0.0) and np.all(x[1] == 0.0)
    np.testing.assert_allclose(cost[::2], np.einsum("bn,bn->b", y[::2], y[::2]), rtol=1e-14)
    assert cost[1] == 0.0
    assert_same_solution(k, y, x, cost, amplitudes_too=False)


def test_support_guess_does_not_change_the_answer():
    rng = np.random.default_rng(4)
    k = lorentzian_kernels(rng, 20, 12)
    y = noisy_targets(rng, k)
    x0, c0 = nnls_batched(k, y)
    for start in (x0 > 0, ~(x0 > 0), np.zeros_like(x0, dtype=bool), np.ones_like(x0, dtype=bool)):
        x, c = nnls_batched(k, y, start)
        np.testing.assert_allclose(c, c0, rtol=1e-11, atol=1e-300)
        assert np.all(np.abs(np.einsum("bm,bmn->bn", x - x0, k)) <= 1e-8 * np.abs(y).max())


def test_degenerate_input_ends_feasible():
    """Duplicate and zero columns, NaN entries and an iteration cap of 1: finite, feasible, and never
    worse than a = 0; duplicates get the same total as scipy's answer."""
    rng = np.random.default_rng(5)
    k = lorentzian_kernels(rng, 10, 6)
    k[:, 1] = k[:, 0]  # exact duplicate
    k[:, 2] = 0.0  # a column that does nothing
    y = noisy_targets(rng, k)
    x, cost = nnls_batched(k, y)
    assert np.all(np.isfinite(x)) and np.all(x >= 0) and np.all(x[:, 2] == 0.0)
    _, ref_cost = scipy_rows(k, y)
    assert np.all(np.abs(cost - ref_cost) <= 1e-10 * np.einsum("bn,bn->b", y, y))
    k_nan = k.copy()
    k_nan[0, 3, 5] = np.nan
    x, cost = nnls_batched(k_nan, y)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(cost))
    x, cost = nnls_batched(k, y, max_iter=1)
    assert np.all(x >= 0) and np.all(cost <= np.einsum("bn,bn->b", y, y) * (1 + 1e-14))


def test_varpro_amplitudes_use_the_finite_pulses():
    """Curves made with 40 ns pi pulses (the kernel's finite-pulse form): at the true widths and centres
    varpro's projected amplitudes reproduce them exactly, which the ideal-pulse kernel cannot."""
    a_true = np.array([3e10, 1e11])
    g_true, w_true = np.array([2e5, 5e4]), np.array([2 * np.pi * 1e6, 2 * np.pi * 3e6])
    ns = np.array([1, 4, 8])
    t = np.geomspace(2e-6, 20e-6, 15)
    pi_s = 40e-9
    chi = chi_values(a_true[:, None, None], w_true[:, None, None], g_true[:, None, None], t[None, None],
                     ns[None, :, None], pi_s).sum(0)
    data = coherence_set(ns, np.tile(t, (3, 1)), np.exp(-chi), np.full((3, t.size), 1e-3), pi_s=pi_s)
    tau = float(t.max())
    phi0 = np.stack([np.log(g_true * tau), np.log(w_true * tau)], axis=-1).reshape(1, -1)
    a, g, w0, cost, _ = varpro_fit(data, phi0, tau, max_iter=0)
    y, w = log_coherence_data(data)
    np.testing.assert_allclose(a[0], a_true, rtol=1e-8)
    assert cost[0] <= 1e-12 * np.sum((y * w) ** 2)
