"""NV-MRI localization on small simulated scans (firmware_sim: Hamiltonian NV line, dipole tip, DEER
with Poisson counts): one spin within its sigmas, a pair 1 nm apart resolved, a single spin not split,
a layer's height and density (docs/physics.md section 2.6)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.models.mri.localize import localize
from nvscope.models.mri.psf import PsfSpline
from nvscope.models.mri.scan_data import scan_from_arrays
from nvscope.models.mri.spins import SpinProblem
from nvscope.rt.kernels.deer import FlipTable, _direct, line_width


def _sim_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mri_sim", Path(__file__).with_name("test_mri_sim.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_SIM = _sim_module()
NM, DarkSpins, simulate_scan, rig_scan = _SIM.NM, _SIM.DarkSpins, _SIM.simulate_scan, _SIM.rig_scan

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


# The rig's scan (RIG: 21 x 21 at 1 nm, PSF at 14, 17, 20, 23 nm with 0.45 MHz of lock noise a pixel, one
# DEER plane at 20 nm, tau 2 us): coarse pixels, few PSF planes, a noisy PSF.

def test_rig_scan_single_spin_under_auto_within_sigmas_that_carry_the_lock_noise():
    r = np.array([1.0, -0.5, 5.0]) * NM
    arrays = rig_scan([r], np.random.default_rng(11))
    loc = localize(scan_from_arrays(arrays), "auto")
    assert loc.model == "spins" and len(loc.spins) == 1, loc.to_json()
    s = loc.spins[0]
    assert np.all(np.abs(s.position_m - r) < 4 * s.sigma_m), (s.position_m / NM, s.sigma_m / NM)
    # the lock noise is in the sigmas: a PSF 10x less noisy gives clearly smaller lateral ones
    quiet = dict(arrays, detuning_sigma=arrays["detuning_sigma"] / 10)
    s_quiet = localize(scan_from_arrays(quiet), "spins").spins[0]
    assert np.all(s_quiet.sigma_m[:2] < 0.85 * s.sigma_m[:2]), (s_quiet.sigma_m / NM, s.sigma_m / NM)


def test_rig_scan_spin_the_echo_cannot_see_is_no_spin_not_a_refusal():
    # 4.5 nm from the NV, pi J tau = 2 pi - 0.3 at tau = 2 us: a 0.005 dip under 0.008 of shot noise (the
    # rig's e2e run that was localized at a side lobe and refused as needing the PSF outside its grid)
    arrays = rig_scan([np.array([1.0, -0.5, 4.5]) * NM], np.random.default_rng(7))
    assert arrays["deer"].max() < 5 * arrays["deer_sigma"].mean()
    loc = localize(scan_from_arrays(arrays), "spins")
    assert loc.spins == [] and any("no dark spin detected" in w for w in loc.warnings)


def test_spline_linear_map_reproduces_the_spline():
    arrays = rig_scan([], np.random.default_rng(0))
    scan = scan_from_arrays(arrays)
    v = np.random.default_rng(1).normal(size=scan.detuning.shape)
    spline = PsfSpline(scan, v)
    pts = scan.deer_tip.reshape(-1, 3) - np.array([1.3, -0.7, 4.6]) * NM  # inside and beyond the grid
    g = spline.linear_map(pts)
    np.testing.assert_allclose(g @ v.ravel(), spline(pts), atol=0.01 * np.abs(spline(pts)).max())


def test_lock_noise_propagation_matches_refits_with_the_stack_redrawn():
    # the sigma the lock noise adds (linear propagation through the spline) against the scatter of refits
    # with the PSF stack redrawn within its sigma (same DEER map; the slice on 1 nm pixels is ~0.03 nm
    # wide, so chi^2 is rugged on that scale: compare scatters, not single moves)
    r = np.array([2.0, -1.0, 4.0])
    arrays = rig_scan([r * NM], np.random.default_rng(12))
    scan = scan_from_arrays(arrays)
    pr = SpinProblem(scan)
    p, sol = pr.fit(np.array([[*r, 1.3]]))
    predicted = np.sqrt(np.diag(pr.psf_covariance(p, sol.jac, np.linalg.pinv(sol.jac.T @ sol.jac))))[:3]
    remainder = pr.slice.spline(scan.psf_tip)  # the stack minus the tip dipole's NV shift (what the spline holds)
    rng, moved = np.random.default_rng(13), []
    for _ in range(16):
        pr.slice.spline = PsfSpline(scan, remainder + rng.normal(0.0, 0.45e6, remainder.shape))
        moved.append(pr.fit(p.reshape(1, 4), stages=(1,))[0][:3])
    scatter = np.std(moved, axis=0)
    assert predicted[0] > 0.005 and predicted[1] > 0.005  # nm: the lock noise matters at the rig's settings
    assert np.all((scatter > 0.6 * predicted) & (scatter < 1.6 * predicted)), (scatter, predicted)


def test_auto_calls_a_layer_a_layer():
    # (a single spin and a pair under auto: the rig-scan and pair tests above)
    rng = np.random.default_rng(21)
    hw = 8 * NM
    layer = DarkSpins.surface_layer(0.5e18, 10 * NM, 2 * hw + 16 * NM, rng).positions
    scan = scan_from_arrays(simulate_scan(layer, rng, rf_offset_hz=900e6, half_width=hw, step=1 * NM,
                                          psf_gaps=np.arange(6, 19, 1.5) * NM))
    loc = localize(scan, "auto")
    assert loc.model == "layer" and loc.spins == [] and loc.layer is not None
