"""Zero-delay calibration (docs/physics.md section 1.10; issue 12): the offset of a summed histogram by
Poisson MLE, its std against Poisson replicas and the likelihood's own curvature, and the simulator
with a 2 ns longer cable on B, where an unknown offset turns g2(0) = 0.1 into 0.13."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim import DetectorParams, Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.firmware_sim.emitter import g2_parameters
from nvscope.models.g2.mle import estimate_g2
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, EmitterShape, bin_widths, kernel_bin_averages, pixel_models
from nvscope.models.g2.zero_delay import _profile, fit_zero_delay
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS
from nvscope.rt.kernels.binning import histogram_tags


def expected(g0: float, base: float, offset_s: float) -> np.ndarray:
    return base * (bin_widths() - (1.0 - g0) * kernel_bin_averages(NV_DEFAULT_SHAPE, offset_s))


def mle_g0(hist, base, offset_s: float, shape: EmitterShape = NV_DEFAULT_SHAPE) -> tuple[float, float]:
    g, s = estimate_g2(np.asarray(hist)[None], pixel_models(base, kernel_bin_averages(shape, offset_s)))
    return float(g[0]), float(s[0])


@pytest.mark.parametrize("base", [50.0, None])
def test_noise_free_offset_is_found_and_an_unknown_one_turns_0_1_into_0_13(base):
    mu = expected(0.1, 50.0, 2e-9)
    fit = fit_zero_delay(mu, base, NV_DEFAULT_SHAPE)
    assert fit.offset_s == pytest.approx(2e-9, abs=1e-13)
    assert fit.n_events == pytest.approx(mu.sum())
    assert 0 < fit.offset_std_s < 1e-9
    wrong, _ = mle_g0(mu, base, 0.0)
    right, _ = mle_g0(mu, base, fit.offset_s)
    assert 0.12 < wrong < 0.16  # 0.128 with the base known, 0.154 free
    assert right == pytest.approx(0.1, abs=1e-6)


def test_offset_std_is_the_spread_over_poisson_replicas():
    """40 Poisson histograms of 1.3e5 events (a scan's summed histogram): the fitted offsets scatter as
    their reported std says (within the sample sd's own 11 % at 40 draws) and centre on the truth."""
    rng = np.random.default_rng(5)
    mu = expected(0.1, 500.0, 2e-9)
    fits = [fit_zero_delay(rng.poisson(mu), 500.0, NV_DEFAULT_SHAPE) for _ in range(40)]
    o = np.array([f.offset_s for f in fits])
    s = np.median([f.offset_std_s for f in fits])
    assert 0.7 < o.std(ddof=1) / s < 1.35, (o.std(ddof=1), s)
    assert abs(o.mean() - 2e-9) < 3 * s / np.sqrt(o.size)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="events"):
        fit_zero_delay(np.zeros(N_BINS), None, NV_DEFAULT_SHAPE)
    with pytest.raises(ValueError, match="base"):
        fit_zero_delay(np.ones(N_BINS), -1.0, NV_DEFAULT_SHAPE)
    with pytest.raises(ValueError, match="215 bins"):
        fit_zero_delay(np.ones(10), None, NV_DEFAULT_SHAPE)


@pytest.fixture(scope="module")
def delayed_scan():
    """200 s of one emitter (true g2(0) = 0.10 with its background) with B's cable 2 ns longer than A's."""
    sample = Sample([Emitter(0.0, 0.0)], background_rate=5.2e3)
    detectors = (DetectorParams(latency_s=1e-9), DetectorParams(latency_s=3e-9))
    tagger = SimTimeTagger(sample, SimScanner(), detectors, seed=21)
    t_acq = 200.0
    tagger.start()
    blocks = [tagger.read(10.0) for _ in range(int(t_acq / 10.0))]
    hist, n_a, n_b = histogram_tags(np.concatenate([b.t_a for b in blocks]), np.concatenate([b.t_b for b in blocks]))
    a, t1, t2 = g2_parameters(sample.local_rates(sample.emitters[0], 0.0, 0.0))
    return tagger, hist, n_a * n_b * BIN_WIDTH_S / t_acq, EmitterShape(t1, t2, a)


def test_simulator_with_a_2ns_cable_the_fit_finds_it_and_corrects_g2_zero(delayed_scan):
    tagger, hist, base, shape = delayed_scan
    truth = tagger.true_g2_zero()
    assert tagger.channel_delay_s() == pytest.approx(2e-9) and 0.09 < truth < 0.11
    fit = fit_zero_delay(hist, base, shape)
    print(f"offset {fit.offset_s * 1e9:.3f} +- {fit.offset_std_s * 1e9:.3f} ns from {fit.n_events:.0f} events")
    assert abs(fit.offset_s - 2e-9) < 3 * fit.offset_std_s and fit.offset_std_s < 0.3e-9
    # The std is the likelihood's: the profile log-likelihood's curvature at the fit (numerical) agrees.
    h = 0.05e-9
    _, ll = _profile(hist.astype(float), base, fit.offset_s + np.array([-h, 0.0, h]), shape)
    curvature_std = 1.0 / np.sqrt(-(ll[0] - 2 * ll[1] + ll[2]) / h**2)
    assert curvature_std == pytest.approx(fit.offset_std_s, rel=0.1)
    # An unknown offset: the MLE at offset 0 reads about 0.13 (far beyond its error); corrected, the truth.
    wrong, wrong_std = mle_g0(hist, base, 0.0, shape)
    right, right_std = mle_g0(hist, base, fit.offset_s, shape)
    print(f"g2(0) truth {truth:.4f}; offset 0: {wrong:.4f} +- {wrong_std:.4f}; fitted offset: {right:.4f} +- {right_std:.4f}")
    assert wrong - truth > 3 * wrong_std and 0.11 < wrong < 0.15
    assert abs(right - truth) < 3 * right_std
