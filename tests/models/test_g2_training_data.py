"""The g2 CNN's training data: each emitter seen at several pump levels as the pixels of a scan (shape and
signal as the three-level model gives them there), uncorrelated windows, each window's truth, the split by
emitter, and a tiny training run whose model file says where the MLE takes over (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.linalg import expm

from nvscope.firmware_sim.emitter import emission_rate, rate_matrix, stationary_populations
from nvscope.models.g2.mle import estimate_g2
from nvscope.models.g2.model import pixel_base, pixel_models, shape_kernels
from nvscope.models.g2.train_cnn import EVENT_BANDS, mle_above_events
from nvscope.models.g2.training_data import PUMP_RANGE, simulate_emitter, split_by_emitter
from nvscope.proto.histogram import N_BINS


def three_level_g2(rates, tau_s: np.ndarray) -> np.ndarray:
    """g2(tau) of one emitter by brute force: p2(tau | ground at 0) / p2 stationary, from expm of the rate matrix."""
    m = rate_matrix(rates)
    p2 = np.array([(expm(m * t) @ np.array([1.0, 0.0, 0.0]))[1] for t in tau_s])
    return p2 / stationary_populations(rates)[1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_pump_level_has_the_three_level_shape_and_signal_of_its_pump(seed):
    """The windows of one emitter lie at several pumps; each window's true shape is the g2 of the rate matrix
    at its pump (brute force, expm), and its PL is the signal eta0 u E(u u k12) plus the scan's background."""
    r = simulate_emitter(seed, 16, events=300, uncorrelated=0.0, fit_context=False)
    pumps = np.unique(r.pump)
    assert pumps.size >= 2 and pumps.max() == 1.0 and pumps.min() >= PUMP_RANGE[0] - 1e-9
    tau = np.array([2e-9, 8e-9, 20e-9, 60e-9, 150e-9, 240e-9])
    for u in pumps:
        t1, t2, a = r.shape_true[r.pump == u][0]
        model = 1.0 - (1.0 + a) * np.exp(-tau / t1) + a * np.exp(-tau / t2)
        np.testing.assert_allclose(model, three_level_g2(r.rates.pumped(u), tau), atol=1e-9)
    # the shape changes with the pump (not one scan-wide shape)
    assert np.ptp(r.shape_true[:, 2]) > 0.02
    pl = (r.n_a + r.n_b) / r.t_acq
    signal = np.array([r.eta0 * u * emission_rate(r.rates.pumped(u)) for u in r.pump])
    expected = signal + r.background_cps + 200.0  # two detectors' dark counts
    photons = expected * r.t_acq
    # dead time (22 ns) loses up to ~2 % at 1e6 counts/s; otherwise within 5 Poisson sigma
    assert np.all(np.abs(pl * r.t_acq - photons) < 5 * np.sqrt(photons) + 0.025 * photons)
    # g2(0) follows the signal fraction: brighter pump, lower g2(0)
    order = np.argsort(r.pump)
    assert np.all(np.diff(r.g2_true[order]) <= 1e-12)


def test_uncorrelated_windows_are_flat_with_truth_one():
    """Windows of uncorrelated light: truth g2(0) = 1 exactly, histograms flat at the singles level within
    Poisson error (chi-square over all bins and windows, and the total against base x 215)."""
    r = simulate_emitter(7, 12, n_target=3000.0, uncorrelated=1.0, fit_context=False)
    assert np.all(r.g2_true == 1.0) and np.all(r.pump == 0)
    base = pixel_base(r.n_a, r.n_b, r.t_acq, len(r.hist))
    expected = base[:, None] * np.ones(N_BINS)
    chi2 = float((((r.hist - expected) ** 2) / expected).sum())
    dof = r.hist.size
    assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof), (chi2, dof)
    total, exp_total = r.hist.sum(), expected.sum()
    assert abs(total - exp_total) < 5 * np.sqrt(exp_total)


