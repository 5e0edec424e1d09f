"""Simulated NV-MRI scans for the models.mri tests and benchmarks/bench_mri_accuracy.py, built with
firmware_sim (the NV Hamiltonian by diagonalization, the dipole tip, DEER with Poisson counts), which the
analysis never imports; and the checks that the simulated inputs are what the analysis expects."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.dark_spins import DarkSpins, deer_counts, deer_signal
from nvscope.firmware_sim.magnetic_tip import TipParams, tip_field
from nvscope.firmware_sim.nv_center import NvParams, nv_resonance
from nvscope.rt.kernels.spin_constants import dark_rf_frequency

NM = 1e-9


def lateral_grid(half_width_m: float, step_m: float) -> np.ndarray:
    """The lateral axis -half_width..+half_width (m) in steps of step_m."""
    n = int(round(half_width_m / step_m))
    return np.arange(-n, n + 1) * step_m


def psf_stack(gaps_m, axis_m, nv: NvParams, tip: TipParams, lock_sigma_hz: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """psf_tip (Nz, Ny, Nx, 3) and the locked detuning (Nz, Ny, Nx) Hz with Gaussian lock noise."""
    z, y, x = np.meshgrid(np.asarray(gaps_m, float), axis_m, axis_m, indexing="ij")
    tips = np.stack([x, y, z], axis=-1)
    det = nv_resonance(tips, nv, tip) - nv_resonance(None, nv, tip)
    return tips, det + rng.normal(0.0, lock_sigma_hz, det.shape)


def deer_map(positions_lab, tips, nv: NvParams, tip: TipParams, f_rf, tau, t_pi, t2star):
    """The noiseless DEER signal S (tips.shape[:-1]) of dark spins at lab positions (K, 3) m."""
    flat = tips.reshape(-1, 3)

    def field_at(points):
        return nv.bias_t + tip_field(points[None, :, :], flat[:, None, :], tip)

    s = deer_signal(DarkSpins(np.asarray(positions_lab)), field_at, nv.position_m, np.asarray(nv.axis), f_rf, tau,
                    t_pi, t2star)
    return s.reshape(tips.shape[:-1])


def simulate_scan(spins_rel_nv_m, rng, *, depth=10 * NM, b0=0.30, half_width=6 * NM, step=0.5 * NM,
                  psf_gaps=None, deer_gaps=(20 * NM,), rf_offset_hz=400e6, tau=1e-6, t_pi=150e-9,
                  t2star=150e-9, shots=3_000_000, photons=0.03, contrast=0.25, lock_sigma_hz=0.2e6,
                  give_sigma=True, psf_step=None):
    """IN.npz arrays (scan_from_arrays' dict) of a simulated scan of dark spins at spins_rel_nv_m (K, 3) m
    from the NV; the DEER planes at deer_gaps (one plane: deer (Ny, Nx))."""
    nv, tip = NvParams(depth_m=depth, b0_t=b0), TipParams()
    axis = lateral_grid(half_width, step)
    paxis = axis if psf_step is None else lateral_grid(half_width, psf_step)
    if psf_gaps is None:
        psf_gaps = np.arange(8, 25, 2.0) * NM
    psf_tip, det = psf_stack(psf_gaps, paxis, nv, tip, lock_sigma_hz, rng)
    f_rf = dark_rf_frequency(float(nv_resonance(None, nv, tip)), rf_offset_hz)
    z, y, x = np.meshgrid(np.asarray(deer_gaps, float), axis, axis, indexing="ij")
    deer_tip = np.stack([x, y, z], axis=-1)
    if len(deer_gaps) == 1:
        deer_tip = deer_tip[0]
    spins = np.asarray(spins_rel_nv_m, float).reshape(-1, 3) + nv.position_m
    s = deer_map(spins, deer_tip, nv, tip, f_rf, tau, t_pi, t2star) if len(spins) else np.ones(deer_tip.shape[:-1])
    n_rf, n_ref = deer_counts(s, shots, rng, photons_per_shot=photons, contrast=contrast)
    ratio = n_rf / n_ref
    out = dict(psf_tip=psf_tip, detuning=det, deer_tip=deer_tip, deer=1.0 - ratio, f_rf=f_rf, b0=b0, depth=depth,
               t_pi_rf=t_pi, t2star_dark=t2star, tau=tau, readout_contrast=contrast)
    if give_sigma:
        out["deer_sigma"] = ratio * np.sqrt(1.0 / n_rf + 1.0 / n_ref)
        if lock_sigma_hz > 0:
            out["detuning_sigma"] = np.full(det.shape, float(lock_sigma_hz))
    return out


RIG = dict(half_width=10 * NM, step=1 * NM, psf_gaps=np.array([14, 17, 20, 23]) * NM, deer_gaps=(20 * NM,),
           rf_offset_hz=630e6, tau=2e-6, shots=1_000_000, lock_sigma_hz=0.45e6)
"""The rig's [mri] defaults (rt/config.py MriConfig): a 21 x 21 grid at 1 nm, the PSF at four gaps with the
real lock's noise (~0.45 MHz a pixel), one DEER plane at 20 nm, tau 2 us, 1e6 shots a pixel."""


def rig_scan(spins_rel_nv_m, rng, **over):
    """simulate_scan with the rig's defaults (RIG), any of them overridden."""
    return simulate_scan(spins_rel_nv_m, rng, **{**RIG, **over})


def test_simulated_psf_is_the_nv_line_shift_and_the_slice_is_where_the_analysis_puts_it():
    from nvscope.models.mri.psf import SliceModel
    from nvscope.models.mri.scan_data import scan_from_arrays

    rng = np.random.default_rng(0)
    r = np.array([0.5, -0.3, 6.0]) * NM
    arrays = simulate_scan([r], rng, lock_sigma_hz=0.0, shots=10**12, rf_offset_hz=725e6)  # the ring ~4 nm out
    scan = scan_from_arrays(arrays)
    # on axis the tip pulls the NV line up (gamma B - D rises with B_par): the PSF is positive, largest at the centre
    mid = scan.detuning.shape[1] // 2
    assert scan.detuning[0, mid, mid] == scan.detuning[0].max() > 500e6
    # the slice model, with the second-order term, gives f_rf - gamma_d |B0 + B_tip| at the spin to < 0.3 MHz
    from nvscope.firmware_sim.dark_spins import dark_resonance
    nv, tip = NvParams(), TipParams()
    tips = scan.deer_tip.reshape(-1, 3)
    exact = scan.f_rf - dark_resonance(nv.bias_t + tip_field(r + nv.position_m, tips, tip))
    model = SliceModel(scan).detuning(tips, r)
    first = SliceModel(scan, second_order=False).detuning(tips, r)
    assert np.max(np.abs(model - exact)) < 0.05e6
    assert np.max(np.abs(first - exact)) > 1e6  # what the first-order shift misses here
    # the DEER dip is largest where the slice passes through the spin
    assert scan.deer.max() > 0.05
    near = np.abs(exact) < 2e6
    assert scan.deer.reshape(-1)[near].mean() > 5 * scan.deer_sigma.mean()
    pytest.importorskip("scipy")
