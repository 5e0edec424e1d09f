"""The simulated rig records the true g2(0) of its raster (`rt.devices.srm_truth`), so that the host (which
never imports the simulator) can compare its estimates with the truth: the run's `sim_truth`."""

from __future__ import annotations

import numpy as np

from nvscope.firmware_sim import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.rt.config import RigConfig, ScanConfig
from nvscope.rt.devices import MAX_TRUTH_PIXELS, sim_instrument


def test_the_rig_records_each_raster_points_true_g2_and_none_for_a_huge_raster():
    scan = ScanConfig(nx=5, ny=2, x0=-200e-9, y0=0.0, step=100e-9)
    sim = {"sample": {"emitters": [{"x": 0.0, "y": 0.0}], "background_rate": 3000.0}}
    _, truth = sim_instrument(RigConfig(scan=scan, sim=sim))
    got = np.array(truth["srm_true_g2_zero"])
    # independently: a tagger on the same sample at each raster point, row by row in +x (index order)
    scanner = SimScanner()
    tagger = SimTimeTagger(Sample((Emitter(0.0, 0.0),), background_rate=3000.0), scanner)
    want = []
    for iy in range(2):
        for ix in range(5):
            scanner.move_to(-200e-9 + ix * 100e-9, iy * 100e-9, 0.0)
            want.append(tagger.true_g2_zero())
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[2] < 0.1 < got[0] < 1.0  # antibunched on the emitter, less so 200 nm away
    big = ScanConfig(nx=MAX_TRUTH_PIXELS, ny=2)
    assert "srm_true_g2_zero" not in sim_instrument(RigConfig(scan=big, sim=sim))[1]
