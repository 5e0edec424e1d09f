"""The NV centre under the bias field and the tip's field: its ms = 0 <-> ms = -1 transition from the
full spin-1 Hamiltonian, and its CW ODMR photon counts behind the `rt.hal` microwave source and
photon counter (docs/physics.md sections 2.3 and 2.4).

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

from nvscope.rt.hal import DeviceError, GateCounts, PhotonCounterConstraints

from .magnetic_tip import TipParams, tip_field
from .pulsed import SimMicrowaveSource

from nvscope.rt.kernels.spin_constants import D_HZ, GAMMA_NV_HZ_PER_T

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


class SimOdmrMicrowave(SimMicrowaveSource):
    """The CW microwave source driving the simulated NV; `SimOdmrCounter` reads its frequency and
    output state (power is not simulated: `OdmrParams` give the line at the configured power)."""


class SimOdmrCounter:
    """Counts the NV's CW ODMR photons (Poisson, from a seeded generator) at `microwave`'s current
    frequency, the line following the tip's field at the NV.

    The tip's apex is `scanner.position` when a scanner (anything with a `position` (x, y, z) in
    m, e.g. `SimScanner`) is given, else the settable `tip_apex_m` (None: tip retracted). `count`
    counts ungated; `dither` is what a dithered lock's gates deliver (signal gate at f + delta,
    reference gate at f - delta) into the counters that `gated_counts` reads since `arm`.
    """

    def __init__(self, microwave: SimMicrowaveSource, nv: NvParams = NvParams(), tip: TipParams = TipParams(),
                 odmr: OdmrParams = OdmrParams(), scanner: object | None = None,
                 tip_apex_m: tuple[float, float, float] | None = None, seed: int = 0,
                 constraints: PhotonCounterConstraints | None = None):
        self.constraints = constraints or PhotonCounterConstraints(max_count_s=10.0)
        self.microwave = microwave
        self.nv = nv
        self.tip = tip
        self.odmr = odmr
        self.scanner = scanner
        self.tip_apex_m = tip_apex_m
        self.rng = np.random.default_rng(seed)
        self._gates = np.zeros(2, dtype=np.int64)
        self.armed = False
        self._cache: tuple[object, float] | None = None

    @property
    def apex_m(self) -> tuple[float, float, float] | None:
        """The tip's apex position (m) now, or None when retracted."""
        if self.scanner is not None:
            return tuple(float(v) for v in self.scanner.position)
        return None if self.tip_apex_m is None else tuple(float(v) for v in self.tip_apex_m)

    def resonance_hz(self) -> float:
        """The NV's ms = 0 <-> -1 frequency in Hz with the tip where it is now."""
        apex = self.apex_m
        if self._cache is None or self._cache[0] != apex:
            self._cache = (apex, float(nv_resonance(None if apex is None else np.array(apex), self.nv, self.tip)))
        return self._cache[1]

    def rate_cps(self, frequency_hz: float) -> float:
        """Count rate (counts/s) with the microwave at `frequency_hz` (Hz), if its output is on."""
        if not self.microwave.output_on:
            return self.odmr.rate_cps
        return float(odmr_rate(frequency_hz, self.resonance_hz(), self.odmr))

    def _duration(self, duration_s: float, what: str) -> float:
        if not (np.isfinite(duration_s) and 0 < duration_s <= self.constraints.max_count_s):
            raise DeviceError(f"photon counter: {what} of {duration_s!r} s is outside "
                              f"(0, {self.constraints.max_count_s}] s")
        return float(duration_s)

    def count(self, duration_s: float) -> int:
        """Photons counted during `duration_s` s (ungated) at the microwave's current frequency."""
        t = self._duration(duration_s, "a count")
        return int(self.rng.poisson(self.rate_cps(self.microwave.frequency_hz) * t))

    def arm(self) -> None:
        """Zero both gate counters and count the gates from now on."""
        self._gates[:] = 0
        self.armed = True

    def gated_counts(self) -> GateCounts:
        """The photons counted in the signal (f + delta) and reference (f - delta) gate since `arm()`."""
        if not self.armed:
            raise DeviceError("photon counter: gated_counts() before arm()")
        return GateCounts(int(self._gates[0]), int(self._gates[1]))

    def dither(self, delta_hz: float, gate_s: float, repetitions: int = 1) -> None:
        """Count `repetitions` gates of `gate_s` s each with the microwave at f + `delta_hz` (signal
        gate) and at f - `delta_hz` (reference gate), f the source's frequency (Hz); needs `arm()`."""
        if not self.armed:
            raise DeviceError("photon counter: dither() before arm()")
        if not (np.isfinite(delta_hz) and delta_hz >= 0):
            raise DeviceError(f"photon counter: dither delta {delta_hz!r} Hz must be >= 0")
        if isinstance(repetitions, bool) or not isinstance(repetitions, (int, np.integer)) or repetitions < 1:
            raise DeviceError(f"photon counter: {repetitions!r} dither repetitions must be an integer >= 1")
        t = self._duration(gate_s * repetitions, "a dither")
        f = self.microwave.frequency_hz
        lam = np.array([self.rate_cps(f + delta_hz), self.rate_cps(f - delta_hz)]) * t
        self._gates += self.rng.poisson(lam)


__all__ = ["D_HZ", "GAMMA_NV_HZ_PER_T", "SX", "SY", "SZ", "MS_LABELS", "NvParams", "nv_frame", "to_nv_frame",
           "nv_hamiltonian", "nv_levels", "transition_frequency_minus", "nv_resonance", "OdmrParams", "odmr_rate",
           "SimOdmrMicrowave", "SimOdmrCounter"]
