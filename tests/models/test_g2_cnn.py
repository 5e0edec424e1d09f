"""The g2 CNN: training data split by emitter, the training script end to end on a tiny model, the ONNX
export equal to torch, the shipped model file's metadata and its cost against the paper's network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nvscope.host.srm.cnn_estimator import CnnEstimator
from nvscope.models.g2.cnn import PAPER_ARCH, CnnArch, G2Net, forward_flops
from nvscope.models.g2.features import FEATURES_VERSION, MODEL_FORMAT, SHIPPED_MODEL, cnn_inputs
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, kernel_bin_averages
from nvscope.models.g2.train_cnn import dataset_inputs, main as train_main
from nvscope.models.g2.training_data import simulate_dataset, simulate_emitter, split_by_emitter
from nvscope.proto.histogram import N_BINS


def numpy_all_pairs(t_a, t_b):
    """Every (A, B) pair with -250 ns <= tau < 250 ns binned by the docs/physics.md integer rule, in numpy."""
    lo = np.searchsorted(t_b, t_a - 250_000, side="left")
    hi = np.searchsorted(t_b, t_a + 250_000, side="left")
    counts = hi - lo
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    tau = t_b[np.repeat(lo, counts) + offsets] - np.repeat(t_a, counts)
    return np.bincount(((tau + 250_000) * 215) // 500_000, minlength=N_BINS)


def test_training_histograms_are_all_pairs_of_their_tags():
    """The training windows are histogrammed as the rig does (its kernel): every pair of the window's
    tags, as an independent numpy count gives them, and the singles are the tag counts."""
    r = simulate_emitter(3, 4, events=20_000, n_target=np.array([30, 300, 3000, 20_000]), keep_tags=True)
    assert len(r.tags) == 4
    for w, (t_a, t_b) in enumerate(r.tags):
        np.testing.assert_array_equal(r.hist[w], numpy_all_pairs(t_a, t_b))
        assert r.n_a[w] == t_a.size and r.n_b[w] == t_b.size
    assert r.hist[3].sum() > 5000
    assert simulate_emitter(3, 4, events=20_000, n_target=np.array([30, 300, 3000, 20_000])).tags is None


def test_split_by_emitter_never_shares_an_emitter():
    emitter = np.repeat(np.arange(50), 7)
    tr, va, te = split_by_emitter(emitter, (0.8, 0.1, 0.1), seed=3)
    sets = [set(emitter[i]) for i in (tr, va, te)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sorted(np.concatenate([tr, va, te])) == list(range(emitter.size))
    assert len(sets[0]) == 40 and len(sets[1]) == 5 and len(sets[2]) == 5


@pytest.fixture(scope="module")
def tiny_data():
    return simulate_dataset(4, 12, seed=5, events=20_000, workers=1)


def test_simulated_windows_carry_their_truth(tiny_data):
    d = tiny_data
    assert d["hist"].shape == (48, N_BINS)
    assert np.all((d["g2_true"] >= 0.0) & (d["g2_true"] <= 1.0))
    # an emitter's windows differ in g2(0) like the pixels of a scan across it; each window's context is
    # the shape at its pump (windows at one pump level share it), and uncorrelated windows have g2(0) = 1
    for e in range(4):
        rows = (d["emitter"] == e) & (d["pump"] > 0)
        assert np.ptp(d["g2_true"][rows]) > 0.02
        for u in np.unique(d["pump"][rows]):
            same = rows & (d["pump"] == u)
            assert np.ptp(d["shape_true"][same], axis=0).max() == 0
    assert np.all(d["g2_true"][d["pump"] == 0] == 1.0) and np.ptp(d["g2_true"]) > 0.5
    # each window's truth is what its light gives: the MLE with the emitter's true shape finds it
    from nvscope.models.g2.mle import estimate_g2
    from nvscope.models.g2.model import EmitterShape, singles_base

    big = np.flatnonzero(d["hist"].sum(axis=1) > 3000)
    g, sd = np.array([estimate_g2(d["hist"][i], EmitterShape(*d["shape_true"][i]),
                                  singles_base(d["n_a"][i], d["n_b"][i], d["t_acq"][i])) for i in big]).T
    pulls = (g - d["g2_true"][big]) / sd
    assert big.size > 10 and np.all(np.abs(pulls) < 5) and abs(pulls.mean()) < 1.0, pulls
    assert np.all(d["n_a"] > 0) and np.all(d["t_acq"] > 0)
    inputs = dataset_inputs(d, seed=0)
    assert set(inputs["emitter"]) <= set(range(4)) and inputs["x"].shape[1:] == (3, N_BINS)


def _onnx_equals_torch(net: G2Net, est: CnnEstimator) -> None:
    """The exported network under onnxruntime gives torch's outputs on varied inputs (singles known or not)."""
    net.eval()
    rng = np.random.default_rng(0)
    h = rng.poisson(rng.uniform(0.05, 50, (64, 1)), (64, N_BINS))
    base = np.where(rng.uniform(size=64) < 0.5, np.nan, h.mean(axis=1) * rng.uniform(0.8, 1.2, 64))
    x, s = cnn_inputs(h, kernel_bin_averages(NV_DEFAULT_SHAPE), base)
    with torch.no_grad():
        m, sd = net(torch.from_numpy(x), torch.from_numpy(s))
    g2, std = est.run(x, s)
    np.testing.assert_allclose(g2, m.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, sd.numpy(), rtol=1e-5, atol=1e-5)


