"""The proposal and the incremental update, on curves from the simulator's quadrature of the filter
integral (firmware_sim's `chi_quadrature`) with photon shot noise."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.qubit import LorentzianNoise, NoiseSpectrum, shot_noise_coherence
from nvscope.models.vqns.data import coherence_set
from nvscope.models.vqns.fit import FitConfig, fit_spectrum
from nvscope.models.vqns.proposal import (expected_information, feasible_times, measurement_time, noise_model,
                                          rank_candidates)
from nvscope.rt.kernels.pulses import ShotTiming, shortest_time

# a broad bath plus a narrow line at 1.2 MHz that FID and echo do not see (the demo's spectrum)
BATH = LorentzianNoise(a=6e10, w0=0.0, g=2 * np.pi * 2e5)
LINE = LorentzianNoise(a=1.5e10, w0=2 * np.pi * 1.2e6, g=2 * np.pi * 3e4)
T = np.geomspace(0.1e-6, 40e-6, 30)


class ShotNoiseQubit:
    """CPMG-n curves by quadrature with photon shot noise (`shot_noise_coherence`), one seeded stream."""

    def __init__(self, spectrum: NoiseSpectrum, seed: int):
        self.spectrum, self.rng = spectrum, np.random.default_rng(seed)

    def measure(self, n_pulses: int, t: np.ndarray, repetitions: int) -> tuple[np.ndarray, np.ndarray]:
        return shot_noise_coherence(self.spectrum, n_pulses, t, repetitions, self.rng)


def measure(qubit: ShotNoiseQubit, ns):
    rows = [qubit.measure(n, T, 10_000_000) for n in ns]
    return coherence_set(np.array(ns), np.array([T] * len(ns)), np.array([r[0] for r in rows]),
                         np.array([r[1] for r in rows]))


def test_proposal_prefers_the_sequence_that_sits_on_the_unseen_line():
    qubit = ShotNoiseQubit(NoiseSpectrum((BATH, LINE)), seed=3)
    data = measure(qubit, [0, 1])
    fit = fit_spectrum(data, FitConfig(restarts=40, seed=1))
    omega = np.geomspace(*fit.omega_range, 128)
    # CPMG-32's filter peaks at 1.2 MHz for t = 13 us (on the line); CPMG-2 probes the bath, which
    # FID and echo already pin down
    proposal = rank_candidates(fit, data, [2, 32], omega)
    assert proposal.ranked[0] == 32
    assert proposal.scores[1] > 1.2 * proposal.scores[0]
    assert proposal.sensitivity.shape == (2, 128) and (proposal.sensitivity >= 0).all()


def test_incremental_update_matches_the_cold_band():
    """The warm update (from the 3-curve fit) gives the cold fit's point estimate and band on 4 curves,
    and covers the truth as often as the cold band does. Coverage of one noise realization is one
    correlated draw (the Lorentzian's 5 parameters move the whole band together: at qubit seed 5 the
    readout terms A = 1.03, B = -0.03 shift it and the cold band covers 0.31), so the truth's coverage
    is averaged over three realizations; the band's calibration is tested in test_vqns_fit.py."""
    coverage = []
    for seed in (5, 6, 7):
        qubit = ShotNoiseQubit(NoiseSpectrum((BATH,)), seed=seed)
        data3 = measure(qubit, [0, 1, 2])
        c, sigma = qubit.measure(4, T, 10_000_000)
        data4 = data3.append(4, T, c, sigma)
        cfg = FitConfig(restarts=40, seed=2)
        cold = fit_spectrum(data4, cfg)
        warm = fit_spectrum(data4, cfg, warm=fit_spectrum(data3, cfg))
        omega = np.geomspace(*cold.omega_range, 128)
        c_mean, c_lo, c_hi = cold.band(omega)
        w_mean, w_lo, w_hi = warm.band(omega)
        assert warm.ok and cold.ok
        assert np.median(np.abs(np.log(w_mean / c_mean))) < 0.1
        assert np.median(np.abs(np.log((w_hi / w_lo) / (c_hi / c_lo)))) < 0.5
        truth = BATH(omega)
        w_cover = np.mean((truth >= w_lo) & (truth <= w_hi))
        assert abs(w_cover - np.mean((truth >= c_lo) & (truth <= c_hi))) <= 0.15
        coverage.append(w_cover)
    assert np.mean(coverage) > 0.5, coverage


def test_expected_information_is_the_log_det_of_the_predicted_covariance():
    """0.5 ln det(I + Sigma^-1/2 Cov Sigma^-1/2) with numpy's covariance and slogdet on the (T, T)
    matrix, for a population larger and smaller than the number of times (rank-deficient Cov)."""
    rng = np.random.default_rng(0)
    for b, t in ((300, 12), (6, 20)):
        pred = 0.5 + 0.02 * rng.standard_normal((b, 3)) @ rng.standard_normal((3, t))
        sigma = rng.uniform(0.005, 0.02, t)
        cov = np.cov(pred, rowvar=False) / np.outer(sigma, sigma)
        expected = 0.5 * np.linalg.slogdet(np.eye(t) + cov)[1]
        assert expected_information(pred, sigma) == pytest.approx(expected, rel=1e-10)
    assert expected_information(np.ones((5, 4)), np.full(4, 0.01)) == 0.0  # no spread: nothing to learn


