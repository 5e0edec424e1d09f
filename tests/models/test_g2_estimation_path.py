"""The one g2 estimation path (models/g2/estimation.py): each pixel's base computed once where the singles
enter, one reason rule, and the same function behind the on-line daemon (ScanEstimator), the run-end
analysis (srm_results) and `nvscope g2 estimate`."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from nvscope.host.srm.analysis import srm_results
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.host.srm.g2_cli import main as cli_main
from nvscope.host.srm.online_g2 import ScanEstimator
from nvscope.models.g2 import model
from nvscope.models.g2.estimation import context_sums, estimate_pixels, fit_scan_shape
from nvscope.models.g2.least_squares import LeastSquaresEstimator, estimate_g2_lm
from nvscope.models.g2.mle import MleEstimator, estimate_g2, fit_shape_full
from nvscope.models.g2.model import EmitterShape, expected_histogram, kernel_bin_averages, pixel_base, pixel_models
from nvscope.models.g2.reasons import (
    G2_REASONS,
    REASON_FEW_EVENTS,
    REASON_NO_ESTIMATE,
    REASON_NO_EVENTS,
    REASON_NO_NORMALIZATION,
    REASON_NO_STD,
    REASON_OK,
    pixel_reasons,
)
from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS

SHAPE = EmitterShape(15e-9, 180e-9, 0.6)
NAN = np.nan


def M(shape, base, n=None):
    """The allpairs PixelModels of a scan-wide shape and per-pixel bases."""
    return pixel_models(base, kernel_bin_averages(shape), n_pixels=n)


def scan(seed=0, p=12, singles=4e4, dwell=0.5):
    """Poisson pixels of the model with g2(0) in [0.1, 0.6], their singles and dwell (s)."""
    rng = np.random.default_rng(seed)
    g0 = rng.uniform(0.1, 0.6, p)
    n_a = rng.uniform(0.5, 1.5, p) * singles
    n_b = rng.uniform(0.5, 1.5, p) * singles
    t = np.full(p, dwell)
    hist = rng.poisson(expected_histogram(SHAPE, g0, n_a * n_b * BIN_WIDTH_S / t))
    return hist.astype(np.int64), n_a, n_b, t


def test_pixel_base_is_the_singles_normalization_or_nan():
    b = pixel_base(np.array([3e4, 0.0, 3e4, -1.0, NAN]), 2e4, np.array([2.0, 1.0, 0.0, 1.0, 1.0]), 5)
    assert b[0] == pytest.approx(3e4 * 2e4 * BIN_WIDTH_S / 2.0, rel=1e-15)
    assert b[1] == 0.0                                 # a detector saw nothing: known, and no normalization
    assert np.isnan(b[2:]).all()                       # t_acq <= 0, a negative or NaN count: fixes nothing
    assert np.isnan(pixel_base(None, 2e4, 1.0, 3)).all() and pixel_base(None, None, None, 3).shape == (3,)


def test_reason_rule():
    n = np.array([0, 1, 1, 5, 5, 30, 30, 30, 0])
    base = np.array([NAN, NAN, 10.0, 0.0, NAN, NAN, 10.0, np.inf, 0.0])
    assert list(pixel_reasons(n, base)) == [REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_OK,
                                           REASON_NO_NORMALIZATION, REASON_OK, REASON_OK, REASON_OK,
                                           REASON_NO_NORMALIZATION, REASON_NO_EVENTS]
    assert list(pixel_reasons(n, base, min_events=20, require_base=True)) == [
        REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_FEW_EVENTS, REASON_FEW_EVENTS, REASON_FEW_EVENTS,
        REASON_NO_NORMALIZATION, REASON_OK, REASON_NO_NORMALIZATION, REASON_NO_EVENTS]
    assert len(G2_REASONS) == 6 and G2_REASONS[REASON_OK] == ""


class Stub:
    """An estimator that returns what it is told, to see what estimate_pixels passes and keeps."""

    name, min_events = "stub", 3

    def __init__(self, g2, std):
        self.g2, self.std, self.calls = np.asarray(g2, float), np.asarray(std, float), []

    def estimate(self, hist, models):
        self.calls.append((hist.copy(), models.kernel, np.array(models.base)))
        return self.g2[: len(hist)], self.std[: len(hist)]

    def notes(self, hist, models):
        return np.zeros(len(models), dtype=np.int8)


def test_estimate_pixels_passes_only_estimable_pixels_and_names_the_rest():
    h = np.zeros((5, N_BINS), np.int64)
    h[1, 100] = 2                                         # 2 events < min_events 3
    h[2:, 100] = 10
    stub = Stub([0.3, NAN, 0.4], [0.1, 0.1, NAN])
    est = estimate_pixels(stub, h, M(SHAPE, np.array([1.0, 1.0, 2.0, NAN, 3.0])))
    (hist, kernel, base), = stub.calls
    np.testing.assert_array_equal(hist, h[2:])
    assert np.array_equal(kernel, np.tile(kernel_bin_averages(SHAPE), (3, 1)))
    assert np.array_equal(base, [2.0, NAN, 3.0], equal_nan=True)
    assert list(est.reason) == [REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_OK, REASON_NO_ESTIMATE, REASON_NO_STD]
    np.testing.assert_array_equal(est.g2, [NAN, NAN, 0.3, NAN, 0.4])
    # with the singles required, the pixel of unknown base is refused before the estimator sees it
    stub = Stub([0.3, 0.4], [0.1, 0.1])
    est = estimate_pixels(stub, h, M(SHAPE, np.array([1.0, 1.0, 2.0, NAN, 3.0])), require_base=True)
    assert list(est.reason[2:]) == [REASON_OK, REASON_NO_NORMALIZATION, REASON_OK]
    assert len(stub.calls[0][0]) == 2


def test_base_is_computed_once_per_estimate(monkeypatch):
    """The normalization formula runs once per call of each entry point, whatever the estimator."""
    calls = []
    real = model.singles_base
    monkeypatch.setattr(model, "singles_base", lambda *a: calls.append(1) or real(*a))
    hist, n_a, n_b, t = scan(p=6)
    for estimator in (MleEstimator(), CnnEstimator()):
        s = ScanEstimator(estimator)
        for call in (s.add, s.query):
            calls.clear()
            call(hist, n_a, n_b, t)
            assert len(calls) == 1
        calls.clear()
        srm_results({"hist": hist, "n_a": n_a, "n_b": n_b, "dwell_s": t}, estimator)
        assert len(calls) == 1


@pytest.fixture(scope="module")
def pixels():
    return scan(seed=1, p=40)


@pytest.mark.parametrize("make", [MleEstimator, CnnEstimator])
def test_online_and_run_end_are_estimate_pixels(pixels, make):
    hist, n_a, n_b, t = pixels
    estimator = make()
    base = n_a * n_b * BIN_WIDTH_S / t
    s = ScanEstimator(estimator)
    for rows in (slice(0, 20), slice(20, 40)):
        got = s.add(hist[rows], n_a[rows], n_b[rows], t[rows])
        # the context's kernels at each pixel's PL (the scan's shape at the pump its PL says)
        kernels = s.context.kernels((n_a[rows] + n_b[rows]) / t[rows])
        want = estimate_pixels(estimator, hist[rows], pixel_models(base[rows], kernels), require_base=True)
        np.testing.assert_allclose(got.g2, want.g2, rtol=1e-12)
        np.testing.assert_array_equal(got.reason, want.reason)
    assert s.shape != model.NV_DEFAULT_SHAPE                      # 40 pixels of ~1e4 events: fitted
    q = s.query(hist[:3], n_a[:3], n_b[:3], t[:3])
    kernels = s.context.kernels((n_a[:3] + n_b[:3]) / t[:3])
    np.testing.assert_allclose(q.g2, estimate_pixels(estimator, hist[:3], pixel_models(base[:3], kernels)).g2,
                               rtol=1e-12)
    values, context = srm_results({"hist": hist, "n_a": n_a, "n_b": n_b, "dwell_s": t}, estimator)
    fit = fit_shape_full(hist.sum(axis=0), base=base.sum())
    assert context.shape == fit.shape
    # each pixel's kernel is the context's shape at its own pump (fitted on its histogram), nothing else
    pl = (n_a + n_b) / t
    kernels = context.kernels(pl, context.local.fit_pumps(hist, base, pl)) if context.local is not None else None
    models = M(fit.shape, base) if kernels is None else pixel_models(base, kernels)
    np.testing.assert_allclose(values["g2"], estimate_pixels(estimator, hist, models).g2, rtol=1e-12)
    assert abs(np.nanmean(values["g2"]) - 0.35) < 0.1


def cli(tmp_path, arrays, method):
    np.savez(tmp_path / "in.npz", **arrays)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["g2", "estimate", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"),
                         "--method", method]) == 0
    return np.load(tmp_path / "o.npz")


@pytest.mark.parametrize("method, make", [("mle", MleEstimator), ("cnn", CnnEstimator)])
def test_cli_is_estimate_pixels_with_the_base_free_without_singles(tmp_path, pixels, method, make):
    hist, n_a, n_b, t = pixels
    estimator = make()
    base = pixel_base(n_a, n_b, t, len(hist))
    z = cli(tmp_path, {"hist": hist, "n_a": n_a, "n_b": n_b, "t_acq": t}, method)
    want = estimate_pixels(estimator, hist, M(fit_scan_shape(hist, base).shape, base))
    np.testing.assert_allclose(z["g2"], want.g2, rtol=1e-12)
    np.testing.assert_allclose(z["g2_std"], want.g2_std, rtol=1e-12)
    z = cli(tmp_path, {"hist": hist}, method)
    free = np.full(len(hist), NAN)
    fit = fit_scan_shape(hist, free)
    assert fit.shape == fit_shape_full(hist.sum(axis=0)).shape     # the context fitted with its base free
    want = estimate_pixels(estimator, hist, M(fit.shape, free))
    np.testing.assert_allclose(z["g2"], want.g2, rtol=1e-12)
    assert (z["reason_code"] == REASON_OK).all()
    if method == "mle":
        np.testing.assert_allclose(z["g2"], estimate_g2(hist, fit.shape)[0], rtol=1e-12)


def test_estimators_take_a_base_per_pixel_nan_meaning_free(pixels):
    hist, n_a, n_b, t = pixels[0][:6], *(x[:6] for x in pixels[1:])
    base = n_a * n_b * BIN_WIDTH_S / t
    mixed = np.where(np.arange(6) % 2 == 0, base, NAN)
    g_known, _ = estimate_g2(hist, SHAPE, base)
    g_free, _ = estimate_g2(hist, SHAPE)
    g_mixed, _ = estimate_g2(hist, SHAPE, mixed)
    np.testing.assert_allclose(g_mixed, np.where(np.isnan(mixed), g_free, g_known), rtol=1e-12)
    assert not np.allclose(g_known, g_free)
    cnn = CnnEstimator()
    c_mixed, _ = cnn.estimate(hist, SHAPE, mixed)
    np.testing.assert_array_equal(c_mixed[1::2], cnn.estimate(hist, SHAPE, None)[0][1::2])
    np.testing.assert_array_equal(c_mixed[::2], cnn.estimate(hist, SHAPE, base)[0][::2])
    lm = LeastSquaresEstimator()
    l_mixed, _ = lm.estimate(hist[:2], pixel_models(mixed[:2], np.zeros(N_BINS)))
    assert l_mixed[0] == estimate_g2_lm(hist[0], base[0])[0] and l_mixed[1] == estimate_g2_lm(hist[1])[0]


def test_context_sums_use_the_pixels_of_known_base():
    h = np.ones((3, N_BINS), np.int64)
    h_sum, b_sum = context_sums(h, np.array([2.0, NAN, 0.0]))
    np.testing.assert_array_equal(h_sum, 2 * np.ones(N_BINS))
    assert b_sum == 2.0
    h_sum, b_sum = context_sums(h, np.full(3, NAN))
    assert b_sum is None and h_sum.sum() == 3 * N_BINS
    assert fit_scan_shape(np.zeros((2, N_BINS)), np.ones(2)) is None       # no events
    assert fit_scan_shape(h, np.zeros(3)) is None                          # singles that give no normalization
