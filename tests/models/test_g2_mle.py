"""The Poisson-MLE g2(0) estimator (models/g2) against independent computations.

The reference model here is written out again from docs/physics.md sections 1.4 and 1.6 and integrated
over the bins by scipy quad, and the Poisson histograms are simulated from those
quadrature integrals, so nothing below trusts the closed forms it tests.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pytest
from scipy.integrate import quad

from nvscope.models.g2.mle import (
    G0_BOUNDS,
    cramer_rao_std,
    estimate_g2,
    fit_shape,
    fit_shape_full,
)
from nvscope.models.g2.model import (
    EmitterShape,
    bin_integrals,
    bin_integrals_dg0,
    exp_bin_integrals_dt,
    expected_histogram,
    g2_model,
    singles_base,
)
from nvscope.proto.histogram import BIN_WIDTH_S, CENTRE_BIN, N_BINS, bin_edges_s

NS = 1e-9
D_NS = BIN_WIDTH_S / NS
NV = (20.0, 250.0, 0.7)  # t1 ns, t2 ns, a: NV-like (k21 ~ 1/20 ns, k31 ~ 1/250 ns)


def g2_ref(tau_ns, t1, t2, a, g0):
    """docs/physics.md section 1.4 / paper Eq. 3 with a1 = (1 - g0)(1 + a), a2 = (1 - g0) a (tau, t1, t2 in ns)."""
    a1, a2 = (1 - g0) * (1 + a), (1 - g0) * a
    return 1 - a1 * np.exp(-abs(tau_ns) / t1) + a2 * np.exp(-abs(tau_ns) / t2)


def _quad_bins(f) -> np.ndarray:
    e = bin_edges_s() / NS
    out = np.empty(N_BINS)
    for k in range(N_BINS):
        pts = [0.0] if e[k] < 0 < e[k + 1] else None
        out[k] = quad(f, e[k], e[k + 1], points=pts, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return out / D_NS


@lru_cache(maxsize=None)
def quad_bin_averages(t1, t2, a, g0) -> np.ndarray:
    """(1/D) * integral over each bin of g2_ref, by adaptive quadrature."""
    return _quad_bins(lambda t: g2_ref(t, t1, t2, a, g0))


def shape_of(t1, t2, a) -> EmitterShape:
    return EmitterShape(t1 * NS, t2 * NS, a)


def poisson_histograms(rng, shape_ns, g0, n_events, reps):
    """(reps, N_BINS) Poisson counts with expected total n_events, and their base."""
    c = quad_bin_averages(*shape_ns, g0)
    base = n_events / c.sum()
    return rng.poisson(base * c, size=(reps, N_BINS)), base


def singles_for(base):
    """n_a = n_b, t_acq = 1 s giving this base (base = n_a n_b D / t_acq)."""
    n = np.sqrt(base / BIN_WIDTH_S)
    return n, n, 1.0


# ---------------------------------------------------------------------------- model


SHAPES = [(20.0, 250.0, 0.7, 0.5), (1.0, 5000.0, 10.0, 0.0), (200.0, 20.0, 0.0, 1.3),
          (15.0, 200.0, 0.3, -0.5), (2.0, 25.0, 3.0, 0.9)]


@pytest.mark.parametrize("t1, t2, a, g0", SHAPES)
def test_bin_integrals_match_quadrature(t1, t2, a, g0):
    got = bin_integrals(shape_of(t1, t2, a), g0)
    assert got.shape == (N_BINS,)
    np.testing.assert_allclose(got, quad_bin_averages(t1, t2, a, g0), rtol=1e-10, atol=0)


@pytest.mark.parametrize("t1, t2, a, g0", SHAPES)
def test_bin_integrals_derivative_is_the_kernel_average(t1, t2, a, g0):
    kernel = _quad_bins(lambda t: (1 + a) * np.exp(-abs(t) / t1) - a * np.exp(-abs(t) / t2))
    dg0 = bin_integrals_dg0(shape_of(t1, t2, a))
    np.testing.assert_allclose(dg0, kernel, rtol=1e-10, atol=1e-300)
    # linear in g0: c(g0 + h) - c(g0) = h * dc/dg0
    sh = shape_of(t1, t2, a)
    np.testing.assert_allclose(bin_integrals(sh, g0 + 0.25) - bin_integrals(sh, g0), 0.25 * dg0, atol=1e-13)


@pytest.mark.parametrize("t", [1e-9, 20e-9, 5e-6])
def test_exp_bin_integral_t_derivative_matches_quadrature(t):
    want = _quad_bins(lambda x: abs(x) * NS / (t * t) * np.exp(-abs(x) * NS / t)) * D_NS * NS
    np.testing.assert_allclose(exp_bin_integrals_dt(t), want, rtol=1e-9, atol=1e-300)


def test_g2_model_and_expected_histogram():
    sh = shape_of(*NV)
    assert g2_model(0.0, sh, 0.37) == pytest.approx(0.37, abs=1e-15)
    tau = np.linspace(-300, 300, 41)
    np.testing.assert_allclose(g2_model(tau * NS, sh, 0.37), g2_ref(tau, *NV, 0.37), rtol=1e-13)
    # the centre bin is the one straddling 0 and lies below g2 = 1 for g0 < 1
    c = bin_integrals(sh, 0.37)
    assert np.argmin(c) == CENTRE_BIN
    base = singles_base(3e4, 2e4, 2.0)
    assert base == pytest.approx(3e4 * 2e4 * BIN_WIDTH_S / 2.0)
    np.testing.assert_allclose(expected_histogram(sh, 0.37, base), base * c, rtol=1e-15)
    # vectorized over g0
    assert expected_histogram(sh, np.array([0.1, 0.5]), np.array([1.0, 2.0])).shape == (2, N_BINS)


def test_emitter_shape_rejects_bad_times():
    with pytest.raises(ValueError, match="t1"):
        EmitterShape(0.0, 250e-9, 0.5)
    with pytest.raises(ValueError, match="t2"):
        EmitterShape(20e-9, float("nan"), 0.5)


# ---------------------------------------------------------------------------- Cramer-Rao bound


PHYSICS_TABLE = [  # docs/physics.md section 1.8, g2(0) = 0.5: (t1 ns, t2 ns, a), base known, std at 65 and 1000 events
    ((20.0, 250.0, 0.7), False, 0.547, 0.139),
    ((12.94, 148.6, 0.7475), False, 0.655, 0.167),      # NV_DEFAULT_SHAPE, the default rates
    ((12.94, 148.6, 0.7475), True, 0.407, 0.104),
]


@pytest.mark.parametrize("shape_ns, base_known, at65, at1000", PHYSICS_TABLE)
def test_cramer_rao_matches_physics_reference_numbers(shape_ns, base_known, at65, at1000):
    """Each row of the table for the shape and normalization it states (issue 12: the figures were for
    t1 = 20 ns, t2 = 250 ns, a = 0.7 with the base free, and the test must use that bound for that shape)."""
    sh = shape_of(*shape_ns)
    assert cramer_rao_std(0.5, 65, sh, base_known=base_known) == pytest.approx(at65, abs=1e-3)
    assert cramer_rao_std(0.5, 1000, sh, base_known=base_known) == pytest.approx(at1000, abs=1e-3)
    n = np.array([50, 200, 1000, 5000])
    crb = cramer_rao_std(0.5, n, sh, base_known=base_known)
    np.testing.assert_allclose(crb * np.sqrt(n), crb[0] * np.sqrt(n[0]), rtol=1e-12)


def test_cramer_rao_of_pixel_models_is_the_bound_of_its_shape_and_base():
    """cramer_rao_models at the all-pairs model equals cramer_rao_std with the base known; a start-stop
    weight w < 1 loses information as w fewer events would (uniform w: std / sqrt(w))."""
    from nvscope.models.g2.mle import cramer_rao_models
    from nvscope.models.g2.model import kernel_bin_averages, pixel_models

    sh = shape_of(*NV)
    base = 1000 / bin_integrals(sh, 0.3).sum()
    m = pixel_models(np.array([base, base, np.nan]), kernel_bin_averages(sh), np.array([1.0, 0.5, 1.0])[:, None]
                     * np.ones(N_BINS))
    crb = cramer_rao_models(0.3, m)
    assert crb[0] == pytest.approx(cramer_rao_std(0.3, 1000, sh, base_known=True), rel=1e-12)
    assert crb[1] == pytest.approx(crb[0] / np.sqrt(0.5), rel=1e-12)
    assert np.isnan(crb[2])


@pytest.mark.parametrize("t1, t2, a", [NV, (15.0, 200.0, 0.3), (10.0, 300.0, 2.0)])
def test_cramer_rao_known_base_is_not_larger(t1, t2, a):
    sh = shape_of(t1, t2, a)
    g0 = np.linspace(0.0, 1.0, 11)
    assert np.all(cramer_rao_std(g0, 1000, sh, base_known=True) <= cramer_rao_std(g0, 1000, sh))
    assert np.isnan(cramer_rao_std(-0.5, 1000, sh))   # c_k < 0 in the centre: no Fisher information


# ---------------------------------------------------------------------------- per-pixel estimates


@pytest.fixture(scope="module")
def sim5000():
    """2000 Poisson replicas of an NV-like g2(0) = 0.5 histogram with 5000 expected events."""
    rng = np.random.default_rng(20240611)
    h, base = poisson_histograms(rng, NV, 0.5, 5000, 2000)
    free = estimate_g2(h, shape_of(*NV))
    known = estimate_g2(h, shape_of(*NV), singles_base(*singles_for(base)))
    return {"free": free, "known": known}


@pytest.mark.parametrize("path, base_known", [("free", False), ("known", True)])
def test_rmse_at_cramer_rao_bound_and_unbiased(sim5000, path, base_known):
    g, _ = sim5000[path]
    err = g - 0.5
    assert np.all(np.isfinite(g))
    crb = cramer_rao_std(0.5, 5000, shape_of(*NV), base_known=base_known)
    rmse = np.sqrt(np.mean(err**2))
    assert 0.9 * crb < rmse < 1.1 * crb, (rmse, crb)
    assert abs(err.mean()) < 0.01


@pytest.mark.parametrize("path", ["free", "known"])
def test_fisher_std_coverage(sim5000, path):
    g, std = sim5000[path]
    cover = np.mean(np.abs(g - 0.5) < std)
    assert 0.60 < cover < 0.75, cover


def test_singles_normalization_gives_smaller_std(sim5000):
    g_free, s_free = sim5000["free"]
    g_known, s_known = sim5000["known"]
    assert np.median(s_known) <= np.median(s_free)
    assert np.mean(s_known <= s_free) > 0.99
    assert np.sqrt(np.mean((g_known - 0.5) ** 2)) <= np.sqrt(np.mean((g_free - 0.5) ** 2))


def _brute_force_mle(hk, sh, base):
    """Maximum of the (extended) Poisson likelihood over a coarse, then a fine g0 grid."""
    m = hk > 0

    def log_lik(grid):
        C = bin_integrals(sh, grid)
        S = C.sum(axis=1)
        Cm = C[:, m]
        valid = np.all(Cm > 0, axis=1) & (S > 0)
        logc = (np.log(np.where(Cm > 0, Cm, 1.0)) * hk[m]).sum(axis=1)
        L = logc - base * S if base is not None else logc - hk.sum() * np.log(np.where(S > 0, S, 1.0))
        return np.where(valid, L, -np.inf)

    coarse = np.linspace(G0_BOUNDS[0], G0_BOUNDS[1], 3001)
    g = coarse[np.argmax(log_lik(coarse))]
    fine = np.clip(np.linspace(g - 2e-3, g + 2e-3, 4001), *G0_BOUNDS)
    return fine[np.argmax(log_lik(fine))]


@pytest.mark.parametrize("n_events", [5, 40, 3000])
@pytest.mark.parametrize("base_known", [False, True])
def test_estimate_is_the_likelihood_maximum(n_events, base_known):
    """Against a brute-force maximum of the likelihood on a g0 grid (the likelihood is unimodal)."""
    rng = np.random.default_rng(n_events)
    sh = shape_of(*NV)
    h, base = poisson_histograms(rng, NV, 0.4, n_events, 12)
    h = h[h.sum(axis=1) >= 2]
    g, _ = estimate_g2(h, sh, singles_base(*singles_for(base)) if base_known else None)
    for hk, gk in zip(h, g):
        assert gk == pytest.approx(_brute_force_mle(hk, sh, base if base_known else None), abs=3e-6)


def test_low_counts_are_not_clipped_to_the_physical_range():
    rng = np.random.default_rng(7)
    h, base = poisson_histograms(rng, NV, 0.1, 50, 2000)
    g, std = estimate_g2(h, shape_of(*NV), singles_base(*singles_for(base)))
    ok = np.isfinite(g)
    assert np.mean(g[ok] < 0) > 0.05            # clipping at 0 would give none
    assert np.all((g[ok] >= G0_BOUNDS[0]) & (g[ok] <= G0_BOUNDS[1]))
    assert np.all(std[ok] > 0)
    # counts only far from tau = 0: the likelihood prefers g0 < 0, and the estimate says so
    far = np.zeros(N_BINS)
    far[[5, 40, 170, 210]] = 1
    g_far, _ = estimate_g2(far, shape_of(*NV))
    assert g_far < 0


def test_empty_and_single_event_histograms():
    sh = shape_of(*NV)
    h = np.zeros((3, N_BINS), dtype=np.int64)
    h[1, CENTRE_BIN + 30] = 1
    h[2, [10, 100, 150]] = [3, 1, 2]
    g, s = estimate_g2(h, sh)
    assert np.isnan(g[0]) and np.isnan(s[0])
    assert np.isnan(g[1]) and np.isnan(s[1])         # one event, base free: nothing to say
    assert np.isfinite(g[2]) and np.isfinite(s[2])
    gk, sk = estimate_g2(h, sh, singles_base(1e4, 1e4, 1.0))
    assert np.isnan(gk[0]) and np.isnan(sk[0])
    assert np.isfinite(gk[1]) and np.isfinite(sk[1])  # one event against a known base
    gz, sz = estimate_g2(h, sh, singles_base(np.array([1e4, 0.0, 1e4]), 1e4, 1.0))
    assert np.isnan(gz[1]) and np.isnan(sz[1])        # base 0 with events: no estimate
    # base per pixel, NaN where unknown: those pixels are estimated with the base free
    b = float(singles_base(1e4, 1e4, 1.0))
    gm, sm = estimate_g2(h, sh, np.array([b, np.nan, np.nan]))
    assert np.isnan(gm[1]) and np.isnan(sm[1])        # one event, base free
    assert gm[2] == pytest.approx(g[2], rel=1e-12) and sm[2] == pytest.approx(s[2], rel=1e-12)
    gm, sm = estimate_g2(h, sh, np.array([np.nan, b, np.nan]))
    assert gm[1] == pytest.approx(gk[1], rel=1e-12) and sm[1] == pytest.approx(sk[1], rel=1e-12)


def test_result_shapes_follow_the_input():
    sh = shape_of(*NV)
    rng = np.random.default_rng(3)
    h, _ = poisson_histograms(rng, NV, 0.5, 300, 6)
    g, s = estimate_g2(h[0], sh)
    assert g.shape == () and s.shape == ()
    g, s = estimate_g2(h.reshape(2, 3, N_BINS), sh)
    assert g.shape == (2, 3) and s.shape == (2, 3)
    np.testing.assert_array_equal(g.ravel(), estimate_g2(h, sh)[0])


def test_bad_input_raises_clear_errors():
    sh = shape_of(*NV)
    with pytest.raises(ValueError, match=r"215 bins.*\(3, 214\)"):
        estimate_g2(np.zeros((3, 214)), sh)
    with pytest.raises(ValueError, match="215 bins"):
        estimate_g2(np.float64(3.0), sh)
    bad = np.ones((2, N_BINS))
    bad[1, 7] = -1
    with pytest.raises(ValueError, match="negative"):
        estimate_g2(bad, sh)
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match="finite"):
        estimate_g2(bad, sh)
    with pytest.raises(ValueError, match="base must be >= 0"):
        estimate_g2(np.ones((2, N_BINS)), sh, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="finite"):
        estimate_g2(np.ones((2, N_BINS)), sh, np.inf)
    with pytest.raises(ValueError, match=r"base must be a scalar or have shape \(2,\)"):
        estimate_g2(np.ones((2, N_BINS)), sh, np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        fit_shape(np.zeros(N_BINS))
    with pytest.raises(ValueError, match=r"215 bins.*\(100,\)"):
        fit_shape(np.ones(100))
    with pytest.raises(ValueError, match="negative"):
        fit_shape(-np.ones(N_BINS))


def test_thousands_of_pixels_per_second():
    rng = np.random.default_rng(11)
    h, base = poisson_histograms(rng, NV, 0.5, 65, 10_000)
    sh = shape_of(*NV)
    estimate_g2(h[:100], sh)                          # warm-up
    t0 = time.perf_counter()
    estimate_g2(h, sh)
    estimate_g2(h, sh, singles_base(*singles_for(base)))
    rate = 2 * len(h) / (time.perf_counter() - t0)
    assert rate > 2000, f"{rate:.0f} pixels/s"


# ---------------------------------------------------------------------------- shape fit


def _rel_err(fit_shape_, t1, t2, a):
    return np.abs(np.array([fit_shape_.t1 / NS / t1, fit_shape_.t2 / NS / t2, fit_shape_.a / a]) - 1.0)


@pytest.mark.parametrize("n_events, tol", [(1e6, 0.10), (1e7, 0.03)])
def test_fit_shape_recovers_nv_shape_with_singles_base(n_events, tol):
    # Fisher std of (t1, t2, a) here is (1.4, 2.5, 1.9) % at 1e6 events, sqrt(10) less at 1e7.
    t1, t2, a, g0 = 17.0, 230.0, 0.6, 0.2
    rng = np.random.default_rng(int(n_events) + 1)
    h, base = poisson_histograms(rng, (t1, t2, a), g0, n_events, 1)
    fit = fit_shape_full(h[0], base=base)
    assert np.all(_rel_err(fit.shape, t1, t2, a) < tol), fit
    assert abs(fit.g0 - g0) < 0.03 and fit.base == base


def test_fit_shape_recovers_short_bunching_with_free_base():
    # Fisher std of (t1, t2, a) here is (0.7, 1.0, 0.9) % at 1e7 events.
    t1, t2, a, g0 = 10.0, 60.0, 1.0, 0.2
    rng = np.random.default_rng(5)
    h, base = poisson_histograms(rng, (t1, t2, a), g0, 1e7, 1)
    fit = fit_shape_full(h)                            # a (1, 215) array is summed over pixels
    assert np.all(_rel_err(fit.shape, t1, t2, a) < 0.04), fit
    assert fit.base == pytest.approx(base, rel=0.01)
    assert fit_shape(h) == fit.shape


@pytest.mark.parametrize("t1, t2, a, g0", [(*NV, 0.5), (100.0, 25.0, 0.3, 0.2)])
def test_fit_shape_free_base_reaches_the_likelihood_maximum(t1, t2, a, g0):
    """Base free, 1e6 events. NV-like: t2 and a are only known to tens of % here (the slow
    bunching looks like a change of base). t1 > t2: a single start ends in a local maximum.
    Either way the fit must find a likelihood at least as high as the truth's and pin t1."""
    rng = np.random.default_rng(9)
    h, _ = poisson_histograms(rng, (t1, t2, a), g0, 1e6, 1)
    n = h[0]
    fit = fit_shape_full(n)

    def log_lik(c):
        return float(n @ np.log(c / c.sum()))        # multinomial (base profiled)

    fitted = bin_integrals(fit.shape, fit.g0)
    assert log_lik(fitted) >= log_lik(quad_bin_averages(t1, t2, a, g0)) - 1e-6
    assert abs(fit.shape.t1 / NS / t1 - 1) < 0.15
    assert abs(fit.g0 - g0) < 0.25


