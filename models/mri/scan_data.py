"""The NV-MRI scan as the analysis reads it (the `nvscope mri localize` IN.npz contract, docs/cli.md):
the locked-detuning stack on its regular tip grid, the DEER map and the scalars, validated once.

Geometry (docs/physics.md section 2.1): positions in m in a frame centred on the NV's lateral position,
z = the tip apex's height above the diamond surface; the NV sits at (0, 0, -depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nvscope.rt.kernels.spin_constants import D_HZ, GAMMA_NV_HZ_PER_T

REQUIRED_ARRAYS = ("psf_tip", "detuning", "deer_tip", "deer")
OPTIONAL_ARRAYS = ("deer_sigma", "detuning_sigma")
"""Optional arrays: deer_sigma (...) the DEER dip's standard error (else estimated from the map), and
detuning_sigma (Nz, Ny, Nx) Hz the lock's standard error of each detuning pixel (its f_sigma; else the rms
residual of the tip-dipole fit to the stack), propagated into the positions' sigmas."""
REQUIRED_SCALARS = ("f_rf", "b0", "depth", "t_pi_rf", "t2star_dark", "tau")
OPTIONAL_SCALARS = {"readout_contrast": 0.25, "echo_coherence": 1.0}
"""Optional scalars and their defaults (docs/physics.md section 2.5): the pulsed readout's contrast and the
NV echo's own coherence C, which turn the dip 1 - N_rf/N_ref into the DEER signal S."""
ANTICROSSING_T = D_HZ / GAMMA_NV_HZ_PER_T
"""The ground-state level anticrossing, D / gamma_NV = 0.1024 T."""
ANTICROSSING_WARN_T = 0.03
"""A bias within this distance (T) of the anticrossing is warned about."""
MIN_POINTS = 4  # a cubic spline along each grid axis


class MriInputError(ValueError):
    """An NV-MRI input that would give a wrong result; the message is one line naming the array."""


@dataclass(frozen=True)
class MriScan:
    """One NV-MRI scan, validated: psf_tip (Nz, Ny, Nx, 3) m, detuning (Nz, Ny, Nx) Hz, deer_tip (..., 3) m,
    deer (...) the dip 1 - N_rf/N_ref, deer_sigma (...) or None, the scalars in SI units, and
    detuning_sigma (Nz, Ny, Nx) Hz (the lock's standard error of each detuning pixel) or None."""

    psf_tip: np.ndarray
    detuning: np.ndarray
    deer_tip: np.ndarray
    deer: np.ndarray
    deer_sigma: np.ndarray | None
    f_rf: float
    b0: float
    depth: float
    t_pi_rf: float
    t2star_dark: float
    tau: float
    readout_contrast: float = 0.25
    echo_coherence: float = 1.0
    detuning_sigma: np.ndarray | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def grid_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The PSF grid's x (Nx), y (Ny) and z (Nz) axes in m."""
        return self.psf_tip[0, 0, :, 0], self.psf_tip[0, :, 0, 1], self.psf_tip[:, 0, 0, 2]

    @property
    def dip_per_signal(self) -> float:
        """a in dip = a (1 - S): C c / (2 - C (1 - c)), C the readout contrast and c the echo coherence."""
        c, coh = self.readout_contrast, self.echo_coherence
        return c * coh / (2.0 - c * (1.0 - coh))


