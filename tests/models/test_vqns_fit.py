"""The variational fit: recovers a known 3-Lorentzian spectrum (M fixed at 3, the truth); validates its input."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.data import CoherenceDataError, coherence_set
from nvscope.models.vqns.fit import FitConfig, fit_spectrum
from nvscope.models.vqns.spectrum import lorentzian_spectrum
from nvscope.models.vqns.varpro import nonneg_amplitudes

A = np.array([4e10, 2e11, 1e10])
W0 = np.array([2 * np.pi * 5e4, 2 * np.pi * 2e6, 2 * np.pi * 0.5e6])
G = np.array([1e5, 3e5, 5e4])
NS = np.array([0, 1, 2, 3, 8, 16, 32])


def curves(noise: float, seed: int = 1):
    t = np.array([np.geomspace(0.05e-6, 30e-6, 40) for _ in NS])
    c = np.exp(-sum(attenuation(A[j], W0[j], G[j], t, NS[:, None]) for j in range(3)))
    rng = np.random.default_rng(seed)
    return coherence_set(NS, t, np.clip(c + noise * rng.standard_normal(c.shape), -0.05, 1.05),
                         np.full(c.shape, noise))


def test_fit_recovers_three_lorentzians():
    data = curves(0.005)
    fit = fit_spectrum(data, FitConfig(lorentzians=3, restarts=100, seed=0))
    assert fit.ok, fit.message
    assert fit.chi2[fit.best] / fit.dof < 1.3
    omega = np.geomspace(*fit.omega_range, 200)
    truth = lorentzian_spectrum(omega, A, W0, G)
    s_fit, s_lo, s_hi = fit.band(omega)
    assert np.sqrt(np.mean(np.log(s_fit / truth) ** 2)) < 0.2
    assert (s_lo <= s_hi).all() and np.median(s_hi / s_lo) > 1.0  # a band, not a line


def test_the_fit_does_not_depend_on_how_wide_the_curves_are_padded():
    """The same curves NaN-padded to 40 and to 64 columns (a run file's chunk width) give the same fit."""
    data = curves(0.005)
    pad = np.full((len(NS), 24), np.nan)
    wide = coherence_set(NS, np.hstack([data.t, pad]), np.hstack([data.coherence, pad]), np.hstack([data.sigma, pad]))
    cfg = FitConfig(lorentzians=2, restarts=8, seed=0)
    a, b = fit_spectrum(data, cfg), fit_spectrum(wide, cfg)
    omega = np.geomspace(*a.omega_range, 50)
    for x, y in zip(a.band(omega), b.band(omega)):
        assert np.allclose(x, y, rtol=1e-9), np.max(np.abs(x / y - 1))


@pytest.mark.parametrize("m", [3, 6])  # all supports at once / Lawson-Hanson row by row
def test_nonneg_amplitudes_match_brute_force(m):
    rng = np.random.default_rng(3)
    kw = rng.random((20, m, 30))
    yw = rng.normal(size=(20, 30))
    a, cost = nonneg_amplitudes(kw, yw)
    assert (a >= 0).all()
    from scipy.optimize import nnls
    for i in range(20):
        ref, rnorm = nnls(kw[i].T, yw[i])
        assert np.allclose(a[i], ref, atol=1e-8)
        assert cost[i] == pytest.approx(rnorm**2, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("mutate, words", [
    (lambda n, t, c: (n, t, np.where(c > 0.5, 1.2, c)), "outside"),
    (lambda n, t, c: (n, t[:, :-1], c), "shapes differ"),
    (lambda n, t, c: (n, np.full_like(t, np.nan), c), "no finite"),
    (lambda n, t, c: (n, t[:, ::-1], c), "not strictly increasing"),
    (lambda n, t, c: (n, -t, c), "times must be > 0"),
    (lambda n, t, c: (n - 5, t, c), "n_pulses must be >= 0"),
])
def test_bad_curves_are_one_clear_error(mutate, words):
    t = np.array([np.geomspace(1e-7, 1e-5, 10)] * 2)
    c = np.exp(-t / 5e-6)
    n, t2, c2 = mutate(np.array([0, 1]), t, c)
    with pytest.raises(CoherenceDataError, match=words):
        coherence_set(n, t2, c2)


def test_fit_recovers_three_lorentzians_from_noise_free_curves():
    t = np.array([np.geomspace(0.05e-6, 30e-6, 40) for _ in NS])
    c = np.exp(-sum(attenuation(A[j], W0[j], G[j], t, NS[:, None]) for j in range(3)))
    fit = fit_spectrum(coherence_set(NS, t, c), FitConfig(lorentzians=3, restarts=100, seed=0))
    omega = np.geomspace(*fit.omega_range, 200)
    s_fit, _, _ = fit.band(omega)
    assert np.sqrt(np.mean(np.log(s_fit / lorentzian_spectrum(omega, A, W0, G)) ** 2)) < 1e-3


def test_band_covers_the_truth_on_noisy_curves():
    """The calibrated band (bootstrap + Laplace) covers the true spectrum at >= 60 % of the probed
    frequencies on average over independent noise realizations (sigma = 0.01)."""
    coverage = []
    for seed in (1, 2, 3):
        fit = fit_spectrum(curves(0.01, seed), FitConfig(lorentzians=3, restarts=100, seed=0))
        omega = np.geomspace(*fit.omega_range, 200)
        truth = lorentzian_spectrum(omega, A, W0, G)
        _, s_lo, s_hi = fit.band(omega)
        coverage.append(np.mean((truth >= s_lo) & (truth <= s_hi)))
    assert np.mean(coverage) >= 0.6 and min(coverage) >= 0.4, coverage


def test_noisy_curves_are_judged_in_units_of_their_own_sigma():
    """At 1e6 shots (sigma ~ 0.046) an echo's points fall outside [-0.05, 1.05] by noise alone: they are
    data, not bad input; a point far beyond its error bar is still refused, naming how far."""
    rng = np.random.default_rng(3)
    t = np.array([np.geomspace(1e-7, 1e-5, 40)] * 2)
    sigma = np.full(t.shape, 0.046)
    c = np.exp(-t / 5e-6) + sigma * rng.standard_normal(t.shape)
    assert (c > 1.05).any()  # what the fixed range used to refuse
    data = coherence_set(np.array([0, 1]), t, c, sigma)
    assert data.sigma_given and np.array_equal(data.coherence, c)
    c[1, 3] = 1.05 + 6 * 0.046
    with pytest.raises(CoherenceDataError, match=r"coherence\[1, 3\] = 1.33 is outside \[-0.05, 1.05\] by 6.0 sigma"):
        coherence_set(np.array([0, 1]), t, c, sigma)
    with pytest.raises(CoherenceDataError, match="outside"):  # without sigma: the fixed range
        coherence_set(np.array([0, 1]), t, np.clip(c, None, 1.2))
