"""The rt loop on the simulated instrument, then the host's analysis: the per-pixel g2(0) estimates
agree with the simulator's analytic g2(0) within their own error bars (pulls ~ N(0, 1)), for the
Poisson MLE and for the shipped CNN."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.host.srm.analysis import srm_results
from nvscope.host.store import PIXEL_FIELDS
from nvscope.rt.config import ScanConfig
from nvscope.rt.hal import RigDevices
from nvscope.rt.run_loop import SrmPlan


def scan_and_truth():
    """A 7 x 5 scan over two emitters on the simulated rig (rt's loop), its pixels and their true g2(0)."""
    sample = Sample(emitters=(Emitter(x=-0.12e-6, y=0.0), Emitter(x=0.2e-6, y=0.05e-6)), background_rate=4000.0)
    scanner = SimScanner()
    devices = RigDevices(scanner, SimTimeTagger(sample, scanner, seed=11))
    scan = ScanConfig(nx=7, ny=5, x0=-0.45e-6, y0=-0.2e-6, step=0.1e-6, dwell_s=0.6, slice_s=0.2)
    plan = SrmPlan("physics", scan, devices)
    pixels = []
    while not plan.done:  # the rig's run loop steps through the plan so
        pixels.append(plan.step(len(pixels) + 1))
    assert len(pixels) == 35 and [p.index for p in pixels] == list(range(35))
    px = {name: np.array([getattr(p, name) for p in pixels]) for name in PIXEL_FIELDS}
    truth_tagger = SimTimeTagger(sample, scanner, seed=0)
    truth = []
    for p in pixels:
        scanner.move_to(*p.position)
        truth.append(float(truth_tagger.expected_g2(0.0)))
    return px, np.array(truth)


@pytest.fixture(scope="module")
def scanned():
    return scan_and_truth()


def test_mle_estimates_match_the_analytic_truth(scanned):
    px, truth = scanned
    results, _ = srm_results(px, MleEstimator())
    pull = (results["g2"] - truth) / results["g2_std"]
    bright = results["pl_cps"] > 0.3 * results["pl_cps"].max()
    assert bright.sum() >= 10
    assert np.isfinite(pull[bright]).all()
    assert abs(pull[bright].mean()) < 0.6
    assert 0.6 < pull[bright].std() < 1.5
    # the estimate is informative: bright single-emitter pixels are clearly antibunched
    assert np.nanmin(results["g2"][bright]) < 0.5


def test_cnn_is_closer_to_the_truth_than_the_mle_with_honest_spread(scanned):
    """The CNN is a posterior mean: over its training prior it is unbiased and calibrated, but on the
    bright pixels of a scan, whose true g2(0) are low, it leans towards the prior's middle by about
    half its std at a few hundred events (closing note of issue 4). What it must do on a real scan:
    be closer to the truth than the MLE, with errors whose spread its g2_std describes."""
    px, truth = scanned
    cnn, _ = srm_results(px, CnnEstimator())
    mle, _ = srm_results(px, MleEstimator())
    bright = cnn["pl_cps"] > 0.3 * cnn["pl_cps"].max()
    rmse = {k: np.sqrt(np.mean((r["g2"][bright] - truth[bright]) ** 2)) for k, r in (("cnn", cnn), ("mle", mle))}
    assert rmse["cnn"] < rmse["mle"], rmse
    pull = (cnn["g2"] - truth) / cnn["g2_std"]
    assert np.isfinite(pull[bright]).all() and 0.5 < pull[bright].std() < 1.5
    assert np.abs(pull[bright]).max() < 4
    assert np.nanmin(cnn["g2"][bright]) < 0.5
