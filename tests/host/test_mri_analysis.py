"""The run-end NV-MRI analysis: maps, the localization and its truth errors written into the run file,
and the figures beside it; on synthetic runs with the simulator's physics (stored through a RunStore)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from nvscope.host.mri.analysis import MriAnalysis, localization_input, model_maps
from nvscope.host.mri.maps import build_maps
from nvscope.host.store import read_deer, read_lock
from nvscope.proto.messages import RunEnd

_spec = importlib.util.spec_from_file_location("mri_synthetic", Path(__file__).with_name("test_mri_maps.py"))
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)  # the synthetic run of the maps' tests, one definition


def _stub_localize(monkeypatch, calls: list) -> None:
    """models.mri.localize replaced by a stub that records its input and returns a fixed spin, so that
    what the analysis writes can be checked exactly, whatever the model does."""
    def localize(scan, model="auto"):
        calls.append(scan)
        spin = types.SimpleNamespace(position_m=np.array([1e-9, -1e-9, 8e-9]), sigma_m=np.array([1e-10, 1e-10, 3e-10]))
        out = {"model": "spins", "spins": [{"position_m": spin.position_m.tolist(), "sigma_m": spin.sigma_m.tolist()}],
               "layer": None, "chi2_reduced": 1.01}
        return types.SimpleNamespace(model="spins", spins=[spin], layer=None, chi2_reduced=1.01,
                                     deer_model=np.asarray(scan.deer) * 0.5, warnings=["stub warning"],
                                     to_json=lambda: out)
    monkeypatch.setitem(sys.modules, "nvscope.models.mri.localize", types.SimpleNamespace(localize=localize))


def test_the_analysis_writes_maps_localization_truth_and_figures(tmp_path, monkeypatch):
    calls: list = []
    _stub_localize(monkeypatch, calls)
    config = synthetic.mri_config(nx=9, ny=7, psf_gaps=(18e-9, 19e-9, 20e-9, 21e-9, 22e-9),
                                  sections=({"y": 0.0, "gaps": [19e-9, 20e-9, 21e-9]},))
    msgs = synthetic.synthetic_run(config, lost=frozenset({(1, 2, 3, 4), (2, 0, 1, 1)}),
                                   skip=frozenset({(2, 1, 0, 2)}))
    store = synthetic.store_run(tmp_path, config, msgs)
    try:
        end = RunEnd(run_id="r", seq=len(msgs) + 1, exit_status="completed")
        store.add(end)
        results, attrs = MriAnalysis()(store)
        store.finalize(end, results, attrs)
    finally:
        store.close()
    (scan,) = calls
    # the localization's input: the whole PSF stack (the lost pixel interpolated), the DEER pixels of
    # both maps but the lost and the missing one, as a list
    assert scan.psf_tip.shape == (5, 7, 9, 3) and np.isfinite(scan.detuning).all()
    assert scan.deer_tip.shape == (63 + 27 - 2, 3)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        a = f.attrs
        assert json.loads(a["mri_localization"]) == {"model": "spins", "spins": [
            {"position_m": [1e-9, -1e-9, 8e-9], "sigma_m": [1e-10, 1e-10, 3e-10]}], "layer": None, "chi2_reduced": 1.01}
        warnings = json.loads(a["mri_warnings"])
        assert "stub warning" in warnings and any("PSF plane 2: 1 missing or lost pixels interpolated" in w for w in warnings)
        assert json.loads(a["mri_lost"]) == {"psf": 1, "deer/plane_0": 1, "deer/section_0": 0}
        assert json.loads(a["mri_missing"]) == {"psf": 0, "deer/plane_0": 0, "deer/section_0": 1}
        assert a["mri_model"] == "spins" and abs(a["mri_b0_t"] - 0.30) < 1e-5
        assert np.isnan(f["mri/psf/detuning"][2, 3, 4]) and f["mri/psf/lock_state"][2, 3, 4] == 2  # the map keeps NaN
        assert f["mri/psf/detuning"].shape == (5, 7, 9) and f["mri/psf/gaps"][()].tolist() == config["mri"]["psf_gaps"]
        plane, section = f["mri/deer/plane_0"], f["mri/deer/section_0"]
        assert section["deer"].shape == (3, 9) and section["tip"].shape == (3, 9, 3)
        # the model is put back on each map pixel by pixel: the stub's model is half the data
        for g in (plane, section):
            d, m = g["deer"][()], g["deer_model"][()]
            assert np.array_equal(np.isnan(d), np.isnan(m)) and np.allclose(m[np.isfinite(d)], 0.5 * d[np.isfinite(d)])
        assert f["mri/localization/spin_positions_m"][()].tolist() == [[1e-9, -1e-9, 8e-9]]
        assert f["mri/localization/spin_sigmas_m"].shape == (1, 3) and "layer_height_m" not in f["mri/localization"]
        # the truth relative to the NV (0, 0, -depth), and the error of the spin against it
        true = np.array(config["sim_truth"]["dark_spins_m"]) + [0, 0, 10e-9]
        assert np.allclose(f["mri/truth/spin_positions_m"][()], true)
        assert np.allclose(f["mri/truth/error_m"][()], [[1e-9, -1e-9, 8e-9]] - true)
        assert np.allclose(f["mri/truth/error_sigma"][()], ([[1e-9, -1e-9, 8e-9]] - true) / [1e-10, 1e-10, 3e-10])
        assert json.loads(a["mri_truth"])["n_found"] == 1
        figures = json.loads(a["figures"])
        assert a["figure"] == "r.png" and figures == ["r.png", "r-psf.png", "r-lock.png"]
    for name in figures:
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_a_complete_single_plane_goes_to_the_localization_as_a_map(tmp_path):
    config = synthetic.mri_config(nx=6, ny=5, psf_gaps=(18e-9, 19e-9, 20e-9, 21e-9, 22e-9))
    store = synthetic.store_run(tmp_path, config, synthetic.synthetic_run(config))
    try:
        maps = build_maps(read_lock(store.f), read_deer(store.f), config)
    finally:
        store.close()
    arrays, placement, notes = localization_input(maps)
    assert arrays["deer_tip"].shape == (5, 6, 3) and arrays["deer"].shape == (5, 6) and notes == []
    assert set(arrays) >= {"psf_tip", "detuning", "deer_sigma", "f_rf", "b0", "depth", "t_pi_rf", "t2star_dark", "tau"}
    back = model_maps(maps, placement, np.arange(30.0).reshape(5, 6))
    assert np.array_equal(back["plane_0"], np.arange(30.0).reshape(5, 6))


def test_a_psf_plane_mostly_missing_is_left_out_of_the_localization(tmp_path):
    config = synthetic.mri_config(nx=5, ny=5, psf_gaps=(18e-9, 19e-9, 20e-9, 21e-9, 22e-9, 23e-9))
    msgs = synthetic.synthetic_run(config, skip=frozenset((1, 1, iy, ix) for iy in range(3) for ix in range(5)))
    store = synthetic.store_run(tmp_path, config, msgs)
    try:
        maps = build_maps(read_lock(store.f), read_deer(store.f), config)
    finally:
        store.close()
    arrays, _, notes = localization_input(maps)
    assert arrays["psf_tip"].shape[0] == 4 and np.allclose(arrays["psf_tip"][:, 0, 0, 2], [20e-9, 21e-9, 22e-9, 23e-9])
    assert "PSF planes [0, 1] left out" in notes[0]


def test_a_localization_that_fails_leaves_the_maps_and_figures_and_says_why(tmp_path, monkeypatch):
    def localize(scan, model="auto"):
        raise ValueError("no spin found")
    monkeypatch.setitem(sys.modules, "nvscope.models.mri.localize", types.SimpleNamespace(localize=localize))
    config = synthetic.mri_config(nx=5, ny=5, psf_gaps=(18e-9, 19e-9, 20e-9, 21e-9))
    store = synthetic.store_run(tmp_path, config, synthetic.synthetic_run(config))
    try:
        results, attrs = MriAnalysis()(store)
    finally:
        store.close()
    assert attrs["analysis_error"] == "localization: ValueError: no spin found"
    assert results["mri/psf/detuning"].shape == (4, 5, 5) and "mri/deer/plane_0/deer" in results
    assert "mri_localization" not in attrs and (tmp_path / attrs["figure"]).exists()
