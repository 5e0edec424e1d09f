"""rt.kernels.lock against independent calculations: a plain-Python lock, a Lorentzian dip with Poisson
counts written here, numerical derivatives, and the shot-noise limit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvscope.rt.kernels.lock import (dither_delta, feedforward, lock_cycles, lock_lost, lock_pixel, lock_step,
                                     lorentzian_error_slope, recovery_sweep, shot_noise_sigma, sweep_minimum)

FWHM = 8e6          # Hz
HWHM = FWHM / 2
CONTRAST = 0.15
RATE = 150e3        # counts/s off resonance
GATE = 1e-3         # s per dither point: a cycle is 2 ms, ~266 photons at lock
F0 = 5.539e9        # Hz, the NV transition at 0.30 T
GAIN = 0.3
DELTA = FWHM / (2 * math.sqrt(3))


def rate(f, f0=F0):
    """The CW ODMR dip (counts/s): a Lorentzian of FWHM and depth CONTRAST below RATE."""
    return RATE * (1.0 - CONTRAST * HWHM**2 / ((np.asarray(f) - f0) ** 2 + HWHM**2))


def expected_error(f_c, f0=F0, delta=DELTA):
    up, down = rate(f_c + delta, f0), rate(f_c - delta, f0)
    return (up - down) / (up + down)


SLOPE = lorentzian_error_slope(FWHM, CONTRAST)


def error_and_derivative(x, fwhm, contrast, delta):
    """The expected dither error of a Lorentzian dip at centre offset x, and d/dx, written out here."""
    g2 = (fwhm / 2) ** 2
    up, um = 1 - contrast * g2 / ((x + delta) ** 2 + g2), 1 - contrast * g2 / ((x - delta) ** 2 + g2)
    dup = 2 * contrast * g2 * (x + delta) / ((x + delta) ** 2 + g2) ** 2
    dum = 2 * contrast * g2 * (x - delta) / ((x - delta) ** 2 + g2) ** 2
    return (up - um) / (up + um), 2 * (dup * um - up * dum) / (up + um) ** 2


def python_lock(f_start, counts, delta, fwhm, contrast, gain, n_settle):
    """The lock of the module docstring, written again in plain Python: centres, errors and the estimate."""
    slope = error_and_derivative(0.0, fwhm, contrast, delta)[1]
    f, centres, errors, used = float(f_start), [float(f_start)], [], []
    for i, (a, b) in enumerate(counts):
        a, b = float(a), float(b)
        e = (a - b) / (a + b) if a + b > 0 else 0.0
        if i >= n_settle and a + b > 0:
            used.append((f, e, a + b))
        f -= min(max(gain * e / slope, -delta), delta)
        centres.append(f)
        errors.append(e)
    if not used:
        return centres, errors, (f, f, math.inf, 0)
    n_total = sum(n for _, _, n in used)
    noise = math.sqrt(sum(n * (1 - e * e) for _, e, n in used))
    f_lin = sum(n * (fi - e / slope) for fi, e, n in used) / n_total
    f0 = f_lin
    for _ in range(6):  # Newton on sum N (e - E(f_i - f0)) = 0
        r = sum(n * (e - error_and_derivative(fi - f0, fwhm, contrast, delta)[0]) for fi, e, n in used)
        d = sum(n * error_and_derivative(fi - f0, fwhm, contrast, delta)[1] for fi, e, n in used)
        if not d > 0:
            break
        f0 -= r / d
        if abs(r / d) < 1e-3:
            break
    if not abs(f0 - f_lin) <= fwhm / 2:
        return centres, errors, (f, f_lin, noise / (slope * n_total), len(used))
    d = sum(n * error_and_derivative(fi - f0, fwhm, contrast, delta)[1] for fi, e, n in used)
    if not d > 0:  # no root to trust: the linear reading
        return centres, errors, (f, f_lin, noise / (slope * n_total), len(used))
    return centres, errors, (f, f0, noise / d, len(used))


def run_pixel(rng, f_start, n_cycles, n_settle=10, f0=F0, gate=GATE):
    """One pixel as the rt loop runs it: acquire a cycle at the current centre, call lock_pixel, repeat."""
    counts = np.zeros((n_cycles, 2), np.int64)
    f_c = f_start
    for k in range(n_cycles):
        counts[k] = rng.poisson(rate([f_c + DELTA, f_c - DELTA], f0) * gate)
        f_c, f_lock, f_sigma, n_used = lock_pixel(f_start, counts[:k + 1], DELTA, FWHM, CONTRAST, GAIN, n_settle)
    return counts, f_lock, f_sigma, n_used


# --- the formulas -----------------------------------------------------------------------------------

def test_dither_sits_at_the_steepest_point_and_the_slope_is_0_027_per_mhz():
    x = np.linspace(0.0, FWHM, 200_001)
    assert abs(x[np.argmax(np.gradient(rate(F0 + x), x))] - dither_delta(FWHM)) < 100.0  # Hz
    h = 1.0  # Hz: central difference of the dip model's error at resonance
    numeric = (expected_error(F0 + h) - expected_error(F0 - h)) / (2 * h)
    assert SLOPE == pytest.approx(numeric, rel=1e-6)
    assert SLOPE * 1e6 == pytest.approx(0.027, abs=0.001)
    # Any dither, any contrast: the general formula against the same numerical derivative.
    for delta, contrast in [(1e6, 0.3), (5e6, 0.05)]:
        up = lambda fc: RATE * (1 - contrast * HWHM**2 / ((fc - F0) ** 2 + HWHM**2))  # noqa: E731
        e = lambda fc: (up(fc + delta) - up(fc - delta)) / (up(fc + delta) + up(fc - delta))  # noqa: E731
        assert lorentzian_error_slope(FWHM, contrast, delta) == pytest.approx((e(F0 + h) - e(F0 - h)) / (2 * h),
                                                                             rel=1e-6)


def test_error_sign_resonance_below_centre_lowers_the_centre():
    assert expected_error(F0 + 1e6) > 0  # the dip model agrees with the convention
    f_new, e = lock_step(F0 + 1e6, 110, 100, DELTA, SLOPE, GAIN)
    assert e == pytest.approx(10 / 210) and f_new == pytest.approx(F0 + 1e6 - GAIN * (10 / 210) / SLOPE)
    f_new, e = lock_step(F0, 100, 110, DELTA, SLOPE, GAIN)
    assert e < 0 and f_new > F0
    assert lock_step(F0, 1000, 0, DELTA, SLOPE, GAIN)[0] == F0 - DELTA  # clipped to one delta
    assert lock_step(F0, 0, 0, DELTA, SLOPE, GAIN) == (F0, 0.0)  # no photon, no move


def test_shot_noise_sigma_is_the_poisson_spread_of_the_error():
    rng = np.random.default_rng(3)
    a, b = rng.poisson(1200.0, 200_000), rng.poisson(1000.0, 200_000)
    e = (a - b) / (a + b)
    assert shot_noise_sigma(2200.0, 1.0, 200 / 2200) == pytest.approx(e.std(), rel=0.01)
    assert shot_noise_sigma(0, SLOPE) == math.inf


# --- the kernel is the algorithm ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_kernel_equals_a_plain_python_loop_on_random_counts(dtype):
    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(1, 80))
        counts = rng.poisson(rng.uniform(0.5, 400.0, (n, 2))).astype(dtype)  # zeros and large asymmetries
        counts[rng.random(n) < 0.1] = 0
        fwhm, contrast = rng.uniform(4e6, 12e6), rng.uniform(0.05, 0.3)
        delta, gain, n_settle = dither_delta(fwhm), rng.uniform(0.05, 1.0), int(rng.integers(0, 10))
        slope = lorentzian_error_slope(fwhm, contrast)
        f_start = F0 + rng.normal(0, 5e6)
        centres, errors, (f_next, f_lock, f_sigma, n_used) = python_lock(f_start, counts, delta, fwhm, contrast,
                                                                          gain, n_settle)
        k_centres, k_errors = lock_cycles(f_start, counts, delta, slope, gain)
        np.testing.assert_allclose(k_centres, centres, rtol=1e-15, atol=0)
        np.testing.assert_allclose(k_errors, errors, rtol=1e-12, atol=1e-15)
        got = lock_pixel(f_start, counts, delta, fwhm, contrast, gain, n_settle)
        assert got[0] == pytest.approx(f_next, rel=1e-15) and got[3] == n_used
        if n_used:
            assert got[1] == pytest.approx(f_lock, rel=1e-14) and got[2] == pytest.approx(f_sigma, rel=1e-12)
        else:
            assert got[1] == got[0] and got[2] == math.inf


# --- the closed loop on a simulated dip -------------------------------------------------------------------

@pytest.mark.parametrize("side", [+1, -1])
def test_converges_from_one_hwhm_above_and_below(side):
    # Noiseless counts (expected values): every cycle moves towards the resonance, geometrically.
    counts = []
    f_c = F0 + side * HWHM
    offsets = [f_c - F0]
    for _ in range(40):
        counts.append(rate([f_c + DELTA, f_c - DELTA]) * 1.0)  # a 1 s gate: the expected counts
        f_c = lock_cycles(F0 + side * HWHM, np.array(counts), DELTA, SLOPE, GAIN)[0][-1]
        offsets.append(f_c - F0)
    offsets = np.array(offsets)
    assert np.all(side * np.diff(offsets) < 0) and np.all(side * offsets > 0)  # monotone, never overshoots
    assert abs(offsets[-1]) < 10.0  # Hz, from 4 MHz
    assert offsets[-1] / offsets[-2] == pytest.approx(1 - GAIN, abs=1e-3)  # the right slope: exactly 1 - gain
    # Poisson counts: the first moves go the right way on average (one cycle's noise, ~0.06 in e, is
    # comparable with e(HWHM)), and every pixel locks within its error bar.
    rng = np.random.default_rng(100 + side)
    first_moves = []
    for _ in range(30):
        counts, f_lock, f_sigma, n_used = run_pixel(rng, F0 + side * HWHM, 100)
        centres, _ = lock_cycles(F0 + side * HWHM, counts, DELTA, SLOPE, GAIN)
        first_moves.append(centres[1] - centres[0])
        assert abs(f_lock - F0) < 4 * f_sigma and n_used == 90
    e_noise = 1 / math.sqrt(2 * rate(F0 + HWHM) * GATE)
    assert np.mean(first_moves) == pytest.approx(-GAIN * expected_error(F0 + side * HWHM) / SLOPE,
                                                 abs=3 * GAIN * e_noise / SLOPE / math.sqrt(30))
    assert side * np.mean(first_moves) < 0


def test_scatter_of_the_locked_frequency_is_the_shot_noise_limit():
    rng = np.random.default_rng(2026)
    n_cycles, n_settle, n_seeds = 100, 10, 400
    found, sigmas = [], []
    for _ in range(n_seeds):
        _, f_lock, f_sigma, _ = run_pixel(rng, F0 + rng.choice([-1, 1]) * HWHM, n_cycles, n_settle)
        found.append(f_lock - F0)
        sigmas.append(f_sigma)
    # Independent prediction: photons of the averaged cycles at the dither points, the numerical slope.
    n_photons = (n_cycles - n_settle) * 2 * rate(F0 + DELTA) * GATE
    numeric_slope = (expected_error(F0 + 1.0) - expected_error(F0 - 1.0)) / 2.0
    predicted = 1.0 / (numeric_slope * math.sqrt(n_photons))
    assert np.std(found) == pytest.approx(predicted, rel=0.2)
    # The reported error bar is honest: it matches the scatter (the lock's ~1 MHz wander at gain 0.3
    # costs slope, so both sit ~15 % above the limit for a centre held at the resonance).
    assert np.mean(sigmas) == pytest.approx(np.std(found), rel=0.08)
    assert predicted < np.mean(sigmas) < 1.2 * predicted
    assert abs(np.mean(found)) < 4 * predicted / math.sqrt(n_seeds)  # no bias


def test_a_30_mhz_jump_is_found_again_within_one_pixel():
    # Budget of a pixel: 100 cycles of 2 x 1 ms. Spent: 10 cycles that see no dip (20 ms), a sweep of
    # 101 points of 1 ms over +-5 FWHM (101 ms), 39 cycles of lock (78 ms).
    budget = 100 * 2 * GATE
    f_before, jump = F0, 30e6
    for seed in range(20):
        rng = np.random.default_rng(seed)
        f_true = f_before + (jump if seed % 2 else -jump)
        counts, *_ = run_pixel(rng, f_before, 10, f0=f_true)
        ratio = counts.mean() / (RATE * GATE)
        assert lock_lost(ratio, CONTRAST)
        freqs = recovery_sweep(f_before, FWHM, 101)
        sweep_counts = rng.poisson(rate(freqs, f_true) * GATE)
        f_found = sweep_minimum(freqs, sweep_counts, FWHM)
        assert abs(f_found - f_true) < HWHM  # inside the lock's linear range
        counts, f_lock, f_sigma, n_used = run_pixel(rng, f_found, 39, n_settle=5, f0=f_true)
        spent = 10 * 2 * GATE + freqs.size * GATE + 39 * 2 * GATE
        assert spent <= budget
        assert not lock_lost(counts.mean() / (RATE * GATE), CONTRAST)
        assert abs(f_lock - f_true) < 4 * f_sigma and f_sigma < 0.5e6


def test_feedforward_beats_the_last_pixel_on_a_linear_ramp():
    step = 3e6  # Hz per pixel: under a HWHM, so both keep lock, but one starts each pixel 3 MHz off
    start_offsets, first_errors = {}, {}
    for use_ff in (True, False):
        rng = np.random.default_rng(5)
        locked, offsets, errs = [], [], []
        for k in range(30):
            f_true = F0 + k * step
            prev = np.array(locked)
            f_start = feedforward(prev, F0) if use_ff else (locked[-1] if locked else F0)
            counts, f_lock, _, _ = run_pixel(rng, f_start, 40, n_settle=5, f0=f_true)
            locked.append(f_lock)
            if k >= 2:
                offsets.append(f_start - f_true)
                errs.append(lock_cycles(f_start, counts[:1], DELTA, SLOPE, GAIN)[1][0])
        start_offsets[use_ff], first_errors[use_ff] = np.array(offsets), np.array(errs)
    # The frequency the first cycle is acquired at: feedforward starts within the lock's noise.
    assert np.mean(np.abs(start_offsets[True])) < 0.3 * np.mean(np.abs(start_offsets[False]))
    assert np.mean(np.abs(start_offsets[False])) == pytest.approx(step, rel=0.1)
    # The first cycle's error signal (shot noise ~0.06 per cycle, averaged over the 28 pixels): without
    # feedforward it is the dip model's error at -3 MHz, with it about zero.
    noise = 1 / math.sqrt(2 * rate(F0 + DELTA) * GATE * len(first_errors[True]))
    assert np.mean(first_errors[False]) == pytest.approx(expected_error(F0 - step), abs=3 * noise)
    assert abs(np.mean(first_errors[True])) < 3 * noise


def test_feedforward_extrapolates_and_falls_back():
    assert feedforward(np.array([1.0e9, 1.1e9]), 0.0) == pytest.approx(1.2e9)
    assert feedforward(np.array([1.0e9]), 0.0) == 1.0e9
    assert feedforward(np.array([np.nan, 1.0e9]), 5.0) == 1.0e9
    assert feedforward(np.array([1.0e9, np.nan]), 5.0) == 5.0
    assert feedforward(np.empty(0), 5.0) == 5.0


def test_lock_lost_from_the_dip_depth_and_the_sweep_span():
    assert not lock_lost(1 - 0.75 * CONTRAST, CONTRAST)
    assert lock_lost(1.0, CONTRAST) and lock_lost(1 - 0.3 * CONTRAST, CONTRAST)
    freqs = recovery_sweep(F0, FWHM, 81)
    assert freqs[0] == pytest.approx(F0 - 40e6) and freqs[-1] == pytest.approx(F0 + 40e6) and freqs.size == 81
    with pytest.raises(ValueError, match="n >= 3"):
        recovery_sweep(F0, FWHM, 2)
    # The pick on a noiseless dip off the grid: the parabola lands between grid points.
    assert sweep_minimum(freqs, rate(freqs, F0 + 0.3e6), FWHM) == pytest.approx(F0 + 0.3e6, abs=0.1e6)


def test_the_error_bar_is_positive_even_from_a_start_beyond_the_linear_range():
    """From starts up to 1.5 FWHM off, some pixels end with cycles beyond the error curve's turning
    points; the Newton root is then not trusted and the linear reading's positive sigma is given
    (before the fix, ~1 % of such pixels reported a negative sigma, which the host rejects)."""
    rng = np.random.default_rng(2)
    slope = lorentzian_error_slope(FWHM, CONTRAST)
    for _ in range(1500):
        f_start = F0 + rng.uniform(-1.5, 1.5) * FWHM
        f, counts = f_start, np.zeros((40, 2), np.int64)
        for k in range(40):
            counts[k] = rng.poisson([rate(f + DELTA) * GATE, rate(f - DELTA) * GATE])
            f = lock_step(f, counts[k, 0], counts[k, 1], DELTA, slope, GAIN)[0]
        sigma = lock_pixel(f_start, counts, DELTA, FWHM, CONTRAST, GAIN, 10)[2]
        assert sigma > 0
