"""The SRM paper's point: two emitters 300 nm apart (excitation and collection PSFs 360 nm FWHM) are
one blob in the PL map but two in G2 = <N>^2 (1 - g2(0)) with g2(0) from the shipped CNN."""

from __future__ import annotations

import numpy as np
from nvscope.firmware_sim.sample import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.host.srm.analysis import srm_results
from nvscope.rt.kernels.binning import histogram_tags

X_NM = np.arange(-225, 226, 45)  # a line scan through both emitters, centre pixel at 0


def line_scan(dwell_s: float = 2.0) -> dict[str, np.ndarray]:
    """Pixels of a line scan over emitters at x = -150 and +150 nm, as the host stores them."""
    sample = Sample(emitters=(Emitter(-150e-9, 0.0), Emitter(150e-9, 0.0)), background_rate=1e3,
                    excitation_fwhm=360e-9, collection_fwhm=360e-9)
    scanner = SimScanner()
    tagger = SimTimeTagger(sample, scanner, seed=7)
    rows = {k: [] for k in ("hist", "n_a", "n_b", "dwell_s")}
    for x in X_NM:
        scanner.move_to(x * 1e-9, 0.0, 0.0)
        tagger.start()
        t_a, t_b, *_ = tagger.read(dwell_s)
        tagger.stop()
        hist, n_a, n_b = histogram_tags(t_a, t_b, "allpairs")
        for k, v in (("hist", hist), ("n_a", n_a), ("n_b", n_b), ("dwell_s", dwell_s)):
            rows[k].append(v)
    return {k: np.array(v) for k, v in rows.items()}


def test_g2_image_separates_what_pl_cannot():
    values, _ = srm_results(line_scan(), CnnEstimator())
    centre = int(np.flatnonzero(X_NM == 0)[0])
    pl, G2 = values["pl_cps"], values["G2"]
    assert np.isfinite(G2).all()
    assert pl[centre] / pl.max() > 0.9, pl / pl.max()
    assert G2[centre] / G2.max() < 0.75, G2 / G2.max()
    # a peak on each side of the dip, not one peak and a shoulder
    assert min(G2[:centre].max(), G2[centre + 1:].max()) > 1.2 * G2[centre], G2 / G2.max()
