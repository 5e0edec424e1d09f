"""Start-stop histograms get their own model (models/g2/normalization.py, docs/physics.md section 1.2):
base = (accepted starts) r_B D and the survival weight, against the rig's TAC kernel fed by the simulator.
The all-pairs normalization n_A n_B D / T, used for them before, is off by +0.07..+0.12 at 50 kcps per
detector and by +0.6..+1.1 at 500 kcps."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.detectors import DetectorParams
from nvscope.firmware_sim.sample import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.models.g2.estimation import estimate_pixels, histogram_models
from nvscope.models.g2.mle import MleEstimator
from nvscope.models.g2.model import NV_DEFAULT_SHAPE
from nvscope.models.g2.normalization import WINDOW_S, accepted_starts, startstop_base_weight
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS
from nvscope.rt.kernels.binning import tag_histogram


def test_renewal_model_gives_the_binning_kernels_pair_ratio():
    """At tac_dead = 0 the pairs (accepted starts x p) over the all-pairs count r_A r_B T T_w are
    p / (T_w (r_B + r_A p)), the ratio rt/kernels/binning.py states (0.993 at 1e4/s, 0.930 at 1e5/s)."""
    for r_a, r_b in ((1e4, 1e4), (1e5, 1e5), (5e5, 2e5)):
        p = 1.0 - np.exp(-r_b * WINDOW_S)
        pairs = accepted_starts(r_a, r_b, 1.0) * p
        assert pairs / (r_a * r_b * WINDOW_S) == pytest.approx(p / (WINDOW_S * (r_b + r_a * p)), rel=1e-12)
    assert accepted_starts(1e4, 1e4, 1.0) * (1 - np.exp(-5e-3)) / (1e8 * WINDOW_S) == pytest.approx(0.993, abs=5e-4)


@pytest.mark.parametrize("dead_s", [0.0, 200e-9])
def test_renewal_starts_and_survival_against_the_tac_on_poisson_streams(dead_s):
    """Poisson starts and stops (numpy) through the rig's TAC kernel: its counted starts agree with the
    renewal model within their noise, and the summed histogram with base x weight bin by bin."""
    rng = np.random.default_rng(1)
    r, T = 4e5, 2.0
    t_a, t_b = (np.sort(rng.integers(0, int(T * 1e12), rng.poisson(r * T))) for _ in range(2))
    th = tag_histogram(t_a, t_b, "startstop", round(dead_s * 1e12))
    want = accepted_starts(th.n_a, th.n_b, T, dead_s)
    assert abs(th.n_starts - want) < 4 * np.sqrt(want) * 0.3 + 1, (th.n_starts, want)
    base, weight = startstop_base_weight(th.n_a, th.n_b, T, dead_s)
    expected = base[0] * weight[0]
    assert th.hist.sum() == pytest.approx(expected.sum(), rel=4 / np.sqrt(expected.sum()))
    chi2 = np.sum((th.hist - expected) ** 2 / expected)
    assert chi2 < N_BINS + 5 * np.sqrt(2 * N_BINS)
    # the tilt is there: the first bins hold exp(r_B 500 ns) = e^0.2 times the last ones
    assert weight[0, 0] / weight[0, -1] == pytest.approx(np.exp(th.n_b / T * (WINDOW_S - BIN_WIDTH_S)), rel=1e-3)


def startstop_scan(rate_cps, n, dwell, emitter, seed=3, detector=DetectorParams()):
    """n start-stop pixels at one spot of the simulator, ~rate_cps per detector; and the true g2(0)."""
    if emitter:
        sample = Sample(emitters=(Emitter(0, 0, collection_efficiency=0.013 * 2 * rate_cps / 1e5 * 1.03),),
                        background_rate=0.3 * rate_cps)
    else:
        sample = Sample(emitters=(), background_rate=2 * rate_cps)
    tagger = SimTimeTagger(sample, SimScanner(), detectors=detector, seed=seed)
    truth = float(tagger.expected_g2(0.0))
    tagger.start()
    th = [tag_histogram(*tagger.read(dwell)[:2], "startstop") for _ in range(n)]
    return (np.array([t.hist for t in th]), np.array([t.n_a for t in th]), np.array([t.n_b for t in th]),
            np.full(n, dwell), np.array([t.n_starts for t in th])), truth


def biases(data, truth):
    """(mean g2 - truth, its standard error) with the start-stop model (counted starts), and the
    all-pairs normalization's bias."""
    hist, n_a, n_b, t, starts = data
    P = len(hist)
    new = estimate_pixels(MleEstimator(), hist, histogram_models(NV_DEFAULT_SHAPE, P, "startstop", n_a, n_b, t,
                                                                 0.0, starts), require_base=True).g2
    old = estimate_pixels(MleEstimator(), hist, histogram_models(NV_DEFAULT_SHAPE, P, "allpairs", n_a, n_b, t),
                          require_base=True).g2
    return new.mean() - truth, new.std(ddof=1) / np.sqrt(P), old.mean() - truth


@pytest.mark.parametrize("emitter", [False, True])
def test_startstop_at_50_kcps(emitter):
    bias, sem, old = biases(*startstop_scan(5e4, 16, 10.0, emitter))
    assert sem < 0.007
    assert abs(bias) <= 0.02, (bias, sem)
    assert old > 0.05, old


def test_antibunched_emitter_at_500_kcps():
    """At 500 kcps per detector the stops are correlated with the starts: the survival uses the pixel's
    own g2 (iterated in estimate_pixels); with g2 = 1 in it the bias was +0.085."""
    bias, sem, old = biases(*startstop_scan(5e5, 8, 1.0, True))
    assert sem < 0.007
    assert abs(bias) <= 0.02, (bias, sem)
    assert old > 0.5, old


def test_uncorrelated_light_at_500_kcps_without_detector_dead_time():
    bias, sem, old = biases(*startstop_scan(5e5, 8, 1.0, False, detector=DetectorParams(dead_time_s=0.0)))
    assert abs(bias) <= 0.02 and sem < 0.007, (bias, sem)
    assert old > 0.5, old


@pytest.mark.xfail(strict=True, reason="22 ns detector dead time: the stops are not Poisson (after an empty "
                   "window the B detector is live, hazard r_B / (1 - r_B d)); bias -0.026 at 500 kcps; the model "
                   "needs the detectors' dead time")
def test_uncorrelated_light_at_500_kcps_with_detector_dead_time():
    bias, sem, _ = biases(*startstop_scan(5e5, 8, 1.0, False))
    assert abs(bias) <= 0.02, (bias, sem)
