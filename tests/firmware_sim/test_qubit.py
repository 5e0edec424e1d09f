"""The simulated qubit: quadrature of the filter-function integral against the Lorentzian closed
form (two independent computations), and the shot-noise readout against its stated sigma."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, SimQubit,
                                        chi_quadrature, filter_function_cpmg)
from nvscope.models.vqns.attenuation import attenuation
from nvscope.rt.coherence import acquire_coherence, cpmg_pulse_times
from nvscope.rt.hal import DeviceError


@pytest.mark.parametrize("n", [0, 1, 2, 8, 32])
@pytest.mark.parametrize("line", [LorentzianNoise(2e9, 2 * np.pi * 1e6, 2e5), LorentzianNoise(1e9, 0.0, 1e5)])
def test_quadrature_matches_the_lorentzian_closed_form(line, n):
    t = np.geomspace(0.1e-6, 30e-6, 12)
    q = chi_quadrature(NoiseSpectrum((line,)), t, n)
    exact = attenuation(line.a, line.w0, line.g, t, n)
    assert np.all(np.abs(q - exact) <= 1e-3 * exact + 1e-6)


def test_filter_function_against_the_switching_function():
    t, n = 1.0, 4
    s = np.concatenate([[0.0], cpmg_pulse_times(t, n), [t]])
    for w in (0.3, 2.0, 7.7, 4 * np.pi, 25.0):
        phases = np.exp(1j * w * s)
        signs = (-1.0) ** np.arange(n + 1)
        direct = 0.5 * abs(np.sum(signs * (phases[1:] - phases[:-1]))) ** 2  # (w^2/2)|int y e^{iws}|^2
        assert filter_function_cpmg(np.array([w * t]), n)[0] == pytest.approx(direct, rel=1e-9)


def test_readout_noise_matches_its_sigma_and_the_rt_acquisition_path():
    qubit = SimQubit(NoiseSpectrum((OhmicNoise(eta=3e3, w_c=2 * np.pi * 2e6),)), seed=4)
    t = np.geomspace(0.2e-6, 20e-6, 15)
    truth = qubit.true_coherence(t, 2)
    draws = [acquire_coherence(qubit, "r", i, 2, t, 100_000) for i in range(200)]
    c = np.array([d.coherence for d in draws])
    sigma = np.array([d.sigma for d in draws])
    assert draws[0].n_pulses == 2 and draws[0].repetitions == 100_000
    pull = (c - truth) / sigma
    assert abs(pull.mean()) < 0.05 and 0.9 < pull.std() < 1.1
    with pytest.raises(DeviceError, match="CPMG-n"):
        qubit.measure_coherence([np.array([0.1e-6])], np.array([1e-6]), 10)
    with pytest.raises(ValueError, match="times > 0"):
        acquire_coherence(qubit, "r", 0, 1, np.array([-1e-6]), 10)