def test_an_exported_network_runs_in_onnxruntime_as_in_torch(tmp_path):
    from nvscope.models.g2.train_cnn import export_onnx, model_metadata

    torch.manual_seed(1)
    arch = CnnArch(filters=(4, 4, 4), hidden=(8,))
    net = G2Net(arch)
    export_onnx(net, tmp_path / "random.onnx", model_metadata(arch, {}))
    est = CnnEstimator(tmp_path / "random.onnx")
    assert est.metadata["features_version"] == FEATURES_VERSION
    _onnx_equals_torch(net, est)


@pytest.mark.slow  # faster: test_an_exported_network_runs_in_onnxruntime_as_in_torch and test_training_lowers_the_validation_loss
def test_tiny_training_through_the_script_and_onnx_equals_torch(tmp_path):
    onnx_path, pt = tmp_path / "tiny.onnx", tmp_path / "tiny.pt"
    code = train_main(["--out", str(onnx_path), "--emitters", "10", "--windows", "8", "--events", "20000",
                       "--epochs", "3", "--save-torch", str(pt)])
    assert code == 0
    est = CnnEstimator(onnx_path)
    meta = est.metadata
    assert meta["format"] == MODEL_FORMAT and meta["features_version"] == FEATURES_VERSION
    assert json.loads(meta["g2_range"]) == [0.0, 1.0] and json.loads(meta["n_events_range"]) == [20, 100000]
    net = G2Net(CnnArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(meta["arch"]).items()}))
    net.load_state_dict(torch.load(pt))
    _onnx_equals_torch(net, est)


def test_training_lowers_the_validation_loss(tiny_data):
    from nvscope.models.g2.train_cnn import TrainConfig, train

    d = dataset_inputs(tiny_data, seed=0)
    idx = np.arange(len(d["y"]))
    torch.manual_seed(0)
    net = G2Net(CnnArch(filters=(4, 4, 4), hidden=(8,)))
    from nvscope.models.g2.train_cnn import _tensors, evaluate

    before = evaluate(net, *_tensors(d, idx))
    result = train(net, d, idx, idx, TrainConfig(epochs=30, batch=16, lr=3e-3), log=lambda _: None)
    assert result["best_val_nll"] < before - 0.2


def test_shipped_model_records_its_training_and_is_20x_lighter_than_the_paper():
    est = CnnEstimator(SHIPPED_MODEL)
    meta = est.metadata
    assert json.loads(meta["t1_range_s"]) == [3e-9, 60e-9]
    assert len(meta["git_commit"]) >= 7
    arch = json.loads(meta["arch"])
    shipped = forward_flops(CnnArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}))
    assert int(meta["forward_flops"]) == shipped
    assert forward_flops(PAPER_ARCH) >= 20 * shipped
    assert est.min_events == 20
