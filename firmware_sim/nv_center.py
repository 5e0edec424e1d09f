"""The NV centre under the bias field and the tip's field: its ms = 0 <-> ms = -1 transition from the
full spin-1 Hamiltonian, and its CW ODMR dip (docs/physics.md sections 2.3 and 2.4). The photon
counts behind the `rt.hal` devices come from the simulated pulsed instrument (`pulsed`,
`mri_sample`).

The transition is computed by diagonalizing H / h = D Sz^2 + gamma_NV B . S (3 x 3, z along the NV
axis) for every field, never from the aligned-field formula |gamma_NV B_par - D|: the simulator is
an independent check of whatever the analysis assumes. Eigenstates are labelled by their overlap
with |m_s> (the assignment of the three labels to the three eigenvectors with the largest total
overlap), never by sorting energies: above the level anticrossing near 0.1 T ms = -1 lies below
ms = 0.

SI units: fields in T, frequencies in Hz, positions in m, rates in counts/s.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from nvscope.rt.kernels.spin_constants import D_HZ, GAMMA_NV_HZ_PER_T

from .magnetic_tip import TipParams, tip_field

_S = 1.0 / math.sqrt(2.0)
# spin-1 operators in the basis (|+1>, |0>, |-1>)
SX = np.array([[0, _S, 0], [_S, 0, _S], [0, _S, 0]], dtype=np.complex128)
SY = np.array([[0, -1j * _S, 0], [1j * _S, 0, -1j * _S], [0, 1j * _S, 0]], dtype=np.complex128)
SZ = np.diag([1.0, 0.0, -1.0]).astype(np.complex128)
MS_LABELS = (+1, 0, -1)
"""The m_s of each basis state, in the order of the Hamiltonian's rows and of `nv_levels`' columns."""
_PERMUTATIONS = np.array(list(itertools.permutations(range(3))))  # (6, 3): label m -> eigenvector perm[m]


def _unit(v: tuple[float, float, float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or abs(np.linalg.norm(a) - 1.0) > 1e-9:
        raise ValueError(f"{name} must be a unit 3-vector, got {v!r}")
    return a


def _field(b_t: np.ndarray, name: str) -> np.ndarray:
    b = np.asarray(b_t, dtype=np.float64)
    if b.shape[-1:] != (3,):
        raise ValueError(f"{name} must have shape (..., 3) in T, got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{name} must be finite (T)")
    return b


@dataclass(frozen=True)
class NvParams:
    """The NV: depth below the surface (m; it sits at (0, 0, -depth)), the bias field (T, along
    `axis`), and its symmetry axis in the lab frame (a unit vector, +z by default)."""

    depth_m: float = 10e-9
    b0_t: float = 0.30
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.depth_m) and self.depth_m > 0):
            raise ValueError(f"NV depth_m must be > 0 m, got {self.depth_m!r}")
        if not math.isfinite(self.b0_t):
            raise ValueError(f"NV b0_t must be finite (T), got {self.b0_t!r}")
        _unit(self.axis, "NV axis")

    @property
    def position_m(self) -> np.ndarray:
        """The NV's position (0, 0, -depth) in m."""
        return np.array([0.0, 0.0, -self.depth_m])

    @property
    def bias_t(self) -> np.ndarray:
        """The bias field B0 (3-vector, lab frame) in T."""
        return self.b0_t * np.asarray(self.axis, dtype=np.float64)


