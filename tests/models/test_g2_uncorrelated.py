"""Uncorrelated light (g2 = 1, the laser check of every HBT set-up): two independent Poisson streams through
the simulator's detectors (dead time, jitter, dark counts) and the rig's binning kernel. The scan's shape fit
sees no antibunching (`ShapeFit.determined` False), the estimates use the default shape with a note, and
the MLE's mean over many histograms is 1 within its own error; a flat histogram of 2.15e8 events never gets
a silent CNN number (it goes to the MLE with a note)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.sample import laser_histograms
from nvscope.host.srm.analysis import srm_results
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.models.g2.estimation import estimate_pixels, fit_scan_shape, histogram_models
from nvscope.models.g2.mle import MleEstimator
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, pixel_base
from nvscope.models.g2.reasons import NOTE_DEFAULT_SHAPE, NOTE_EVENTS_ABOVE_RANGE
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS

RATE_CPS = 1e5  # per detector


def laser(pairs: float, n: int, seed: int) -> dict[str, np.ndarray]:
    return laser_histograms(pairs, n, seed, RATE_CPS)


@pytest.fixture(scope="module", params=[1_000, 20_000])
def scan(request):
    return request.param, laser(request.param, 40, seed=request.param)


def test_the_shape_fit_sees_no_antibunching(scan):
    _, px = scan
    base = pixel_base(px["n_a"], px["n_b"], px["dwell_s"], len(px["hist"]))
    fit = fit_scan_shape(px["hist"], base)
    assert not fit.determined, fit


def test_mle_is_one_within_its_error(scan):
    pairs, px = scan
    values, context = srm_results(px, MleEstimator())
    assert context.shape == NV_DEFAULT_SHAPE and (values["g2_note"] == NOTE_DEFAULT_SHAPE).all()
    g, sd = values["g2"], values["g2_std"]
    assert np.isfinite(g).all()
    assert 0.7 * pairs < px["hist"].sum(axis=1).mean() < 1.3 * pairs
    sem = g.std(ddof=1) / np.sqrt(len(g))
    assert abs(g.mean() - 1.0) < 3 * sem, (g.mean(), sem)
    # each histogram's std describes its scatter
    assert 0.7 < np.std((g - 1.0) / sd) < 1.3


def test_a_flat_histogram_of_2e8_events_goes_to_the_mle_with_a_note():
    n = 2.15e8
    hist = np.full((1, N_BINS), round(n / N_BINS))
    singles = np.sqrt(hist.sum() / N_BINS / BIN_WIDTH_S)       # base = n_a n_b D / T with T = 1 s
    models = histogram_models(NV_DEFAULT_SHAPE, 1, "allpairs", singles, singles, 1.0)
    est = estimate_pixels(CnnEstimator(), hist, models, require_base=True)
    assert est.note[0] == NOTE_EVENTS_ABOVE_RANGE
    assert abs(est.g2[0] - 1.0) < 3 * est.g2_std[0] and est.g2_std[0] < 0.01
