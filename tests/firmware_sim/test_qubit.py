"""The simulated qubit: quadrature of the filter-function integral against the Lorentzian closed
form (two independent computations), the filter of the played pulse times, the pulsed devices
around it, and the readout computed in rt against its stated sigma."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.pulsed import SimMicrowaveSource, SimPhotonCounter, SimPulseGenerator
from nvscope.firmware_sim.qubit import (LorentzianNoise, NoiseSpectrum, OhmicNoise, ReadoutParams, SimQubit,
                                        chi_pulse_times, chi_pulses, chi_quadrature, filter_function_cpmg,
                                        filter_function_times, mean_filter, pulse_events)
from nvscope.models.vqns.kernel import chi_values
from nvscope.firmware_sim import SimScanner, SimTimeTagger, Sample
from nvscope.models.vqns.attenuation import attenuation
from nvscope.rt.coherence import acquire_coherence, dark_repetitions_for
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
        shot = coherence_shot(t, cpmg_pulse_times(t, n), ShotTiming(pi_s=0.0, pi_half_s=0.0))  # finite: below
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
    ideal = ShotTiming(pi_s=0.0, pi_half_s=0.0)
    assert qubit.ms0_probability(coherence_shot(t, uhrig, ideal)) == pytest.approx(0.5 * (1 + np.exp(-chi_udd)), rel=1e-9)
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
        rig.pulser.load(coherence_shot(1e-6, cpmg_pulse_times(1e-6, 2), ShotTiming(pi_s=0.0, pi_half_s=0.0)))  # ideal
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
    truth = qubit.true_coherence(t, 2, ShotTiming())  # as played: the default timing's 40 ns pi pulses
    draws = [acquire_coherence(rig, "r", i, 2, t, 100_000) for i in range(200)]
    per_curve = 15 * (100_000 + dark_repetitions_for(100_000))  # 15 points, each with its dark reference
    c = np.array([d.coherence for d in draws])
    sigma = np.array([d.sigma for d in draws])
    assert draws[0].n_pulses == 2 and draws[0].repetitions == 100_000
    assert rig.pulser.played == 200 * per_curve
    pull = (c - truth) / sigma
    assert abs(pull.mean()) < 0.05 and 0.9 < pull.std() < 1.1
    assert np.all(np.abs(pull.mean(axis=0)) < 3 / np.sqrt(200) * 1.5)  # no point biased
    with pytest.raises(ValueError, match="times > 0"):
        acquire_coherence(rig, "r", 0, 1, np.array([-1e-6]), 10)
    with pytest.raises(ValueError, match="overlap"):  # CPMG-8 at 100 ns with 40 ns pi pulses: unplayable
        acquire_coherence(rig, "r", 0, 8, np.array([1e-6, 100e-9]), 10, ShotTiming(pi_s=40e-9))
    assert rig.pulser.played == 200 * per_curve  # nothing was played
    with pytest.raises(DeviceError, match="no pulse generator"):
        acquire_coherence(RigDevices(rig.scanner, rig.tagger), "r", 0, 1, t, 10)
    with pytest.raises(DeviceError, match="no contrast"):
        dark_rig = pulsed_rig(SimQubit(NoiseSpectrum(()), ReadoutParams(photons_per_shot=0.0)))
        acquire_coherence(dark_rig, "r", 0, 1, t, 10)


def _brute_filter(events, w: np.ndarray) -> np.ndarray:
    """(w^2/2) |int y(s) e^{iws} ds|^2 by Gauss-Legendre over the pieces of y: sin ramp up over the
    first pi/2 pulse, cos ramps over the pi pulses and the last pi/2, flat between."""
    c, d, sg = np.array(events.centres), np.array(events.durations), events.signs()
    last, pieces = len(c) - 1, []
    for j in range(len(c)):
        if d[j] > 0:
            if j == 0:
                f = (lambda u, T=d[j]: np.sin(np.pi * u / (2 * T)))
            elif j == last:
                f = (lambda u, T=d[j], s=sg[j]: s * np.cos(np.pi * u / (2 * T)))
            else:
                f = (lambda u, T=d[j], s=sg[j]: s * np.cos(np.pi * u / T))
            pieces.append((c[j] - d[j] / 2, d[j], f))
        if j < last:
            start, end = c[j] + d[j] / 2, c[j + 1] - d[j + 1] / 2
            pieces.append((start, end - start, lambda u, s=sg[j + 1]: s * np.ones_like(u)))
    y_hat = np.zeros(w.shape, dtype=np.complex128)
    for start, length, f in pieces:
        x, wt = np.polynomial.legendre.leggauss(int(w.max() * length / 2) + 30)
        u = 0.5 * length * (x + 1)
        y_hat += np.exp(1j * np.outer(w, start + u)) @ (0.5 * length * wt * f(u))
    return 0.5 * w**2 * np.abs(y_hat) ** 2


@pytest.mark.parametrize("timing, n, t", [(ShotTiming(), 4, 2e-6), (ShotTiming(pi_s=100e-9, pi_half_s=50e-9), 3, 1e-6),
                                          (ShotTiming(), 0, 1e-6), (ShotTiming(pi_s=40e-9, pi_half_s=0.0), 8, 2e-6),
                                          (ShotTiming(pi_s=0.0, pi_half_s=0.0), 5, 2e-6)])
def test_the_filter_of_the_played_pulses_is_that_of_their_switching_function(timing, n, t):
    events = pulse_events(coherence_shot(t, cpmg_pulse_times(t, n), timing))
    w = np.linspace(1e3, 3e9, 2000)  # up to w pi_s = 120
    f = events.filter_function(w)
    np.testing.assert_allclose(f, _brute_filter(events, w), rtol=1e-7, atol=1e-9 * f.max())
    if timing.pi_s == 0:  # ideal: the sum over the switching times, mean 2n + 1
        np.testing.assert_allclose(f, filter_function_times(w, t, cpmg_pulse_times(t, n)), rtol=1e-9, atol=1e-12)
        assert events.mean_filter(w) == pytest.approx(2 * n + 1, rel=1e-12)
    elif n:  # far above 1/pi_s the pi pulses are no longer seen: what is left is the pi/2 pulses'
        assert events.mean_filter(np.array([1e4 / timing.pi_s]))[0] < (1.0 if timing.pi_half_s == 0 else 1e-6) + 1e-6


@pytest.mark.parametrize("n, t", [(1, 0.3e-6), (4, 2e-6), (16, 4e-6), (32, 3e-6)])
def test_played_finite_pulses_agree_with_the_models_closed_form(n, t):
    # two independent calculations: the simulator's quadrature of the played pulses' filter, and
    # models/vqns/finite_pulses.py's time-domain closed form (pi/2 pulses ideal in both here)
    w0, g = np.pi * n / t, 2e5  # the line at the filter's peak, where the pulse length matters most
    a = 0.3 / float(chi_values(1.0, w0, g, t, n))
    qubit = SimQubit(NoiseSpectrum((LorentzianNoise(a, w0, g),)))
    shot = coherence_shot(t, cpmg_pulse_times(t, n), ShotTiming(pi_s=40e-9, pi_half_s=0.0))
    chi_sim = -np.log(qubit.shot_coherence(shot))
    chi_model = float(chi_values(a, w0, g, t, n, 40e-9))
    chi_ideal = float(chi_values(a, w0, g, t, n))
    assert chi_sim == pytest.approx(chi_model, rel=2e-4)
    assert abs(chi_ideal - chi_model) > 10 * 2e-4 * chi_model  # 0.8 % (echo at 0.3 us) .. 10 % (CPMG-32 at 3 us)


def test_a_real_fid_beats_and_echo_and_cpmg_refocus_the_detuning():
    bath = NoiseSpectrum((LorentzianNoise(1e10, 0.0, 1e5),))
    real, bare = SimQubit(bath, detuning_hz=0.3e6), SimQubit(bath, detuning_hz=0.0, hyperfine_hz=0.0)
    timing = ShotTiming()  # 20 ns pi/2 pulses
    t = np.linspace(0.05e-6, 2e-6, 60)
    c_real, c_bare = real.true_coherence(t, 0, timing), bare.true_coherence(t, 0, timing)
    assert np.all(np.diff(c_bare) < 0)  # the bath alone: a smooth decay
    assert c_real.min() < -0.2 and np.sum(np.diff(np.sign(np.diff(c_real))) != 0) >= 4  # beats
    area = t - timing.pi_half_s + 4 * timing.pi_half_s / np.pi  # int y ds with the pi/2 pulses' sin ramps
    beats = np.mean([np.cos(2 * np.pi * (0.3e6 + m * -2.16e6) * area) for m in (-1, 0, 1)], axis=0)
    np.testing.assert_allclose(c_real, c_bare * beats, rtol=1e-12, atol=1e-14)
    for n, tm in ((1, 0.0), (3, 0.0), (8, 0.0), (1, 20e-9), (3, 20e-9)):  # refocused: not changed at all
        shot = coherence_shot(3e-6, cpmg_pulse_times(3e-6, n), ShotTiming(pi_half_s=tm))
        assert real.shot_coherence(shot) == pytest.approx(bare.shot_coherence(shot), rel=1e-12)
    # an even number of pi pulses leaves the two pi/2 pulses' ramps unbalanced: a phase (4/pi - 1) pi_half_s
    shot = coherence_shot(3e-6, cpmg_pulse_times(3e-6, 2), timing)
    rest = np.mean([np.cos(2 * np.pi * (0.3e6 + m * -2.16e6) * (4 / np.pi - 1) * 20e-9) for m in (-1, 0, 1)])
    assert real.shot_coherence(shot) == pytest.approx(bare.shot_coherence(shot) * rest, rel=1e-12)
    assert 0.99 < rest < 0.999
    with pytest.raises(ValueError, match="finite"):
        SimQubit(bath, detuning_hz=float("nan"))
