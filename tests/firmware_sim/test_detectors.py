"""Beam splitter, dead time, afterpulsing and jitter against plain-Python references and known formulas."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.detectors import (
    Detector,
    DetectorParams,
    beam_splitter,
    dead_time_clicks,
    jittered_tags,
)

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def poisson_ps(rate: float, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration_s)
    return np.sort(rng.integers(0, int(duration_s * 1e12), n)).astype(np.int64)


def dead_time_reference(arrivals, dead):
    """Non-paralyzable dead time, one photon at a time."""
    clicks, last = [], None
    for t in arrivals:
        if last is None or t - last >= dead:
            clicks.append(t)
            last = t
    return np.array(clicks, dtype=np.int64)


def test_dead_time_kernel_matches_reference_and_continues_across_chunks():
    arrivals = poisson_ps(2e7, 2e-3, seed=1)  # 0.44 photons per dead time: many are lost
    dead = 22_000
    ref = dead_time_reference(arrivals, dead)
    assert 0.6 * arrivals.size < ref.size < 0.8 * arrivals.size  # 1 / (1 + 0.44)
    pend = np.empty(4, dtype=np.int64)
    u = np.empty(0)
    # In chunks cut at arbitrary clock times, carrying the last click.
    cuts = [0, 123_457, 400_000_000, 400_010_000, 1_500_000_000, 2_000_000_000]
    last, parts = -(2**62), []
    for t0, t1 in zip(cuts[:-1], cuts[1:]):
        chunk = arrivals[(arrivals >= t0) & (arrivals < t1)]
        clicks, last, n_pend, used, ok = dead_time_clicks(chunk, t1, dead, last, pend, 0, 0.0, 0.0, u)
        assert ok and used == 0 and n_pend == 0
        parts.append(clicks)
    np.testing.assert_array_equal(np.concatenate(parts), ref)


def test_non_paralyzable_rate_formula():
    # Poisson input r: measured rate r / (1 + r tau_d).
    r, tau_d, dur = 1e7, 22e-9, 0.2
    det = Detector(DetectorParams(dark_count_rate=0.0, jitter_fwhm_s=0.0), np.random.default_rng(2))
    tags = det.tags(poisson_ps(r, dur, seed=3), int(dur * 1e12))
    expected = r / (1 + r * tau_d) * dur
    # The counts of a dead-time-limited Poisson stream have variance ~ n (1 + r tau_d)^-2 < n.
    assert abs(tags.size - expected) < 4 * np.sqrt(expected)
    assert np.diff(tags).min() >= 22_000


def test_afterpulses_cascade_and_come_after_the_dead_time():
    p, delay, dur = 0.2, 100e-9, 5.0
    params = DetectorParams(dark_count_rate=0.0, jitter_fwhm_s=0.0, afterpulse_probability=p,
                            afterpulse_delay_s=delay)
    det = Detector(params, np.random.default_rng(4))
    photons = poisson_ps(2e3, dur, seed=5)
    cut = 2_500_000_000_000  # two reads: afterpulses pending at the cut are carried
    tags = np.concatenate([det.tags(photons[photons < cut], cut), det.tags(photons[photons >= cut], 2 * cut)])
    # Each click afterpulses with probability p, afterpulses too: 1/(1 - p) clicks per photon.
    n_ap = tags.size - photons.size
    expected = photons.size * p / (1 - p)
    assert abs(n_ap - expected) < 4 * np.sqrt(expected / (1 - p))
    gaps = np.diff(tags)
    short = gaps[gaps < 1_000_000] * 1e-12  # afterpulses (photon pairs within 1 us: 0.2 %)
    assert short.min() >= 22e-9
    assert np.mean(short - 22e-9) == pytest.approx(delay, rel=0.1)


def test_no_afterpulses_by_default():
    det = Detector(DetectorParams(dark_count_rate=0.0), np.random.default_rng(6))
    photons = poisson_ps(1e5, 0.1, seed=7)
    assert det.tags(photons, 10**11).size == photons.size - np.sum(np.diff(photons) < 22_000)


def test_jitter_is_gaussian_with_the_given_fwhm_and_latency():
    params = DetectorParams(dark_count_rate=0.0)  # 35 ps FWHM, 1 ns latency
    det = Detector(params, np.random.default_rng(8))
    photons = np.arange(50_000, dtype=np.int64) * 1_000_000  # one per us, never dead
    tags = det.tags(photons, 10**12)
    err = (tags - photons - 1000) * 1e-12
    sigma = 35e-12 / FWHM_PER_SIGMA
    assert abs(err.mean()) < 4 * sigma / np.sqrt(err.size)
    assert err.std() == pytest.approx(sigma, rel=0.02)  # ps rounding adds 1/12 ps^2


def test_jitter_kernel_clips_and_sorts():
    tags = jittered_tags(np.array([0, 10, 20], dtype=np.int64), np.array([1e9, -1e9, 0.0]), 15.0, 1000)
    np.testing.assert_array_equal(tags, [10, 1020, 2000])  # 0 + 1000 + 1000, 10 + 1000 - 1000, 20 + 1000


def test_tags_straddling_a_read_end_are_delivered_in_the_next_read():
    det = Detector(DetectorParams(dark_count_rate=0.0, jitter_fwhm_s=0.0), np.random.default_rng(9))
    first = det.tags(np.array([999_500], dtype=np.int64), 1_000_000)  # tag 1 000 500: not due yet
    second = det.tags(np.empty(0, dtype=np.int64), 2_000_000)
    assert first.size == 0
    np.testing.assert_array_equal(second, [1_000_500])


def test_beam_splitter_is_fair():
    arrivals = np.arange(200_000, dtype=np.int64)
    a, b = beam_splitter(arrivals, np.random.default_rng(10).random(arrivals.size), 0.5)
    assert a.size + b.size == arrivals.size
    assert abs(a.size - 100_000) < 4 * np.sqrt(50_000)
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), arrivals)


def test_detector_params_are_validated():
    with pytest.raises(ValueError, match="afterpulse_probability"):
        DetectorParams(afterpulse_probability=1.0)
    with pytest.raises(ValueError, match="dead_time_s"):
        DetectorParams(dead_time_s=-1e-9)
    with pytest.raises(ValueError, match="latency_s"):
        DetectorParams(jitter_fwhm_s=1e-9, latency_s=1e-9)
