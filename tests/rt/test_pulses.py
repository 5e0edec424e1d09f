"""rt.kernels.pulses: the pulse timing defined once and the compilation of a shot."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.rt.kernels.pulses import (CHANNELS, ShotTiming, coherence_shot, cpmg_pulse_times, deer_pulse_times,
                                       echo_pulse_times, fid_pulse_times, microwave_pi_times, reference_shot,
                                       sequence_name, shortest_time)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64])
def test_cpmg_times_are_t_2k_minus_1_over_2n(n):
    t = 3.7e-6
    expected = [t * (2 * k - 1) / (2 * n) for k in range(1, n + 1)]
    np.testing.assert_allclose(cpmg_pulse_times(t, n), expected, rtol=1e-15)
    grid = cpmg_pulse_times(np.array([[1e-6, 2e-6]]), n)
    assert grid.shape == (1, 2, n)
    np.testing.assert_allclose(grid[0, 1], cpmg_pulse_times(2e-6, n), rtol=1e-15)
    gaps = np.diff(np.concatenate([[0.0], cpmg_pulse_times(t, n), [t]]))
    if n:  # half a spacing, n - 1 spacings of t/n, half a spacing
        np.testing.assert_allclose(gaps, [t / (2 * n)] + [t / n] * (n - 1) + [t / (2 * n)], rtol=1e-12)


def test_fid_echo_deer():
    assert fid_pulse_times(1e-6).shape == (0,)
    np.testing.assert_allclose(echo_pulse_times(1e-6), [0.5e-6])
    nv, rf = deer_pulse_times(2e-6, rf_offset_s=0.1e-6)
    np.testing.assert_allclose(nv, [1e-6])
    np.testing.assert_allclose(rf, [1.1e-6])
    with pytest.raises(ValueError, match="outside the echo"):
        deer_pulse_times(1e-6, rf_offset_s=0.6e-6)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="integer >= 0"):
            cpmg_pulse_times(1e-6, bad)


def test_a_compiled_shot_centres_its_pulses_on_the_ideal_times_and_reads_back():
    timing = ShotTiming(pi_s=40e-9, pi_half_s=20e-9)
    t, n = 2e-6, 4
    nv, rf = deer_pulse_times(t)
    shot = coherence_shot(t, cpmg_pulse_times(t, n), timing, rf_times=rf)
    assert {p.channel for p in shot.pulses} == set(CHANNELS) - {"mw_fm"}  # no FM in a pulsed shot
    mw = shot.on("mw")
    assert [p.duration_s for p in mw] == [20e-9] + [40e-9] * n + [20e-9]
    back_t, back_times = microwave_pi_times(shot)
    assert back_t == pytest.approx(t, rel=1e-12)
    np.testing.assert_allclose(back_times, cpmg_pulse_times(t, n), rtol=1e-9)
    (rf_pulse,) = shot.on("rf")
    assert rf_pulse.duration_s == 150e-9 and rf_pulse.centre_s - mw[0].centre_s == pytest.approx(t / 2)
    (laser,), (gate,), (ref,) = shot.on("laser"), shot.on("gate"), shot.on("gate_ref")
    assert laser.start_s >= max(p.end_s for p in mw + (rf_pulse,)) + timing.tail_s - 1e-15
    assert gate.start_s == laser.start_s and ref.end_s == pytest.approx(laser.end_s)
    assert shot.length_s == pytest.approx(laser.end_s)
    assert microwave_pi_times(reference_shot(dark=True)) is None
    assert len(reference_shot(dark=False).on("mw")) == 0 and len(reference_shot(dark=True).on("mw")) == 1


def test_a_sequence_that_cannot_be_played_is_one_clear_error():
    with pytest.raises(ValueError, match="overlap"):  # t/n = 25 ns < a 40 ns pi pulse
        coherence_shot(200e-9, cpmg_pulse_times(200e-9, 8), ShotTiming(pi_s=40e-9))
    coherence_shot(200e-9, cpmg_pulse_times(200e-9, 8), ShotTiming(pi_s=0.0, pi_half_s=0.0))  # ideal: fine
    with pytest.raises(ValueError, match="overlap"):  # the default timing is a real NV's 40 ns pi pulse
        coherence_shot(200e-9, cpmg_pulse_times(200e-9, 8))
    with pytest.raises(ValueError, match="inside \\(0, t\\)"):
        coherence_shot(1e-6, np.array([1.5e-6]))
    with pytest.raises(ValueError, match="t must be > 0"):
        coherence_shot(0.0, np.zeros(0))
    with pytest.raises(ValueError, match="gate_s"):
        ShotTiming(gate_s=2e-6, laser_s=3e-6)


def test_the_dither_cycle_puts_the_fm_high_in_the_signal_gate_and_low_in_the_reference_gate():
    from nvscope.rt.hal import DeviceError, PulseGeneratorConstraints
    from nvscope.rt.kernels.pulses import dither_cycle

    c = dither_cycle(50e-6)
    assert c.length_s == pytest.approx(100e-6) and "mw_fm" in CHANNELS
    (laser,), (mw,), (fm,), (gate,), (ref,) = (c.on(ch) for ch in ("laser", "mw", "mw_fm", "gate", "gate_ref"))
    assert (laser.start_s, laser.end_s) == (mw.start_s, mw.end_s) == (0.0, c.length_s)  # CW during the cycle
    assert (fm.start_s, fm.end_s) == (gate.start_s, gate.end_s) == (0.0, 50e-6)  # high: f + deviation
    assert (ref.start_s, ref.end_s) == (50e-6, 100e-6) and not c.on("rf")  # low: f - deviation
    assert [p.channel for p in c.pulses] == sorted((p.channel for p in c.pulses), key=CHANNELS.index)
    PulseGeneratorConstraints().check(c)
    old = PulseGeneratorConstraints(channels=("laser", "mw", "rf", "gate", "gate_ref"))
    with pytest.raises(DeviceError, match="no channel 'mw_fm'"):
        old.check(c)  # a generator without the FM output cannot dither the lock
    with pytest.raises(DeviceError, match="outside"):
        PulseGeneratorConstraints().check(dither_cycle(1e-3))  # 2 ms > the 1 ms longest sequence
    with pytest.raises(ValueError, match="gate_s"):
        dither_cycle(0.0)


def test_the_default_timing_is_a_real_nvs_pulses_and_the_gap_is_validated():
    timing = ShotTiming()
    assert (timing.pi_s, timing.pi_half_s, timing.min_gap_s) == (40e-9, 20e-9, 0.0)
    for bad in (-1e-9, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_gap_s"):
            ShotTiming(min_gap_s=bad)


def test_sequence_names_are_one_naming():
    assert [sequence_name(n) for n in (0, 1, 2, 24)] == ["FID", "echo", "CPMG-2", "CPMG-24"]
    assert sequence_name(np.int64(8)) == "CPMG-8"
    with pytest.raises(ValueError, match="integer >= 0"):
        sequence_name(-1)


@pytest.mark.parametrize("timing", [ShotTiming(), ShotTiming(pi_s=100e-9, pi_half_s=50e-9, min_gap_s=10e-9),
                                    ShotTiming(pi_s=20e-9, pi_half_s=10e-9, min_gap_s=200e-9),
                                    ShotTiming(pi_s=0.0, pi_half_s=0.0, min_gap_s=5e-9)])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 8, 64])
def test_shortest_time_is_where_the_shot_starts_to_compile(timing, n):
    t0 = shortest_time(n, timing)
    assert t0 > 0
    shot = coherence_shot(t0 * (1 + 1e-9), cpmg_pulse_times(t0 * (1 + 1e-9), n), timing)
    mw = shot.on("mw")
    gaps = [b.start_s - a.end_s for a, b in zip(mw, mw[1:])]
    assert min(gaps) >= timing.min_gap_s and min(gaps) == pytest.approx(timing.min_gap_s, abs=1e-15)
    coherence_shot(t0, cpmg_pulse_times(t0, n), timing)  # exactly at it: compiles (no rounding trap)
    with pytest.raises(ValueError, match="overlap"):
        coherence_shot(t0 * (1 - 1e-9), cpmg_pulse_times(t0 * (1 - 1e-9), n), timing)


def test_min_gap_is_enforced_between_microwave_pulses_only():
    timing = ShotTiming(min_gap_s=300e-9)
    t = 1e-6  # echo: 500 ns from pi/2 to pi centre, 470 ns free > 300 ns
    coherence_shot(t, echo_pulse_times(t), timing)
    with pytest.raises(ValueError, match="closer than 3e-07 s"):  # CPMG-2: 250 ns - 30 ns = 220 ns free
        coherence_shot(t, cpmg_pulse_times(t, 2), timing)
    nv, rf = deer_pulse_times(t)  # the RF pulse overlapping the NV pi pulse in time is no microwave gap
    coherence_shot(t, nv, timing, rf_times=rf)
    assert shortest_time(0, ShotTiming(pi_s=0.0, pi_half_s=0.0)) == 0.0  # ideal FID: any t > 0
