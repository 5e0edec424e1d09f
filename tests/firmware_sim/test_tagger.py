"""SimTimeTagger and SimScanner: the hal Protocols, the stream (start, read, stop; overflows), seeds,
continuation across reads, moves, settling, dead time, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nvscope.firmware_sim import DetectorParams, Emitter, Sample, SimScanner, SimTimeTagger, ThreeLevelRates
from nvscope.rt.hal import DeviceError, Scanner, ScannerConstraints, TimeTagger, TimeTaggerConstraints

BRIGHT = Sample([Emitter(0.0, 0.0, collection_efficiency=0.1), Emitter(200e-9, 0.0, collection_efficiency=0.1)],
                background_rate=2e5)  # ~1.2 Mcps: dead time matters
AFTERPULSING = DetectorParams(afterpulse_probability=0.05)


def reads(tagger: SimTimeTagger, durations: list[float]):
    """Consecutive reads of a started stream, each checked against the clock contract; their tags joined."""
    t_a, t_b = [], []
    t0 = tagger.start()
    for d in durations:
        a, b, t_end, lost = tagger.read(d)
        assert t_end == t0 + round(d * 1e12) == tagger.clock_ps and lost == 0
        for tags in (a, b):
            assert tags.dtype == np.int64
            assert np.all(np.diff(tags) >= 0)
            assert tags.size == 0 or (tags[0] >= t0 and tags[-1] < t_end)
        t_a.append(a)
        t_b.append(b)
        t0 = t_end
    tagger.stop()
    return np.concatenate(t_a), np.concatenate(t_b)


def test_implements_the_hal_protocols():
    scanner = SimScanner()
    tagger = SimTimeTagger(Sample([Emitter(0.0, 0.0)]), scanner)
    assert isinstance(scanner, Scanner) and isinstance(tagger, TimeTagger)
    assert tagger.constraints.resolution_ps == 1


def test_out_of_range_requests_are_device_errors():
    scanner = SimScanner()
    with pytest.raises(DeviceError, match="x"):
        scanner.move_to(1.0, 0.0, 0.0)
    with pytest.raises(DeviceError, match="z"):
        scanner.move_to(0.0, 0.0, float("nan"))
    tagger = SimTimeTagger(Sample(), scanner)
    with pytest.raises(DeviceError, match="read\\(\\) before start\\(\\)"):
        tagger.read(0.01)
    tagger.start()
    for bad in (0.0, -1.0, 1e3, float("inf")):
        with pytest.raises(DeviceError, match="read"):
            tagger.read(bad)
    tagger.stop()
    with pytest.raises(DeviceError, match="before start"):
        tagger.read(0.01)


def test_a_full_buffer_loses_the_latest_tags_and_reports_them():
    def stream(buffer_tags):
        tagger = SimTimeTagger(BRIGHT, SimScanner(), seed=3,
                               constraints=TimeTaggerConstraints(1, 10.0, buffer_tags=buffer_tags))
        tagger.start()
        return [tagger.read(0.01) for _ in range(3)]

    whole = stream(10**9)
    small = stream(5000)
    for w, s in zip(whole, small):
        n = w.t_a.size + w.t_b.size
        assert n > 10_000 and w.overflows == 0
        assert s.t_a.size + s.t_b.size + s.overflows == n and s.t_a.size + s.t_b.size == 5000
        assert s.t_end == w.t_end  # the clock is not cut short: the dwell stays true
        last = max(s.t_a[-1], s.t_b[-1])  # what is kept is the earliest part, exactly as without a limit
        np.testing.assert_array_equal(s.t_a, w.t_a[w.t_a <= last])
        np.testing.assert_array_equal(s.t_b, w.t_b[w.t_b <= last])


def test_a_paced_scanner_settles_and_a_paced_tagger_takes_its_time():
    box = ((-1e-6, 1e-6),) * 3
    scanner = SimScanner(ScannerConstraints(*box, settle_s=0.05), pace=1.0)
    t = time.monotonic()
    scanner.move_to(0.5e-6, 0.0, 0.0)
    assert time.monotonic() - t >= 0.05
    t = time.monotonic()
    scanner.move_to(0.5e-6, 0.0, 0.0)  # no move: no settling
    assert time.monotonic() - t < 0.05
    unpaced = SimScanner(ScannerConstraints(*box, settle_s=10.0))
    t = time.monotonic()
    unpaced.move_to(0.5e-6, 0.0, 0.0)
    assert time.monotonic() - t < 5.0
    tagger = SimTimeTagger(Sample([Emitter(0.0, 0.0)]), scanner, pace=2.0)
    tagger.start()
    t = time.monotonic()
    tagger.read(0.02)
    assert time.monotonic() - t >= 0.04


def test_same_seed_same_tags_other_seed_other_tags():
    def run(seed):
        return reads(SimTimeTagger(BRIGHT, SimScanner(), AFTERPULSING, seed=seed), [0.02, 0.03])

    a1, b1 = run(5)
    a2, b2 = run(5)
    a3, _ = run(6)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert a1.size != a3.size or np.any(a1 != a3)


@pytest.mark.parametrize("cuts", [[0.01] * 10, [0.03, 0.005, 0.065], [0.0999999, 0.0000001]])
def test_reads_continue_exactly_however_the_time_is_cut(cuts):
    # Pending photons, dead time, afterpulses and tags not yet due all carry across reads.
    whole = reads(SimTimeTagger(BRIGHT, SimScanner(), AFTERPULSING, seed=3), [0.1])
    pieces = reads(SimTimeTagger(BRIGHT, SimScanner(), AFTERPULSING, seed=3), cuts)
    for w, p in zip(whole, pieces):
        assert w.size > 50_000
        np.testing.assert_array_equal(w, p)


def test_a_move_redraws_the_emitters_and_staying_put_does_not():
    def run(moves):
        scanner = SimScanner()
        tagger = SimTimeTagger(BRIGHT, scanner, seed=4)
        out = [reads(tagger, [0.01])]
        for m in moves:
            scanner.move_to(*m)
        out.append(reads(tagger, [0.01]))
        return out

    still = run([])
    same = run([(0.0, 0.0, 0.0)])
    away_and_back = run([(5e-6, 0.0, 0.0), (0.0, 0.0, 0.0)])
    for (a1, b1), (a2, b2) in zip(still, same):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(still[0][0], away_and_back[0][0])  # before the move: same
    assert still[1][0].size != away_and_back[1][0].size or np.any(still[1][0] != away_and_back[1][0])


def test_far_from_the_emitters_only_background_and_dark_counts():
    scanner = SimScanner()
    tagger = SimTimeTagger(Sample([Emitter(0.0, 0.0)], background_rate=5e3), scanner, seed=1)
    scanner.move_to(3e-6, 0.0, 0.0)
    assert tagger.signal_rates()[0] < 1e-30
    a, b = reads(tagger, [1.0])
    assert abs(a.size + b.size - 5.2e3) < 4 * np.sqrt(5.2e3)
    assert tagger.expected_g2(0.0) == pytest.approx(1.0)


def test_a_longer_cable_on_b_delays_its_tags_exactly_and_is_the_channel_delay():
    def run(latency_b):
        detectors = (AFTERPULSING, DetectorParams(afterpulse_probability=0.05, latency_s=latency_b))
        tagger = SimTimeTagger(BRIGHT, SimScanner(), detectors, seed=6)
        return tagger, reads(tagger, [0.01, 0.02])

    _, (a1, b1) = run(1e-9)
    tagger, (a2, b2) = run(3e-9)
    assert tagger.channel_delay_s() == pytest.approx(2e-9)
    np.testing.assert_array_equal(a1, a2)  # A is untouched
    assert b1.size > 10_000
    kept = b1 < tagger.clock_ps - 2000  # the last 2 ns of B's clicks are not due yet with the longer cable
    np.testing.assert_array_equal(b2[:kept.sum()], b1[kept] + 2000)
    assert b2.size == kept.sum()


def test_pump_and_collection_follow_the_gaussian_psfs():
    e = Emitter(100e-9, 0.0)
    sample = Sample([e], excitation_fwhm=400e-9, collection_fwhm=300e-9)
    # At half the FWHM from the emitter each PSF is at one half.
    assert sample.local_rates(e, 100e-9 + 200e-9, 0.0).k12 == pytest.approx(0.5 * e.rates.k12)
    assert sample.local_efficiency(e, 100e-9, 150e-9) == pytest.approx(0.5 * e.collection_efficiency)
    assert sample.local_rates(e, 100e-9, 0.0) == e.rates


def test_default_emitter_at_the_peak_gives_about_100_kcps():
    tagger = SimTimeTagger(Sample([Emitter(0.0, 0.0)]), SimScanner(), seed=2)
    a, b = reads(tagger, [0.5])
    rate = (a.size + b.size) / 0.5
    assert 50e3 < rate < 150e3
    expected = tagger.signal_rates().sum() + tagger.background_rate()
    assert abs(rate - expected) < 4 * np.sqrt(expected / 0.5) + 0.002 * expected  # dead time: 0.1 %
    assert abs(a.size - b.size) < 4 * np.sqrt(a.size + b.size)


@pytest.mark.parametrize("jitter_s, slack_ps", [(0.0, 0), (35e-12, 200)])
def test_no_two_tags_of_a_detector_within_the_dead_time(jitter_s, slack_ps):
    detectors = DetectorParams(jitter_fwhm_s=jitter_s, dark_count_rate=1e4)
    a, b = reads(SimTimeTagger(BRIGHT, SimScanner(), detectors, seed=8), [0.05, 0.05])
    for tags in (a, b):
        gaps = np.diff(tags)
        assert gaps.min() >= 22_000 - slack_ps
        assert np.mean(gaps < 30_000) > 1e-3  # the dead time is actually reached


def test_at_least_a_million_photons_per_second():
    sample = Sample([Emitter(0.0, 0.0, collection_efficiency=0.1),
                     Emitter(150e-9, 100e-9, rates=ThreeLevelRates(k12=5e7), collection_efficiency=0.1)],
                    background_rate=1e5)
    tagger = SimTimeTagger(sample, SimScanner(), seed=9)
    tagger.start()
    tagger.read(0.01)  # compile / load the kernels
    best = 0.0
    for _ in range(3):  # CPU time of this process: other jobs on the machine do not count
        t = time.process_time()
        a, b, _, _ = tagger.read(0.5)
        best = max(best, (a.size + b.size) / (time.process_time() - t))
    assert best > 1e6, f"{best:.3g} detected photons per CPU second"