def test_shape_refit_from_a_previous_shape_matches_the_full_search():
    from nvscope.models.g2.mle import fit_shape_full
    from nvscope.models.g2.model import EmitterShape, expected_histogram

    true = EmitterShape(15e-9, 200e-9, 0.9)
    rng = np.random.default_rng(4)
    hist = rng.poisson(expected_histogram(true, 0.3, 400.0))
    full = fit_shape_full(hist, base=400.0)
    warm = fit_shape_full(hist, base=400.0, start=EmitterShape(12e-9, 150e-9, 0.7))
    assert abs(warm.nll - full.nll) < 1e-9
    assert abs(warm.shape.t1 / full.shape.t1 - 1) < 1e-3 and abs(warm.shape.a - full.shape.a) < 1e-2


def test_per_pixel_models_are_the_likelihood_maximum():
    """PixelModels with a different shape and start-stop weight per pixel (vectorized, one call): each
    estimate is the brute-force maximum of its own Poisson likelihood base * weight_k * c_k(g0)."""
    from nvscope.models.g2.mle import estimate_g2
    from nvscope.models.g2.model import bin_widths, pixel_models, shape_kernels
    from nvscope.models.g2.normalization import startstop_weight

    rng = np.random.default_rng(12)
    t1, t2, a = np.array([10e-9, 20e-9, 40e-9]), np.array([100e-9, 250e-9, 600e-9]), np.array([0.2, 0.7, 1.5])
    kern = shape_kernels(t1, t2, a)
    np.testing.assert_allclose(kern[1], bin_integrals_dg0(EmitterShape(20e-9, 250e-9, 0.7)), rtol=1e-12)
    weight = startstop_weight(np.array([5e4, 5e5, 1e6]))
    base = np.array([3.0, 20.0, 8.0])
    mu = base[:, None] * weight * (bin_widths() - (1 - np.array([0.2, 0.5, 0.9]))[:, None] * kern)
    h = rng.poisson(mu)
    g, s = estimate_g2(h, pixel_models(base, kern, weight, "startstop"))
    grid = np.linspace(-1, 2, 60001)
    for p in range(3):
        c = weight[p] * (bin_widths() - (1 - grid[:, None]) * kern[p])
        ok = np.all((c > 0) | (h[p] == 0), axis=1)
        L = np.where(ok, (h[p] * np.log(np.where(c > 0, c, 1.0))).sum(axis=1) - base[p] * c.sum(axis=1), -np.inf)
        assert g[p] == pytest.approx(grid[np.argmax(L)], abs=1e-4)
    assert np.all(s > 0)
