"""The spin constants of NV-MRI, defined once for the rig, the simulator and the models (docs/physics.md
section 2), and the two conversions the rig and the analysis share.

SI units: Hz, T, Hz/T, Hz m^3.
"""

from __future__ import annotations

D_HZ: float = 2.870e9
"""The NV ground state's zero-field splitting D (Hz)."""
GAMMA_NV_HZ_PER_T: float = 28.03e9
"""The NV electron's gyromagnetic ratio gamma_NV (Hz/T)."""
G_DARK: float = 2.0023
GAMMA_DARK_HZ_PER_T: float = 28.02e9
"""A dark electron spin's gyromagnetic ratio (Hz/T). The house value of docs/physics.md; g = 2.0023 with
CODATA mu_B / h gives 28.0245 GHz/T, 1.35 MHz more at 0.30 T (about 0.04 nm of slice at 12 G/nm)."""
NU_DD_HZ_M3: float = 52.0e6 * 1e-27
"""The dipolar constant mu0 (g mu_B)^2 / (4 pi h) = 52.0 MHz nm^3, in Hz m^3."""


def bias_from_nv_frequency(f_nv_hz: float) -> float:
    """The bias field (T) along the NV axis that puts the ms = 0 <-> -1 line at f_nv_hz (Hz), above the
    level anticrossing: B0 = (f + D) / gamma_NV (docs/physics.md section 2.3)."""
    return (f_nv_hz + D_HZ) / GAMMA_NV_HZ_PER_T


def dark_rf_frequency(f_nv_retracted_hz: float, rf_offset_hz: float) -> float:
    """The RF frequency (Hz) that drives dark spins `rf_offset_hz` (Hz) above their bare resonance
    gamma_dark B0, B0 read from the NV's line with the tip retracted (so B0 drift cancels)."""
    return GAMMA_DARK_HZ_PER_T * bias_from_nv_frequency(f_nv_retracted_hz) + rf_offset_hz


__all__ = ["D_HZ", "GAMMA_NV_HZ_PER_T", "G_DARK", "GAMMA_DARK_HZ_PER_T", "NU_DD_HZ_M3", "bias_from_nv_frequency",
           "dark_rf_frequency"]