def nv_frame(axis: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """The rotation (3, 3) whose rows are the NV frame's x, y, z axes in the lab frame (z = `axis`)."""
    z = _unit(axis, "NV axis")
    a = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = a - (a @ z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def to_nv_frame(b_lab_t: np.ndarray, axis: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """A lab-frame field (..., 3) in T expressed in the NV frame (..., 3) in T (z along `axis`)."""
    return _field(b_lab_t, "b_lab_t") @ nv_frame(axis).T


def nv_hamiltonian(b_nv_frame_t: np.ndarray) -> np.ndarray:
    """H / h (..., 3, 3) in Hz, D Sz^2 + gamma_NV B . S, for fields (..., 3) in T in the NV frame,
    in the basis (|+1>, |0>, |-1>)."""
    b = _field(b_nv_frame_t, "b_nv_frame_t")[..., None, None]
    return (D_HZ * (SZ @ SZ)
            + GAMMA_NV_HZ_PER_T * (b[..., 0, :, :] * SX + b[..., 1, :, :] * SY + b[..., 2, :, :] * SZ))


def nv_levels(b_nv_frame_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies / h (..., 3) in Hz of the eigenstates labelled m_s = +1, 0, -1 (`MS_LABELS` order) and
    each one's overlap |<m_s|psi>|^2 (..., 3), for fields (..., 3) in T in the NV frame.

    The labels go to the eigenvectors by the permutation with the largest total overlap, so each
    label names one eigenstate however strongly the field mixes them."""
    energies, vectors = np.linalg.eigh(nv_hamiltonian(b_nv_frame_t))
    overlap = np.abs(vectors) ** 2  # [..., m, k]: |<m|psi_k>|^2
    total = overlap[..., [0, 1, 2], _PERMUTATIONS].sum(axis=-1)  # (..., 6)
    perm = _PERMUTATIONS[np.argmax(total, axis=-1)]  # (..., 3)
    return (np.take_along_axis(energies, perm, axis=-1),
            np.take_along_axis(overlap, perm[..., :, None], axis=-1)[..., 0])


def transition_frequency_minus(b_nv_frame_t: np.ndarray) -> np.ndarray:
    """The ms = 0 <-> ms = -1 transition frequency |E(-1) - E(0)| / h (...) in Hz for fields (..., 3)
    in T in the NV frame, by diagonalization (gamma_NV B_par - D at high aligned field)."""
    e, _ = nv_levels(b_nv_frame_t)
    return np.abs(e[..., 2] - e[..., 1])


def nv_resonance(apex_m: np.ndarray | None, nv: NvParams = NvParams(), tip: TipParams = TipParams()) -> np.ndarray:
    """The NV's ms = 0 <-> -1 frequency (...) in Hz in the bias field plus the field of the tip with
    its apex at `apex_m` (..., 3) in m (None: tip retracted)."""
    b = nv.bias_t if apex_m is None else nv.bias_t + tip_field(nv.position_m, apex_m, tip)
    return transition_frequency_minus(to_nv_frame(b, nv.axis))


# --- CW ODMR ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OdmrParams:
    """CW ODMR of the ms = 0 <-> -1 line: a Lorentzian dip of full width `fwhm_hz` (Hz) and depth
    `contrast` on `rate_cps` counts/s off resonance (at the configured microwave and laser power)."""

    fwhm_hz: float = 8e6
    contrast: float = 0.15
    rate_cps: float = 150e3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fwhm_hz) and self.fwhm_hz > 0):
            raise ValueError(f"ODMR fwhm_hz must be > 0 Hz, got {self.fwhm_hz!r}")
        if not (math.isfinite(self.contrast) and 0 <= self.contrast < 1):
            raise ValueError(f"ODMR contrast must be in [0, 1), got {self.contrast!r}")
        if not (math.isfinite(self.rate_cps) and self.rate_cps >= 0):
            raise ValueError(f"ODMR rate_cps must be >= 0 counts/s, got {self.rate_cps!r}")


def odmr_rate(f_mw_hz: np.ndarray | float, f_res_hz: np.ndarray | float,
              params: OdmrParams = OdmrParams()) -> np.ndarray:
    """Count rate in counts/s at microwave frequency `f_mw_hz` (Hz) of a line at `f_res_hz` (Hz):
    I0 [1 - C HWHM^2 / ((f - f0)^2 + HWHM^2)] (docs/physics.md section 2.4)."""
    hw = 0.5 * params.fwhm_hz
    df = np.asarray(f_mw_hz, dtype=np.float64) - np.asarray(f_res_hz, dtype=np.float64)
    return params.rate_cps * (1.0 - params.contrast * hw * hw / (df * df + hw * hw))


__all__ = ["D_HZ", "GAMMA_NV_HZ_PER_T", "SX", "SY", "SZ", "MS_LABELS", "NvParams", "nv_frame", "to_nv_frame",
           "nv_hamiltonian", "nv_levels", "transition_frequency_minus", "nv_resonance", "OdmrParams", "odmr_rate"]
