"""Coherence read out as a lab does it (rt/coherence.py, rt/readout.py): each point's shots interleaved
with its own dark reference cancel a drift of the collected light that a single reference at the end
of the curve turns into bias; the stated sigma is the scatter of repeated measurements; the raw counts
in the message give C by the documented formula; an imperfect pi pulse reads as amplitude 1, offset
-(1 - f)/f. Truth: the simulator's quadrature C and the analytic readout formulas."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim import Sample, SimScanner, SimTimeTagger
from nvscope.firmware_sim.pulsed import (IDEAL_PULSES, PulsedImperfections, RateDrift, SimMicrowaveSource,
                                         SimPhotonCounter, SimPulseGenerator)
from nvscope.firmware_sim.qubit import LorentzianNoise, NoiseSpectrum, ReadoutParams, SimQubit
from nvscope.rt.coherence import acquire_coherence, interleaved_blocks, play_and_count
from nvscope.rt.hal import DeviceError, RigDevices
from nvscope.rt.kernels.pulses import ShotTiming, coherence_shot, cpmg_pulse_times, reference_shot
from nvscope.rt.readout import coherence_from_counts

LINE = NoiseSpectrum((LorentzianNoise(6e10, 0.0, 1.2566e6),))  # echo C from 0.98 at 2 us to ~0.1 at 12 us
T4 = np.array([4e-6, 6e-6, 8e-6, 10e-6])


def rig(imperfections: PulsedImperfections = IDEAL_PULSES, readout: ReadoutParams = ReadoutParams(),
        seed: int = 0) -> tuple[RigDevices, SimQubit]:
    """The simulated NV's counter and pulse generator with `imperfections` (scanner and tagger unused)."""
    qubit = SimQubit(LINE, readout, seed=seed)
    counter = SimPhotonCounter(qubit, seed=seed + 1)
    scanner = SimScanner()
    pulser = SimPulseGenerator(qubit, counter, imperfections=imperfections, seed=seed + 2)
    return RigDevices(scanner, SimTimeTagger(Sample(), scanner), SimMicrowaveSource(), counter, pulser), qubit


def single_reference_at_the_end(devices: RigDevices, t: np.ndarray, repetitions: int,
                                timing: ShotTiming) -> tuple[np.ndarray, np.ndarray]:
    """The readout before issue 13: every point, then one dark reference for the curve, the bright
    reference pooled over all shots."""
    counts = [play_and_count(devices.pulser, devices.counter, coherence_shot(ti, cpmg_pulse_times(ti, 1), timing),
                             repetitions) for ti in t]
    dark = play_and_count(devices.pulser, devices.counter, reference_shot(True, timing), repetitions)
    bright = sum(c.reference for c in counts) + dark.reference
    return coherence_from_counts(np.array([k.signal for k in counts]), repetitions, bright,
                                 repetitions * (len(t) + 1), dark.signal, repetitions)


def test_interleaved_references_cancel_a_drift_that_biases_a_single_reference():
    # 200 echo points (4 times x 50) of 20,000 shots at 1 photon per shot, the collected rate drifting
    # 10 % rms with a 0.5 s correlation time (a point plays 0.13 s): the old readout reads each point's
    # light against the curve's mean bright level and the dark level at its end.
    drift = PulsedImperfections(pi_fidelity=1.0, drift_rms=0.10, drift_time_s=0.5)
    bright = ReadoutParams(photons_per_shot=1.0, contrast=0.3)
    t = np.repeat(T4, 50)
    timing = ShotTiming()
    devices, qubit = rig(drift, bright, seed=3)
    truth = qubit.true_coherence(t, 1)
    msg = acquire_coherence(devices, "r", 0, 1, t, 20_000, timing, block_s=5e-3)
    pull = (msg.coherence - truth) / msg.sigma
    mean_err = np.mean(msg.coherence - truth) / (np.sqrt(np.sum(msg.sigma**2)) / len(t))
    assert abs(mean_err) < 3 and 0.8 < pull.std() < 1.25, (mean_err, pull.std())

    old_devices, old_qubit = rig(drift, bright, seed=3)
    c_old, s_old = single_reference_at_the_end(old_devices, t, 20_000, timing)
    old_pull = (c_old - truth) / s_old
    assert old_pull.std() > 4 and np.mean(np.abs(old_pull) > 3) > 0.5, old_pull.std()  # points off by many sigma


@pytest.mark.parametrize("fidelity", [1.0, 0.9])
def test_sigma_is_the_scatter_and_an_imperfect_pi_pulse_reads_as_amplitude_and_offset(fidelity):
    # 300 curves of 4 echo points at 100,000 shots, the default 0.03 photons per shot and contrast 0.25,
    # with the defaults' slow drift: pulls (C - C_expected) / sigma have std 1; C_expected = C - (1 - f)/f
    # (the dark reference is (1 - f) bright, the sequence keeps f of its coherence: firmware_sim/pulsed.py).
    devices, qubit = rig(PulsedImperfections(pi_fidelity=fidelity), seed=11)
    truth = qubit.true_coherence(T4, 1)
    expected = truth - (1.0 - fidelity) / fidelity
    draws = [acquire_coherence(devices, "r", i, 1, T4, 100_000) for i in range(300)]
    c = np.array([d.coherence for d in draws])
    sigma = np.array([d.sigma for d in draws])
    pull = (c - expected) / sigma
    assert 0.92 < pull.std() < 1.08 and np.all((0.85 < pull.std(axis=0)) & (pull.std(axis=0) < 1.15))
    assert np.all(np.abs(pull.mean(axis=0)) < 3.5 / np.sqrt(len(draws)))  # no point biased
    offset = np.mean(c - truth)
    offset_sigma = np.sqrt(np.sum(sigma**2)) / sigma.size
    assert abs(offset - (fidelity - 1.0) / fidelity) < 3 * offset_sigma
    if fidelity < 1:  # the contrast error is seen (and is not a spectral feature: one offset for every point)
        assert abs(offset) > 10 * offset_sigma


