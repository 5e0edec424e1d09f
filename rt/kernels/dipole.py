"""The field of a point magnetic dipole, defined once for the simulated tip (`firmware_sim.magnetic_tip`)
and the tip dipole the NV-MRI analysis fits to the PSF stack (`models.mri.psf`); docs/physics.md section 2.2.

SI units: offsets in m, mu0 m / 4 pi in T m^3, fields in T.
"""

from __future__ import annotations

import numpy as np


def dipole_field(rel_m: np.ndarray, moment_t_m3: np.ndarray) -> np.ndarray:
    """B (..., 3) in T at offsets (..., 3) m from a point dipole of mu0 m / 4 pi = `moment_t_m3` (3,) T m^3:
    [3 (m . u) u - m] / |r|^3 (Jackson Eq. 5.56)."""
    rel = np.asarray(rel_m, dtype=np.float64)
    m = np.asarray(moment_t_m3, dtype=np.float64)
    d = np.linalg.norm(rel, axis=-1, keepdims=True)
    u = rel / d
    return (3.0 * np.sum(m * u, axis=-1, keepdims=True) * u - m) / d**3


__all__ = ["dipole_field"]
