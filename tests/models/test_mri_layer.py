"""The layer model (models/mri/layer.py) on a noise-free regular lattice of dark spins at 0.5 spins/nm^2,
10 nm above the NV (on the diamond surface), simulated by firmware_sim: height and density from the
uniform-layer forward model (docs/physics.md section 2.6)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from nvscope.models.mri.layer import fit_layer
from nvscope.models.mri.scan_data import scan_from_arrays
from nvscope.models.mri.spins import SpinProblem

_spec = importlib.util.spec_from_file_location("mri_sim", Path(__file__).with_name("test_mri_sim.py"))
SIM = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SIM)
NM = SIM.NM


def _lattice(density_m2: float, h_m: float, extent_m: float, phase: float) -> np.ndarray:
    """A square lattice of spins (K, 3) m from the NV, shifted by `phase` cells along x and y."""
    a = np.sqrt(1.0 / density_m2)
    n = int(extent_m / 2 / a)
    g = (np.arange(-n, n + 1) + 0.5 + phase) * a
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel(), np.full(x.size, h_m)])


def test_noise_free_lattice_gives_height_and_density():
    # a regular lattice is a uniform layer only on average over its phase against the pixel grid (the
    # rings of discrete spins beat with it: +-0.04 nm, +-1.3 %), so two phases half a cell apart
    hw, fits = 15 * NM, []
    for phase in (0.0, 0.5):
        spins = _lattice(0.5e18, 10 * NM, 2 * hw + 16 * NM, phase)
        arrays = SIM.simulate_scan(spins, np.random.default_rng(0), rf_offset_hz=900e6, half_width=hw,
                                   step=0.5 * NM, psf_gaps=np.arange(6, 19, 1.5) * NM, shots=10**14,
                                   lock_sigma_hz=0.0)
        fits.append(fit_layer(SpinProblem(scan_from_arrays(arrays))))
    h = np.mean([f.height_m for f in fits])
    n = np.mean([f.density_per_m2 for f in fits])
    assert abs(h - 10 * NM) < 0.05 * NM, [f.height_m / NM for f in fits]
    assert abs(n / 0.5e18 - 1) < 0.05, [f.density_per_m2 / 1e18 for f in fits]
    for f in fits:
        assert f.model.shape == (61 * 61,) and f.image.shape == (61, 61)
        assert np.all(np.diff(f.heights_m) >= 0) and np.argmin(f.chi2) not in (0, f.chi2.size - 1)