def _array(arrays: dict, key: str) -> np.ndarray:
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iuf":
        raise MriInputError(f"`{key}` must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise MriInputError(f"`{key}` has {bad} NaN or infinite value(s) of {a.size}")
    return a


def _scalar(arrays: dict, key: str) -> float:
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iuf" or a.size != 1:
        raise MriInputError(f"`{key}` must be one real number, got dtype {a.dtype} and shape {a.shape}")
    v = float(a.reshape(()))
    if math.isnan(v) or (math.isinf(v) and key != "t2star_dark"):
        raise MriInputError(f"`{key}` must be finite, got {v}")
    return v


def _regular_axis(values: np.ndarray, key: str, name: str) -> None:
    d = np.diff(values)
    if values.size < MIN_POINTS:
        raise MriInputError(f"`{key}` needs at least {MIN_POINTS} points along {name} (a cubic spline), "
                            f"got {values.size}")
    if not np.all(d > 0) or np.max(np.abs(d - d.mean())) > 1e-6 * abs(d.mean()):
        raise MriInputError(f"`{key}` is not a regular grid: {name} must increase in even steps, got steps "
                            f"from {d.min():.4g} to {d.max():.4g} m")


def _check_grid(tip: np.ndarray) -> None:
    x, y, z = tip[0, 0, :, 0], tip[0, :, 0, 1], tip[:, 0, 0, 2]
    for axis, name in ((x, "x (along Nx)"), (y, "y (along Ny)"), (z, "z (along Nz)")):
        _regular_axis(axis, "psf_tip", name)
    step = min(np.diff(x).mean(), np.diff(y).mean(), np.diff(z).mean())
    ref = np.stack(np.broadcast_arrays(x[None, None, :], y[None, :, None], z[:, None, None]), axis=-1)
    bad = np.abs(tip - ref) > 1e-6 * step
    if bad.any():
        comp = "xyz"[int(np.argwhere(bad)[0, 3])]
        raise MriInputError(f"`psf_tip` is not a regular grid: {comp} must vary only along its own axis "
                            f"(x along Nx, y along Ny, z along Nz)")


def _optional_sigma(arrays: dict, key: str, of: str, shape: tuple[int, ...], unit: str) -> np.ndarray | None:
    """The optional one-sigma array `key` of the array `of` (its `shape`), > 0 everywhere; None when absent."""
    if key not in arrays:
        return None
    sigma = _array(arrays, key)
    if sigma.shape != shape:
        raise MriInputError(f"`{key}` has shape {sigma.shape}, `{of}` has {shape}")
    if not np.all(sigma > 0):
        raise MriInputError(f"`{key}` must be > 0{unit} everywhere")
    return sigma


def scan_from_arrays(arrays: dict) -> MriScan:
    """An `MriScan` from the IN.npz arrays and scalars (SI units); MriInputError (one line) if anything is
    missing, misshapen, not finite, not a regular grid, or out of range."""
    for key in REQUIRED_ARRAYS:
        if key not in arrays:
            raise MriInputError(f"missing required array `{key}`")
    for key in REQUIRED_SCALARS:
        if key not in arrays:
            raise MriInputError(f"missing required scalar `{key}`")
    psf_tip, detuning = _array(arrays, "psf_tip"), _array(arrays, "detuning")
    deer_tip, deer = _array(arrays, "deer_tip"), _array(arrays, "deer")
    if psf_tip.ndim != 4 or psf_tip.shape[-1] != 3:
        raise MriInputError(f"`psf_tip` must have shape (Nz, Ny, Nx, 3), got {psf_tip.shape}")
    if detuning.shape != psf_tip.shape[:3]:
        raise MriInputError(f"`detuning` has shape {detuning.shape}, `psf_tip` needs {psf_tip.shape[:3]}")
    if deer_tip.ndim < 2 or deer_tip.shape[-1] != 3:
        raise MriInputError(f"`deer_tip` must have shape (..., 3), got {deer_tip.shape}")
    if deer.shape != deer_tip.shape[:-1]:
        raise MriInputError(f"`deer` has shape {deer.shape}, `deer_tip` needs {deer_tip.shape[:-1]}")
    if deer.size < 16:
        raise MriInputError(f"`deer` has {deer.size} pixels, too few to localize anything")
    sigma = _optional_sigma(arrays, "deer_sigma", "deer", deer.shape, "")
    det_sigma = _optional_sigma(arrays, "detuning_sigma", "detuning", detuning.shape, " Hz")
    _check_grid(psf_tip)
    if psf_tip[..., 2].min() <= 0:
        raise MriInputError(f"`psf_tip` reaches z = {psf_tip[..., 2].min():.3g} m: a tip at or below the surface")
    if deer_tip[..., 2].min() <= 0:
        raise MriInputError(f"`deer_tip` reaches z = {deer_tip[..., 2].min():.3g} m: a tip at or below the surface")
    x, y, _ = psf_tip[0, 0, :, 0], psf_tip[0, :, 0, 1], psf_tip[:, 0, 0, 2]
    tol = 0.5 * min(np.diff(x).mean(), np.diff(y).mean())
    for c, axis, name in ((0, x, "x"), (1, y, "y")):
        lo, hi = deer_tip[..., c].min(), deer_tip[..., c].max()
        if lo < axis[0] - tol or hi > axis[-1] + tol:
            raise MriInputError(f"`deer_tip` lies outside the PSF grid: DEER {name} from {lo:.4g} to {hi:.4g} m, "
                                f"the PSF grid's {name} from {axis[0]:.4g} to {axis[-1]:.4g} m")
    s = {key: _scalar(arrays, key) for key in REQUIRED_SCALARS}
    for key, default in OPTIONAL_SCALARS.items():
        s[key] = _scalar(arrays, key) if key in arrays else default
    for key in ("f_rf", "b0", "depth", "t_pi_rf", "t2star_dark", "tau"):
        if not s[key] > 0:
            unit = {"f_rf": "Hz", "b0": "T", "depth": "m"}.get(key, "s")
            raise MriInputError(f"`{key}` must be > 0 {unit}, got {s[key]}")
    for key in OPTIONAL_SCALARS:
        if not 0 < s[key] <= 1:
            raise MriInputError(f"`{key}` must be in (0, 1], got {s[key]}")
    warnings = []
    if abs(s["b0"] - ANTICROSSING_T) < ANTICROSSING_WARN_T:
        warnings.append(
            f"b0 = {s['b0']:.4g} T is within {ANTICROSSING_WARN_T} T of the NV's ground-state level anticrossing "
            f"({ANTICROSSING_T:.4f} T): there the NV line is not gamma_NV B - D (the tip's transverse field mixes "
            "the levels and the tip shift can change sign), so the PSF misassigns the dark spins' slice; "
            "the positions are not reliable")
    for a in (psf_tip, detuning, deer_tip, deer, sigma, det_sigma):
        if a is not None:
            a.setflags(write=False)
    return MriScan(psf_tip=psf_tip, detuning=detuning, deer_tip=deer_tip, deer=deer, deer_sigma=sigma,
                   detuning_sigma=det_sigma, warnings=tuple(warnings), **s)


def load_mri_npz(path: str) -> MriScan:
    """The `MriScan` in IN.npz at `path`; MriInputError "<path>: <what>" (one line) for bad input."""
    from nvscope.proto.command_line import InputError
    from nvscope.proto.npz_files import load_npz

    keys = REQUIRED_ARRAYS + OPTIONAL_ARRAYS + REQUIRED_SCALARS + tuple(OPTIONAL_SCALARS)
    try:
        arrays = load_npz(path, keys)
    except InputError as exc:
        raise MriInputError(str(exc)) from None
    try:
        return scan_from_arrays(arrays)
    except MriInputError as exc:
        raise MriInputError(f"{path}: {exc}") from None


__all__ = ["MriScan", "MriInputError", "scan_from_arrays", "load_mri_npz", "ANTICROSSING_T", "OPTIONAL_SCALARS",
           "OPTIONAL_ARRAYS"]
