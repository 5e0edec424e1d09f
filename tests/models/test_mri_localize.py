"""NV-MRI localization on small simulated scans (firmware_sim: Hamiltonian NV line, dipole tip, DEER
with Poisson counts): one spin within its sigmas, a pair 1 nm apart resolved, a single spin not split,
a layer's height and density (docs/physics.md section 2.6)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.models.mri.localize import localize
from nvscope.models.mri.scan_data import scan_from_arrays
from nvscope.rt.kernels.deer import FlipTable, _direct, line_width


def _sim_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mri_sim", Path(__file__).with_name("test_mri_sim.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_SIM = _sim_module()
NM, DarkSpins, simulate_scan = _SIM.NM, _SIM.DarkSpins, _SIM.simulate_scan

RING = dict(rf_offset_hz=725e6, half_width=6 * NM)  # the slice ring ~4 nm out at a 14 nm gap


def test_flip_table_matches_quadrature():
    t = FlipTable(150e-9, 150e-9, "lorentzian", 3e9)
    d = np.concatenate([np.linspace(-60e6, 60e6, 501), np.random.default_rng(0).uniform(-3e9, 3e9, 500)])
    ref = _direct(np.abs(d), 150e-9, line_width(150e-9, "lorentzian"), "lorentzian")
    np.testing.assert_allclose(t(d), ref, rtol=0, atol=2e-7)


@pytest.fixture(scope="module")
def single():
    r = np.array([0.8, -0.5, 6.0]) * NM
    scan = scan_from_arrays(simulate_scan([r], np.random.default_rng(1), **RING))
    return r, localize(scan, "spins")


def test_single_spin_recovered_within_its_sigmas_and_not_split(single):
    r, loc = single
    assert loc.model == "spins" and len(loc.spins) == 1  # the control: one spin stays one spin
    s = loc.spins[0]
    assert np.all(np.abs(s.position_m - r) < 4 * s.sigma_m + 1e-12), (s.position_m / NM, s.sigma_m / NM)
    assert np.all(s.sigma_m < 0.05 * NM) and np.all(s.sigma_m > 0)
    assert 0.7 < loc.chi2_reduced < 1.5
    out = loc.to_json()
    assert set(out) == {"model", "spins", "layer", "chi2_reduced"} and out["layer"] is None
    assert out["spins"][0]["position_m"] == pytest.approx(list(s.position_m))


def test_pair_one_nm_apart_resolved_as_two():
    r1, r2 = np.array([-0.5, 0.3, 6.0]) * NM, np.array([0.5, 0.3, 6.0]) * NM
    scan = scan_from_arrays(simulate_scan([r1, r2], np.random.default_rng(2), **RING))
    loc = localize(scan, "auto")
    assert loc.model == "spins" and len(loc.spins) == 2
    pos = np.array(sorted((s.position_m for s in loc.spins), key=lambda p: p[0]))
    assert np.linalg.norm(pos[1] - pos[0]) == pytest.approx(1.0 * NM, abs=0.15 * NM)
    assert np.all(np.abs(pos - np.array([r1, r2])) < 0.15 * NM)


def test_layer_height_and_density():
    rng = np.random.default_rng(3)
    hw = 15 * NM
    layer = DarkSpins.surface_layer(0.5e18, 10 * NM, 2 * hw + 16 * NM, rng).positions
    scan = scan_from_arrays(simulate_scan(layer, rng, rf_offset_hz=900e6, half_width=hw,
                                          psf_gaps=np.arange(6, 19, 1.5) * NM))
    loc = localize(scan, "layer")
    assert loc.model == "layer" and loc.spins == [] and loc.layer is not None
    assert loc.layer.height_m == pytest.approx(10 * NM, abs=1 * NM)
    assert loc.layer.density_per_m2 == pytest.approx(0.5e18, rel=0.3)
    assert 0 < loc.layer.height_sigma_m < 1 * NM and 0 < loc.layer.density_sigma_per_m2 < 0.5e18
    assert loc.to_json()["layer"]["density_per_m2"] == loc.layer.density_per_m2
