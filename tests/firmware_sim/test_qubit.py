"""The simulated qubit: quadrature of the filter-function integral against the Lorentzian closed
form (two independent computations), the filter of the played pulse times, the pulsed devices
around it, and the readout computed in rt against its stated sigma."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.pulsed import SimMicrowaveSource, SimPhotonCounter, SimPulseGenerator
from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, ReadoutParams, SimQubit,
                                        chi_pulse_times, chi_quadrature, filter_function_cpmg,
                                        filter_function_times, mean_filter)
from nvscope.firmware_sim import SimScanner, SimTimeTagger, Sample
from nvscope.models.vqns.attenuation import attenuation
from nvscope.rt.coherence import acquire_coherence
from nvscope.rt.hal import DeviceError, PulseGeneratorConstraints, RigDevices
from nvscope.rt.kernels.pulses import ShotTiming, coherence_shot, cpmg_pulse_times, reference_shot


def pulsed_rig(qubit: SimQubit, seed: int = 0, constraints: PulseGeneratorConstraints | None = None) -> RigDevices:
    """A rig with the simulated NV's counter and pulse generator (and a scanner and tagger, unused)."""
    counter = SimPhotonCounter(qubit, seed=seed)
    scanner = SimScanner()
    return RigDevices(scanner, SimTimeTagger(Sample(), scanner), SimMicrowaveSource(), counter,
                      SimPulseGenerator(qubit, counter, constraints))


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
        assert filter_function_times(np.array([w]), t, s[1:-1])[0] == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_filter_of_any_times_is_the_cpmg_closed_form_for_cpmg_times_and_has_mean_2n_plus_1(n):
    t = 2e-6
    w = np.linspace(1.0, 400.0 * np.pi * max(n, 1) / t, 20001)
    brute = filter_function_times(w, t, cpmg_pulse_times(t, n))
    # 1e-4: the closed form loses digits right at its peaks (sin(n phi)/sin(phi) with phi near 0 at w t ~ 1e3)
    np.testing.assert_allclose(brute, filter_function_cpmg(w * t, n), rtol=1e-4, atol=1e-12)
    away = np.abs(np.sin(np.pi / 2 - w * t / (2 * max(n, 1)))) > 1e-2
    np.testing.assert_allclose(brute[away], filter_function_cpmg(w * t, n)[away], rtol=1e-8, atol=1e-12)
    assert mean_filter(n) == pytest.approx(2 * n + 1, rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 8])
def test_the_spin_plays_a_compiled_cpmg_with_the_quadrature_of_its_pulse_times(n):
    spectrum = NoiseSpectrum((LorentzianNoise(2e9, 2 * np.pi * 1e6, 2e5), OhmicNoise(eta=3e3, w_c=2 * np.pi * 2e6)))
    qubit = SimQubit(spectrum)
    for t in (0.3e-6, 3e-6, 20e-6):
        shot = coherence_shot(t, cpmg_pulse_times(t, n), ShotTiming(pi_s=20e-9, pi_half_s=10e-9))
        reference = chi_quadrature(spectrum, np.array([t]), n)[0]  # the CPMG closed form of F
        brute = chi_pulse_times(spectrum, t, cpmg_pulse_times(t, n))  # the sum over switching times
        assert brute == pytest.approx(reference, rel=1e-6, abs=1e-9)
        assert qubit.ms0_probability(shot) == pytest.approx(0.5 * (1 + np.exp(-reference)), rel=1e-9)


def test_the_spin_reads_the_pulse_times_it_is_played_not_a_pulse_number():
    spectrum = NoiseSpectrum((LorentzianNoise(2e9, 2 * np.pi * 1e6, 2e5),))
    qubit = SimQubit(spectrum)
    t = 4e-6
    k = np.arange(1, 5)
    uhrig = t * np.sin(np.pi * k / 10) ** 2  # UDD-4: not CPMG, same number of pulses
    chi_udd = chi_pulse_times(spectrum, t, uhrig)
    chi_cpmg = chi_quadrature(spectrum, np.array([t]), 4)[0]
    assert abs(chi_udd - chi_cpmg) > 0.01 * chi_cpmg
    assert qubit.ms0_probability(coherence_shot(t, uhrig)) == pytest.approx(0.5 * (1 + np.exp(-chi_udd)), rel=1e-9)
    assert qubit.ms0_probability(reference_shot(dark=False)) == 1.0
    assert qubit.ms0_probability(reference_shot(dark=True)) == 0.0


