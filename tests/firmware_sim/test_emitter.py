"""The three-level emitter against independent computations: expm of the rate equations, null spaces, KS tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import interpolate, optimize, stats
from scipy.linalg import expm, null_space

from nvscope.firmware_sim.emitter import (
    RenewalStream,
    ThreeLevelRates,
    emission_rate,
    g2_emitter,
    g2_measured,
    g2_parameters,
    invert_survival_array,
    photon_intervals,
)

RATE_SETS = [
    ThreeLevelRates(),                                              # NV-like, pump at the PSF peak
    ThreeLevelRates(k12=1e6),                                       # weak pump: little bunching
    ThreeLevelRates(k12=3e8),                                       # far above saturation
    ThreeLevelRates(k12=4e7, k21=1 / 12e-9, k23=3e7, k31=1 / 150e-9),
]


def generator(r: ThreeLevelRates) -> np.ndarray:
    """dp/dt = M p, written out here from the level scheme (not taken from the module)."""
    return np.array([[-r.k12, r.k21, r.k31],
                     [r.k12, -r.k21 - r.k23, 0.0],
                     [0.0, r.k23, -r.k31]])


def steady_state(r: ThreeLevelRates) -> np.ndarray:
    p = null_space(generator(r))[:, 0]
    return p / p.sum()


@pytest.mark.parametrize("rates", RATE_SETS)
def test_g2_parameters_match_propagated_rate_equations(rates):
    # g2(tau) = p2(tau | ground at 0) / p2_ss: propagate the rate equations with expm.
    taus = np.concatenate([np.linspace(0, 50e-9, 51), np.linspace(50e-9, 3e-6, 60)])
    p2 = (expm(generator(rates)[None] * taus[:, None, None]) @ [1.0, 0.0, 0.0])[:, 1]
    expected = p2 / steady_state(rates)[1]
    np.testing.assert_allclose(g2_emitter(taus, rates), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(g2_emitter(-taus, rates), expected, rtol=0, atol=1e-9)
    a, t1, t2 = g2_parameters(rates)
    assert 0 < t1 < t2 and a >= 0


def test_default_g2_parameters_are_nv_like():
    a, t1, t2 = g2_parameters(ThreeLevelRates())
    assert a == pytest.approx(0.7475, abs=1e-3)
    assert t1 == pytest.approx(12.94e-9, rel=1e-3)
    assert t2 == pytest.approx(148.6e-9, rel=1e-3)


def test_complex_eigenvalues_are_refused():
    with pytest.raises(ValueError, match="complex"):
        g2_parameters(ThreeLevelRates(k12=1e7, k21=1e5, k23=1e7, k31=1e7))


@pytest.mark.parametrize("rates", RATE_SETS)
def test_emission_rate_is_k21_times_the_steady_excited_population(rates):
    assert emission_rate(rates) == pytest.approx(rates.k21 * steady_state(rates)[1], rel=1e-12)


def test_g2_measured_mixes_emitters_and_background():
    r1, r2 = ThreeLevelRates(), ThreeLevelRates(k12=6e7)
    s, b = np.array([3e4, 1e4]), 5e3
    w = (s / (s.sum() + b)) ** 2
    assert g2_measured(0.0, s, b, [r1, r2]) == pytest.approx(1 - w.sum(), abs=1e-12)
    assert g2_measured(0.0, [1e5, 1e5], 0.0, [r1, r1]) == pytest.approx(0.5, abs=1e-12)
    tau = np.linspace(-300e-9, 300e-9, 41)
    expected = 1 + w[0] * (g2_emitter(tau, r1) - 1) + w[1] * (g2_emitter(tau, r2) - 1)
    np.testing.assert_allclose(g2_measured(tau, s, b, [r1, r2]), expected, atol=1e-12)
    np.testing.assert_allclose(g2_measured(tau, [1e5], 0.0, [r1]), g2_emitter(tau, r1), atol=1e-12)


# --- the interval between collected photons --------------------------------------------------------

def sub_generator(r: ThreeLevelRates, eta: float) -> np.ndarray:
    """Row-convention sub-generator on {1, 2, 3}: 2 -> 1 uncollected at k21 (1 - eta), collected = exit."""
    return np.array([[-r.k12, r.k12, 0.0],
                     [r.k21 * (1 - eta), -r.k21 - r.k23, r.k23],
                     [r.k31, 0.0, -r.k31]])


def interval_survival(t: np.ndarray, alpha: np.ndarray, r: ThreeLevelRates, eta: float) -> np.ndarray:
    """S(t) = alpha expm(T t) 1, propagated from one sorted t to the next (expm of the gaps)."""
    t = np.asarray(t, dtype=float)
    order = np.argsort(t)
    gaps = np.diff(np.concatenate([[0.0], t[order]]))
    steps = expm(sub_generator(r, eta)[None] * gaps[:, None, None])
    out = np.empty(t.size)
    v = np.asarray(alpha, dtype=float)
    for k, step in zip(order, steps):
        v = v @ step
        out[k] = v.sum()
    return out


def interval_cdf(samples: np.ndarray, alpha: np.ndarray, r: ThreeLevelRates, eta: float):
    """The expm CDF as a callable for kstest: exact at 2000 order statistics, PCHIP in between.

    (scipy's expm costs ~1 ms a call; the interpolation is checked against expm at the midpoints.)
    """
    x = np.sort(samples)
    grid = np.unique(np.concatenate([[0.0], x[:: max(1, x.size // 2000)], [x[-1]]]))
    cdf = interpolate.PchipInterpolator(grid, 1.0 - interval_survival(grid, alpha, r, eta))
    mid = 0.5 * (grid[1:] + grid[:-1])[::10]
    assert np.abs(cdf(mid) - (1.0 - interval_survival(mid, alpha, r, eta))).max() < 1e-4  # vs KS critical ~1e-2
    return cdf


@pytest.mark.parametrize("rates, eta", [(ThreeLevelRates(), 0.013), (RATE_SETS[3], 0.3), (RATE_SETS[2], 1.0)])
@pytest.mark.parametrize("start", ["ground", "stationary"])
def test_interval_sampler_matches_the_phase_type_law(rates, eta, start):
    law = photon_intervals(rates, eta)
    alpha = np.array([1.0, 0.0, 0.0]) if start == "ground" else steady_state(rates)
    c = law.renewal if start == "ground" else law.stationary
    u = 1.0 - np.random.default_rng(7).random(20_000)
    t = invert_survival_array(u, c, law.decay)
    assert stats.kstest(t, interval_cdf(t, alpha, rates, eta)).pvalue > 1e-3
    # Mean: -alpha T^-1 1, and after a collected photon it is 1 / (eta * emission rate).
    mean = -alpha @ np.linalg.solve(sub_generator(rates, eta), np.ones(3))
    assert abs(t.mean() - mean) < 4 * t.std() / np.sqrt(t.size)
    if start == "ground":
        assert mean == pytest.approx(1 / (eta * emission_rate(rates)), rel=1e-9)
        assert law.rate == pytest.approx(eta * emission_rate(rates), rel=1e-12)


def test_interval_sampler_inverts_the_survival_everywhere():
    # From u near 1 (the antibunched start, S = 1 - O(t^2)) to the far tail: root-find the expm CDF.
    rates, eta = ThreeLevelRates(), 0.5
    law = photon_intervals(rates, eta)
    u = np.concatenate([1 - np.logspace(-15, -1, 15), np.logspace(-16, -0.01, 15)])
    t = invert_survival_array(u, law.renewal, law.decay)
    for ui, ti in zip(u, t):
        ref = optimize.brentq(lambda x: interval_survival(np.array([x]), np.array([1.0, 0, 0]), rates, eta)[0] - ui,
                              0.0, 1e-3, xtol=1e-18, rtol=1e-13)
        assert abs(ti - ref) <= 1e-9 * ref + 2e-15


def test_renewal_stream_is_stationary_and_has_the_right_rate():
    law = photon_intervals(ThreeLevelRates(), 0.05)
    stream = RenewalStream(np.random.default_rng(3), law, t0_ps=0)
    t = stream.arrivals(10**11)  # 0.1 s
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 10**11 <= stream.t_next
    assert abs(t.size - 0.1 * law.rate) < 4 * np.sqrt(0.1 * law.rate)
    intervals = np.diff(t) * 1e-12
    cdf = interval_cdf(intervals, np.array([1.0, 0, 0]), ThreeLevelRates(), 0.05)
    assert stats.kstest(intervals, cdf).pvalue > 1e-3


@pytest.mark.parametrize("psf", [1.0, 1e-2, 1e-4, 1e-6, 1e-8])
def test_interval_law_of_a_dim_emitter_keeps_its_precision(psf):
    # Far from the spot both pump and collection fall with the PSF: the mean interval must stay
    # 1 / (eta R) to full precision (a floating-point eigen-solver loses the slow rate here).
    rates, eta = ThreeLevelRates().pumped(psf), 0.013 * psf
    law = photon_intervals(rates, eta)
    assert np.all(law.decay > 0)
    for c in (law.renewal, law.stationary):
        assert c.sum() == pytest.approx(1.0, abs=1e-12)  # S(0) = 1
    assert np.sum(law.renewal / law.decay) * eta * emission_rate(rates) == pytest.approx(1.0, rel=1e-12)


def test_dark_emitter_never_emits():
    assert photon_intervals(ThreeLevelRates().pumped(1e-100), 1e-100).rate == 0  # < 1e-20 /s: dark
    law = photon_intervals(ThreeLevelRates(k12=0.0), 0.1)
    assert law.rate == 0
    assert RenewalStream(np.random.default_rng(0), law, 0).arrivals(10**12).size == 0
