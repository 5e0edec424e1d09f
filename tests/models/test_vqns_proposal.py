"""The proposal and the incremental update, on curves from the simulator's quadrature of the filter
integral (firmware_sim's `chi_quadrature`) with photon shot noise."""

from __future__ import annotations

import numpy as np

from nvscope.firmware_sim.qubit import LorentzianNoise, NoiseSpectrum, shot_noise_coherence
from nvscope.models.vqns.data import coherence_set
from nvscope.models.vqns.fit import FitConfig, fit_spectrum
from nvscope.models.vqns.proposal import rank_candidates

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
    qubit = ShotNoiseQubit(NoiseSpectrum((BATH,)), seed=5)
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
    assert np.mean((truth >= w_lo) & (truth <= w_hi)) > 0.5