def test_window_truth_matches_an_independent_mle_with_the_true_local_shape():
    """Over many windows, the MLE with each window's true local shape and singles base averages to the
    windows' g2_true within its error (the truth is what the light of the window gives)."""
    rs = [simulate_emitter(s, 25, n_target=3000.0, fit_context=False) for s in range(20, 26)]
    hist = np.concatenate([r.hist for r in rs])
    shape = np.concatenate([r.shape_true for r in rs])
    truth = np.concatenate([r.g2_true for r in rs])
    base = pixel_base(*(np.concatenate([getattr(r, k) for r in rs]) for k in ("n_a", "n_b", "t_acq")), len(hist))
    g, sd = estimate_g2(hist, pixel_models(base, shape_kernels(shape[:, 0], shape[:, 1], shape[:, 2])))
    ok = np.isfinite(g)
    pulls = (g[ok] - truth[ok]) / sd[ok]
    assert ok.sum() > 100
    assert abs(pulls.mean()) < 4 / np.sqrt(ok.sum()) + 0.1, pulls.mean()
    assert 0.7 < pulls.std() < 1.4, pulls.std()


def test_each_window_gets_the_local_shape_the_host_fits_at_its_pl():
    """The context of a window is the host's local shape at its PL (fit_local_shapes on the emitter's
    windows): it follows the pump within an emitter, close to the window's true local shape."""
    r = simulate_emitter(3, 24, n_target=4000.0, uncorrelated=0.0)
    assert np.all(np.isfinite(r.context)) and np.all(r.context[:, :2] > 0)
    levels = np.unique(r.pump)
    a_ctx = np.array([r.context[r.pump == u, 2].mean() for u in levels])
    a_true = np.array([r.shape_true[r.pump == u, 2][0] for u in levels])
    assert levels.size >= 2 and np.ptp(a_ctx) > 0.02
    assert np.all(np.diff(a_ctx) * np.diff(a_true) >= 0), (a_ctx, a_true)
    assert np.all(np.abs(a_ctx - a_true) < 0.1 + 0.3 * a_true), (a_ctx, a_true)


def test_split_by_emitter_keeps_emitters_apart():
    emitter = np.repeat(np.arange(30), np.arange(30) % 5 + 1)
    tr, va, te = split_by_emitter(emitter, (0.8, 0.1, 0.1), seed=4)
    sets = [set(emitter[i]) for i in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sorted(np.concatenate([tr, va, te])) == list(range(emitter.size))


def test_mle_above_events_is_the_lowest_edge_with_the_mle_as_good_in_every_band_above():
    bands = [list(b) for b in zip(EVENT_BANDS[:-1], EVENT_BANDS[1:])]
    rmse = {"bands": bands, "cnn": [0.2, 0.1, 0.05, 0.03, 0.01], "mle": [0.3, 0.09, 0.06, 0.03, 0.009]}
    assert mle_above_events(rmse) == 3000   # the MLE is worse in 1000-3000
    rmse["mle"][2] = 0.04
    assert mle_above_events(rmse) == 200
    rmse["mle"][4] = 0.02
    assert mle_above_events(rmse) == EVENT_BANDS[-1]  # the network is better at the top: MLE nowhere
    rmse["cnn"][4] = rmse["mle"][4] = float("nan")   # an empty band does not count
    assert mle_above_events(rmse) == 200


def test_a_tiny_training_writes_mle_above_events_in_the_model_file(tmp_path):
    from nvscope.host.srm.cnn_estimator import CnnEstimator
    from nvscope.models.g2.train_cnn import main as train_main
    from nvscope.proto.npz_files import write_npz

    rs = [simulate_emitter(s, 6, events=2000, fit_context=False) for s in range(10)]
    data = {k: np.concatenate([getattr(r, k) for r in rs])
            for k in ("hist", "n_a", "n_b", "t_acq", "g2_true", "shape_true", "context", "pump")}
    data["emitter"] = np.repeat(np.arange(10), 6)
    write_npz(str(tmp_path / "d.npz"), data)
    out = tmp_path / "tiny.onnx"
    assert train_main(["--out", str(out), "--data", str(tmp_path / "d.npz"),
                       "--epochs", "1", "--max-steps", "3", "--threads", "1"]) == 0
    meta = CnnEstimator(out).metadata
    assert int(meta["mle_above_events"]) in EVENT_BANDS
    lo, hi = json.loads(meta["rate_range_cps"])
    assert 0 < lo < hi
    val = json.loads(meta["val_rmse_by_events"])
    assert [b[0] for b in val["bands"]] == list(EVENT_BANDS[:-1]) and len(val["cnn"]) == len(val["mle"])
