"""Simulated HBT acquisitions histogrammed by brute force and compared with the expected g2 histogram.

docs/physics.md (photon correlations): the all-pairs count in bin k is base * (1/D) * integral over bin k of g2,
base = n_A n_B D / T, with g2 = 1 + sum_i w_i (g2_i - 1), w_i = (S_i / (sum_j S_j + B))^2.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from nvscope.firmware_sim import (
    DetectorParams,
    Emitter,
    Sample,
    SimScanner,
    SimTimeTagger,
    ThreeLevelRates,
    g2_parameters,
)

N_BINS, HALF_PS, FULL_PS = 215, 250_000, 500_000
D_PS = FULL_PS / N_BINS
CENTRE = slice(105, 110)  # bins within +-5.8 ns of tau = 0


def acquire(tagger: SimTimeTagger, total_s: float, read_s: float):
    """Tags of consecutive reads, joined, and the acquisition time in s."""
    t_start = tagger.start()
    t_a, t_b = [], []
    for _ in range(round(total_s / read_s)):
        a, b, t_end, lost = tagger.read(read_s)
        assert lost == 0
        t_a.append(a)
        t_b.append(b)
    return np.concatenate(t_a), np.concatenate(t_b), (t_end - t_start) * 1e-12


def allpairs_histogram(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """Every (A, B) pair with -250 ns <= tau < 250 ns, found with searchsorted, by the integer bin rule."""
    lo = np.searchsorted(t_b, t_a - HALF_PS, side="left")
    hi = np.searchsorted(t_b, t_a + HALF_PS, side="left")
    n = hi - lo
    i = np.repeat(np.arange(t_a.size), n)
    j = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
    tau = t_b[j] - t_a[i]
    assert tau.min() >= -HALF_PS and tau.max() < HALF_PS
    return np.bincount((tau + HALF_PS) * N_BINS // FULL_PS, minlength=N_BINS)


def model_g2(tagger: SimTimeTagger):
    """g2(tau in ps) written out from (a, t1, t2) of each emitter and the weights; and the weights."""
    s, b = tagger.signal_rates(), tagger.background_rate()
    w = (s / (s.sum() + b)) ** 2
    x, y, _ = tagger.scanner.position
    params = [g2_parameters(tagger.sample.local_rates(e, x, y)) for e in tagger.sample.emitters]

    def g2(tau_ps: float) -> float:
        t = abs(tau_ps) * 1e-12
        return 1.0 + sum(wi * (-(1 + a) * np.exp(-t / t1) + a * np.exp(-t / t2)) for wi, (a, t1, t2) in zip(w, params))

    return g2, w


def bin_averages(g2) -> np.ndarray:
    """(1/D) * integral over bin k of g2: bin k holds the integer delays ceil(k D) - 250000 ... (k+1 edge) - 1."""
    edges = -(-np.arange(N_BINS + 1) * FULL_PS // N_BINS) - HALF_PS - 0.5  # each integer ps covers +-0.5 ps
    return np.array([integrate.quad(g2, lo, hi, points=[0.0] if lo < 0 < hi else None, epsabs=1e-9)[0]
                     for lo, hi in zip(edges[:-1], edges[1:])]) / D_PS


def check_histogram_against_model(tagger: SimTimeTagger, total_s: float) -> None:
    t_a, t_b, t_acq = acquire(tagger, total_s, read_s=2.0)
    # Singles rates agree with the model (less the few percent-per-mille lost to dead time).
    rate = (t_a.size + t_b.size) / t_acq
    model_rate = tagger.signal_rates().sum() + tagger.background_rate()
    assert 0.99 * model_rate < rate < 1.001 * model_rate
    hist = allpairs_histogram(t_a, t_b)
    g2, w = model_g2(tagger)
    base = t_a.size * t_b.size * (D_PS * 1e-12) / t_acq
    expected = base * bin_averages(g2)
    assert expected.min() > 100  # enough counts for chi-square and for the g2(0) test to bite

    chi2 = np.sum((hist - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, N_BINS) > 1e-3, f"chi2 = {chi2:.1f} for {N_BINS} bins"
    # Each bin alone, two-sided Poisson p-value, Bonferroni over the bins.
    p_bin = 2 * np.minimum(stats.poisson.cdf(hist, expected), stats.poisson.sf(hist - 1, expected))
    assert p_bin.min() * N_BINS > 1e-3, f"worst bin {p_bin.argmin()}: {hist[p_bin.argmin()]} vs {expected[p_bin.argmin()]:.1f}"

    # g2(0) from the centre bins: their deficit below the uncorrelated level `base` scales (1 - g2(0)).
    g0_model = 1.0 - w.sum()
    assert abs(g2(0.0) - g0_model) < 1e-12
    uncorrelated = base * bin_averages(lambda tau: 1.0)[CENTRE]
    model_deficit = np.sum(uncorrelated - expected[CENTRE])
    g0_hat = 1.0 - (1.0 - g0_model) * np.sum(uncorrelated - hist[CENTRE]) / model_deficit
    g0_err = (1.0 - g0_model) * np.sqrt(hist[CENTRE].sum()) / model_deficit
    print(f"chi2 {chi2:.1f}/{N_BINS}, g2(0) = {g0_hat:.4f} +- {g0_err:.4f}, model {g0_model:.4f}, base {base:.0f}")
    assert g0_err < 0.03
    assert abs(g0_hat - g0_model) < 3 * g0_err, f"g2(0) = {g0_hat:.3f} +- {g0_err:.3f}, model {g0_model:.3f}"


def test_one_emitter_with_background_and_dead_time():
    sample = Sample([Emitter(0.0, 0.0, collection_efficiency=0.03)], background_rate=2e4)
    tagger = SimTimeTagger(sample, SimScanner(), DetectorParams(), seed=11)
    s, b = tagger.signal_rates()[0], tagger.background_rate()
    assert abs(tagger.expected_g2(0.0) - (1 - (s / (s + b)) ** 2)) < 1e-12  # 1 - rho^2 = 0.154
    check_histogram_against_model(tagger, total_s=30.0)


@pytest.mark.slow  # faster: test_one_emitter_with_background_and_dead_time
def test_two_emitters_with_background():
    other = ThreeLevelRates(k12=8e7, k21=1 / 15e-9, k23=2e7, k31=1 / 200e-9)
    sample = Sample([Emitter(0.0, 0.0, collection_efficiency=0.03),
                     Emitter(150e-9, 0.0, rates=other, collection_efficiency=0.03)], background_rate=1e4)
    tagger = SimTimeTagger(sample, SimScanner(position=(50e-9, 0.0, 0.0)), DetectorParams(), seed=12)
    s, b = tagger.signal_rates(), tagger.background_rate()
    assert 0.3 < s[1] / s.sum() < 0.7  # both emitters matter
    assert abs(tagger.expected_g2(0.0) - (1 - np.sum((s / (s.sum() + b)) ** 2))) < 1e-12
    check_histogram_against_model(tagger, total_s=30.0)