def test_measurement_time_counts_every_shot_and_its_dark_reference():
    """Per point, repetitions x the sequence's shot + round(dark_fraction x repetitions) dark reference
    shots, from the shot's layout: lead, t, half the last pi/2, tail, laser; the dark one: lead, half a
    pi, tail, laser."""
    timing = ShotTiming(pi_s=60e-9, pi_half_s=30e-9, lead_s=0.8e-6, tail_s=0.2e-6, laser_s=2.5e-6, gate_s=0.3e-6)
    t = np.array([1e-6, 5e-6, 20e-6])
    shots = (timing.lead_s + t + timing.pi_half_s / 2 + timing.tail_s + timing.laser_s).sum()
    dark = timing.lead_s + timing.pi_s / 2 + timing.tail_s + timing.laser_s
    assert measurement_time(4, t, timing, 1000, 1.0) == pytest.approx(1000 * (shots + 3 * dark), rel=1e-12)
    assert measurement_time(4, t, timing, 1000, 0.33) == pytest.approx(1000 * shots + 330 * 3 * dark, rel=1e-12)
    with pytest.raises(ValueError, match="overlap"):  # a time the pulses cannot play has no duration
        measurement_time(64, np.array([0.1e-6]), timing, 1000)


class StubFit:
    """A band population whose CPMG-2 curve spreads at high coherence and CPMG-4 at low, CPMG-4 a
    little less (20 %): the noise at each coherence decides which tells more."""

    sigma_used = None

    def __init__(self):
        self.z = np.random.default_rng(1).standard_normal((400, 1))

    def band(self, omega):
        return np.ones_like(omega), 0.9 * np.ones_like(omega), 1.1 * np.ones_like(omega)

    def population_predictions(self, n, t, pi_s=0.0):
        mean, spread = {2: (0.9, 0.010), 4: (0.1, 0.008)}[n]
        return mean + spread * self.z * np.ones((1, len(t)))


def _noisy_set(sigma_of_c):
    c = np.linspace(0.02, 0.98, 25)
    t = np.geomspace(1e-6, 40e-6, 25)
    return coherence_set(np.array([1]), t[None], c[None], sigma_of_c(c)[None])


def test_ranking_follows_the_noise_at_each_candidates_coherence():
    """The first pass divided every score by one noise scalar, which ranks CPMG-2 first whatever the
    noise (its spread is 25 % larger). With the readout noise growing with the contrast (sigma^2 =
    1e-5 + 4e-4 C, as photon shot noise does), CPMG-2's spread at C = 0.9 is hidden in 3x the noise
    of CPMG-4's at C = 0.1, and CPMG-4 tells more; with flat noise CPMG-2 does."""
    fit, omega = StubFit(), np.geomspace(1e5, 1e8, 16)
    timing = ShotTiming(pi_s=0.0, pi_half_s=0.0)
    kw = dict(times=np.geomspace(1e-6, 40e-6, 20), timing=timing)
    flat = rank_candidates(fit, _noisy_set(lambda c: np.full_like(c, 0.01)), [2, 4], omega, **kw)
    growing_set = _noisy_set(lambda c: np.sqrt(1e-5 + 4e-4 * c))
    growing = rank_candidates(fit, growing_set, [2, 4], omega, **kw)
    assert flat.ranked.tolist() == [2, 4] and growing.ranked.tolist() == [4, 2]
    np.testing.assert_allclose(noise_model(growing_set).coefficients, [1e-5, 4e-4, 0.0], atol=1e-9)
    # scores are information per second: the same pulses over the same times take the same time
    np.testing.assert_allclose(growing.scores, growing.information / growing.seconds)
    assert growing.seconds[0] == pytest.approx(growing.seconds[1])


def test_no_time_the_pulses_cannot_play_is_proposed_and_repeats_are_candidates():
    """The first pass scored CPMG-64 down to 0.1 us (1.6 ns between pi pulses). Now a candidate counts
    only its times t >= shortest_time(n, timing), and one with too few is not proposed; sequences
    already measured (echo, CPMG-2) are scored like any other."""
    qubit = ShotNoiseQubit(NoiseSpectrum((BATH, LINE)), seed=3)
    data = measure(qubit, [1, 2])
    fit = fit_spectrum(data, FitConfig(restarts=40, seed=1))
    omega = np.geomspace(*fit.omega_range, 64)
    real = ShotTiming()  # 40 ns pi, 20 ns pi/2
    p = rank_candidates(fit, data, [1, 2, 32, 64], omega, times=T, timing=real)
    assert p.points.tolist() == [int((T >= shortest_time(n, real)).sum()) for n in (1, 2, 32, 64)]
    assert p.points[3] < T.size and p.points[3] == feasible_times(64, T, real).size
    assert set(p.ranked.tolist()) == {1, 2, 32, 64} and (p.information > 0).all()
    assert p.information[0] < p.information[2]  # a repeat of echo adds less than CPMG-32 on the line
    slow = ShotTiming(pi_s=0.6e-6, pi_half_s=0.3e-6)  # CPMG-64 needs t >= 57.6 us > 40 us
    q = rank_candidates(fit, data, [1, 2, 32, 64], omega, times=T, timing=slow, min_points=8)
    assert 64 not in q.ranked and np.isnan(q.scores[3]) and q.points[3] == 0
    assert q.points[2] == (T >= 28.8e-6).sum() < 8 and 32 not in q.ranked
    assert q.ranked.tolist()[0] in (1, 2) and (q.sensitivity[2:] == 0).all()