def test_the_raw_counts_give_c_and_sigma_by_the_documented_formulas():
    devices, _ = rig(PulsedImperfections(), seed=5)
    timing = ShotTiming(pi_s=60e-9, pi_half_s=30e-9)
    msg = acquire_coherence(devices, "r", 7, 2, T4, 30_000, timing, dark_repetitions=12_000)
    assert (msg.pi_s, msg.pi_half_s, msg.dark_repetitions, msg.repetitions) == (60e-9, 30e-9, 12_000, 30_000)
    assert devices.pulser.played == len(T4) * (30_000 + 12_000)
    for counts in (msg.signal_counts, msg.bright_counts, msg.dark_counts):
        assert counts.shape == T4.shape and counts.dtype == np.float64 and np.all(counts == np.round(counts))
        assert np.all(counts > 0)
    s, b, d = msg.signal_counts / 30_000, msg.bright_counts / 30_000, msg.dark_counts / 12_000
    assert np.allclose(msg.coherence, 2 * (s - d) / (b - d) - 1, rtol=0, atol=1e-12)
    # sigma: first-order propagation of the three counts' variances, derivatives by finite differences
    def c_of(x):
        return 2 * (x[0] / 30_000 - x[2] / 12_000) / (x[1] / 30_000 - x[2] / 12_000) - 1
    x = np.array([msg.signal_counts, msg.bright_counts, msg.dark_counts])
    p = np.clip((1 + msg.coherence) / 2, 0, 1)
    var = np.array([np.maximum(x[0], d * 30_000) + p * (1 - p) * (b - d) ** 2 * 30_000, x[1], x[2]])
    h = 1e-3 * np.eye(3)
    grads = [(c_of(x + h[k][:, None]) - c_of(x - h[k][:, None])) / 2e-3 for k in range(3)]
    assert np.allclose(msg.sigma, np.sqrt(sum(g**2 * v for g, v in zip(grads, var))), rtol=1e-6)


def test_dark_shots_default_to_a_third_and_default_blocks_interleave_in_s_d_d_s_order():
    devices, _ = rig(seed=2)
    msg = acquire_coherence(devices, "r", 0, 1, T4[:1], 30_000)
    assert msg.dark_repetitions == 9_900 and devices.pulser.played == 39_900
    plays = interleaved_blocks(1000, 330, 4)
    assert [k for k, _ in plays] == [False, True, False, True, False]  # S (DD) (SS) (DD) S
    assert sum(n for k, n in plays if not k) == 1000 and sum(n for k, n in plays if k) == 330
    # each kind's shots share one mean position in the point (a linear drift cancels)
    edges = np.cumsum([0] + [n for _, n in plays])
    for kind in (False, True):
        mid = [(a + b) / 2 for (k, n), a, b in zip(plays, edges[:-1], edges[1:]) if k == kind]
        w = [n for k, n in plays if k == kind]
        assert np.average(mid, weights=w) == pytest.approx(edges[-1] / 2)
    assert interleaved_blocks(5, 1, 8) == [(False, 5), (True, 1)]


def test_a_point_that_cannot_be_played_plays_nothing_and_no_contrast_is_one_line():
    devices, _ = rig(seed=1)
    with pytest.raises(ValueError, match="overlap"):  # CPMG-8 at 100 ns with 40 ns pi pulses
        acquire_coherence(devices, "r", 0, 8, np.array([10e-6, 100e-9]), 10)
    with pytest.raises(ValueError, match="dark_repetitions"):
        acquire_coherence(devices, "r", 0, 1, T4, 10, dark_repetitions=0)
    assert devices.pulser.played == 0
    with pytest.raises(DeviceError, match="^readout: .* no contrast"):
        coherence_from_counts(np.array([3.0, 4.0]), 10, np.array([2.0, 2.0]), 10, np.array([2.0, 3.0]), 10)


def test_a_point_whose_own_references_overlap_is_read_against_the_pooled_ones():
    # few shots: point 1's own dark count exceeds its bright one; the curve's references still separate
    c, sigma = coherence_from_counts(np.array([30.0, 28.0]), 1000, np.array([40.0, 20.0]), 1000,
                                     np.array([20.0, 25.0]), 1000)
    b, d = 60.0 / 2000, 45.0 / 2000
    assert c[1] == pytest.approx(2 * (0.028 - d) / (b - d) - 1) and np.isfinite(sigma).all()
    assert c[0] == pytest.approx(2 * (0.030 - 0.020) / (0.040 - 0.020) - 1)


def test_the_rate_drift_is_the_stated_ornstein_uhlenbeck_process():
    drift = RateDrift(rms=0.05, time_s=10.0, seed=4)
    x = []
    for _ in range(20_000):  # 1 s steps: 2,000 correlation times
        drift.mean_factor(1.0)
        x.append(drift.x)
    x = np.array(x)
    assert np.std(x) == pytest.approx(0.05, rel=0.1)
    lag = 10
    assert np.corrcoef(x[:-lag], x[lag:])[0, 1] == pytest.approx(np.exp(-1.0), abs=0.07)
    assert drift.elapsed_s == pytest.approx(20_000.0)
    assert RateDrift(0.0, 1.0).mean_factor(5.0) == 1.0