def test_gate_photons_follow_the_readout_model():
    readout = ReadoutParams(photons_per_shot=0.05, contrast=0.3)
    qubit = SimQubit(NoiseSpectrum(()), readout, seed=2)
    rig = pulsed_rig(qubit, seed=3)
    n = 2_000_000
    for dark, expected in ((False, 0.05), (True, 0.05 * 0.7)):
        rig.pulser.load(reference_shot(dark))
        rig.counter.arm()
        rig.pulser.play(n)
        signal, reference = rig.counter.gated_counts()
        assert abs(signal - n * expected) < 5 * np.sqrt(n * expected)
        assert abs(reference - n * 0.05) < 5 * np.sqrt(n * 0.05)  # re-polarized at the end of the laser
    assert abs(rig.counter.count(1.0) - 150e3) < 5 * np.sqrt(150e3)


def test_pulsed_devices_refuse_what_they_cannot_do():
    rig = pulsed_rig(SimQubit(NoiseSpectrum(())), constraints=PulseGeneratorConstraints(min_pulse_s=10e-9))
    with pytest.raises(DeviceError, match="play\\(\\) before load\\(\\)"):
        rig.pulser.play(10)
    with pytest.raises(DeviceError, match="shorter than the shortest pulse"):
        rig.pulser.load(coherence_shot(1e-6, cpmg_pulse_times(1e-6, 2)))  # ideal zero-length pulses
    rig.pulser.load(coherence_shot(1e-6, cpmg_pulse_times(1e-6, 2), ShotTiming(pi_s=20e-9, pi_half_s=10e-9)))
    with pytest.raises(DeviceError, match="repetitions"):
        rig.pulser.play(0)
    with pytest.raises(DeviceError, match="before arm"):
        rig.counter.gated_counts()
    with pytest.raises(DeviceError, match="Hz"):
        rig.microwave.set_frequency(-1.0)


def test_readout_noise_matches_its_sigma_and_the_rt_acquisition_path():
    # rt compiles the sequences, plays them on the pulse generator and computes C and sigma from the
    # counter's photons (signal, bright and dark references); the simulated NV only gives photons.
    qubit = SimQubit(NoiseSpectrum((OhmicNoise(eta=3e3, w_c=2 * np.pi * 2e6),)), seed=4)
    rig = pulsed_rig(qubit, seed=5)
    t = np.geomspace(0.2e-6, 20e-6, 15)
    truth = qubit.true_coherence(t, 2)
    draws = [acquire_coherence(rig, "r", i, 2, t, 100_000) for i in range(200)]
    c = np.array([d.coherence for d in draws])
    sigma = np.array([d.sigma for d in draws])
    assert draws[0].n_pulses == 2 and draws[0].repetitions == 100_000
    assert rig.pulser.played == 200 * 16 * 100_000  # 15 points and the dark reference per curve
    pull = (c - truth) / sigma
    assert abs(pull.mean()) < 0.05 and 0.9 < pull.std() < 1.1
    assert np.all(np.abs(pull.mean(axis=0)) < 3 / np.sqrt(200) * 1.5)  # no point biased
    with pytest.raises(ValueError, match="times > 0"):
        acquire_coherence(rig, "r", 0, 1, np.array([-1e-6]), 10)
    with pytest.raises(ValueError, match="overlap"):  # CPMG-8 at 100 ns with 40 ns pi pulses: unplayable
        acquire_coherence(rig, "r", 0, 8, np.array([1e-6, 100e-9]), 10, ShotTiming(pi_s=40e-9))
    assert rig.pulser.played == 200 * 16 * 100_000  # nothing was played
    with pytest.raises(DeviceError, match="no pulse generator"):
        acquire_coherence(RigDevices(rig.scanner, rig.tagger), "r", 0, 1, t, 10)
    with pytest.raises(DeviceError, match="no contrast"):
        dark_rig = pulsed_rig(SimQubit(NoiseSpectrum(()), ReadoutParams(photons_per_shot=0.0)))
        acquire_coherence(dark_rig, "r", 0, 1, t, 10)
