"""The rt loop on the simulated instrument, then the host's analysis: the per-pixel g2(0) estimates
agree with the simulator's analytic g2(0) within their own error bars (pulls ~ N(0, 1)), for the
Poisson MLE and for the shipped CNN."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.host.g2_cnn import CnnEstimator
from nvscope.host.g2_online import MleEstimator
from nvscope.host.srm import srm_results
from nvscope.host.store import PIXEL_FIELDS
from nvscope.rt.config import ScanConfig
from nvscope.rt.scan import RigDevices, srm_scan


@pytest.mark.parametrize("estimator", [MleEstimator, CnnEstimator])
def test_scan_g2_estimates_match_the_analytic_truth(estimator):
    sample = Sample(emitters=(Emitter(x=-0.12e-6, y=0.0), Emitter(x=0.2e-6, y=0.05e-6)), background_rate=4000.0)
    scanner = SimScanner()
    devices = RigDevices(scanner, SimTimeTagger(sample, scanner, seed=11))
    scan = ScanConfig(nx=7, ny=5, x0=-0.45e-6, y0=-0.2e-6, step=0.1e-6, dwell_s=0.6, slice_s=0.2)
    pixels = []
    done, _ = srm_scan("physics", scan, devices, 1, pixels.append, lambda: True)
    assert done == 35 and [p.index for p in pixels] == list(range(35))
    px = {name: np.array([getattr(p, name) for p in pixels]) for name in PIXEL_FIELDS}
    results, _ = srm_results(px, estimator())
    truth_tagger = SimTimeTagger(sample, scanner, seed=0)
    truth = []
    for p in pixels:
        scanner.move_to(*p.position)
        truth.append(float(truth_tagger.expected_g2(0.0)))
    pull = (results["g2"] - np.array(truth)) / results["g2_std"]
    bright = results["pl_cps"] > 0.3 * results["pl_cps"].max()
    assert bright.sum() >= 10
    assert np.isfinite(pull[bright]).all()
    assert abs(pull[bright].mean()) < 0.6
    assert 0.6 < pull[bright].std() < 1.5
    # the estimate is informative: bright single-emitter pixels are clearly antibunched
    assert np.nanmin(results["g2"][bright]) < 0.5
