"""The maps of an NV-MRI run, built from its `lock` and `deer` tables and its `[mri]` configuration
(docs/run-files.md, docs/physics.md sections 2.4-2.6).

Every tip position is placed on its grid by its (scan, plane, ix, iy), never by arrival order (a
serpentine scan arrives out of order). The PSF is the locked detuning f_lock - f_retracted on the grid
of `mri.psf_gaps` x (ny, nx); each DEER plane (`mri.deer_gaps`) and vertical section (`mri.sections`)
is a map of the DEER dip 1 - n_rf / n_ref with its Poisson error. A pixel never measured (a stopped or
failed run) is NaN and counted; a pixel whose lock was lost is NaN in every map but its lock state, and
counted; nothing is filled in. The tip positions of the maps are the grid's (the contract's regular
grid); the positions the rig reported are compared with it and a deviation is reported.

SI units: m, Hz, s, T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nvscope.proto.messages import LOCK_STATES, MRI_SCANS
from nvscope.rt.kernels.spin_constants import bias_from_nv_frequency

RETRACTED, PSF, DEER = (MRI_SCANS.index(s) for s in ("retracted", "psf", "deer"))
LOST = LOCK_STATES.index("lost")
RECOVERED = LOCK_STATES.index("recovered")
POSITION_TOLERANCE = 0.01
"""A reported tip position farther than this fraction of the grid step from its grid point is reported."""


class MriMapError(ValueError):
    """The run's configuration or data cannot give NV-MRI maps (one line, naming what)."""


@dataclass(frozen=True)
class MriSection:
    """A vertical DEER section along x at `y_m` (m), at the apex heights `gaps_m` (m)."""

    y_m: float
    gaps_m: tuple[float, ...]


@dataclass(frozen=True)
class MriGrid:
    """The tip positions of an NV-MRI run (the rig's `[mri]` table): an (ny, nx) lateral grid from
    (x0, y0) in steps of `step` (m) at each PSF gap and DEER gap (apex heights, m), and the vertical
    sections; the DEER planes come first in the messages' `plane` numbering, then the sections."""

    nx: int
    ny: int
    x0: float
    y0: float
    step: float
    psf_gaps: tuple[float, ...]
    deer_gaps: tuple[float, ...]
    sections: tuple[MriSection, ...] = ()

    @classmethod
    def from_config(cls, mri: dict) -> MriGrid:
        """The grid of a run's `config["mri"]` (MriMapError naming a missing or malformed key)."""
        try:
            grid = cls(int(mri["nx"]), int(mri["ny"]), float(mri["x0"]), float(mri["y0"]), float(mri["step"]),
                       tuple(float(g) for g in mri["psf_gaps"]), tuple(float(g) for g in mri.get("deer_gaps", ())),
                       tuple(MriSection(float(s["y"]), tuple(float(g) for g in s["gaps"]))
                             for s in mri.get("sections", ())))
        except KeyError as exc:
            raise MriMapError(f"config.mri: no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise MriMapError(f"config.mri: malformed ({exc})") from None
        if grid.nx < 1 or grid.ny < 1 or not grid.step > 0:
            raise MriMapError(f"config.mri: nx, ny >= 1 and step > 0 m expected, got {grid.nx}, {grid.ny}, {grid.step}")
        return grid

    @property
    def x(self) -> np.ndarray:
        """The grid's x positions (nx,) in m."""
        return self.x0 + self.step * np.arange(self.nx)

    @property
    def y(self) -> np.ndarray:
        """The grid's y positions (ny,) in m."""
        return self.y0 + self.step * np.arange(self.ny)

    def plane_tip(self, gap_m: float) -> np.ndarray:
        """Tip apex positions (ny, nx, 3) in m of a lateral plane at apex height `gap_m` (m)."""
        yy, xx = np.meshgrid(self.y, self.x, indexing="ij")
        return np.stack([xx, yy, np.full_like(xx, gap_m)], axis=-1)

    def section_tip(self, k: int) -> np.ndarray:
        """Tip apex positions (n_gaps, nx, 3) in m of vertical section k (row iy at its gap iy)."""
        s = self.sections[k]
        zz, xx = np.meshgrid(np.asarray(s.gaps_m), self.x, indexing="ij")
        return np.stack([xx, np.full_like(xx, s.y_m), zz], axis=-1)

    @property
    def psf_tip(self) -> np.ndarray:
        """Tip apex positions (Nz, ny, nx, 3) in m of the PSF stack."""
        return np.stack([self.plane_tip(g) for g in self.psf_gaps]) if self.psf_gaps else np.zeros((0, self.ny, self.nx, 3))

    def deer_maps(self) -> list[tuple[str, np.ndarray]]:
        """(name, tip positions (..., 3) m) of every DEER map in `plane` order: plane_<i>, then section_<k>."""
        return ([(f"plane_{i}", self.plane_tip(g)) for i, g in enumerate(self.deer_gaps)]
                + [(f"section_{k}", self.section_tip(k)) for k in range(len(self.sections))])


@dataclass
class DeerMap:
    """One DEER plane or section: tip positions (..., 3) m, the DEER dip 1 - n_rf / n_ref and its
    one-sigma Poisson error, the counts, and the lock at each pixel (detuning and f_sigma in Hz, state
    as an index into LOCK_STATES); NaN where not measured, and (but the lock state) where lost."""

    name: str
    tip: np.ndarray
    deer: np.ndarray
    deer_sigma: np.ndarray
    n_rf: np.ndarray
    n_ref: np.ndarray
    detuning: np.ndarray
    f_sigma: np.ndarray
    lock_state: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Pixels with a DEER value (measured, lock not lost)."""
        return np.isfinite(self.deer)


@dataclass
class MriMaps:
    """Everything the run's lock and DEER rows give, on the run's grid (see the module's docstring):
    the tip-retracted reference, the PSF stack (detuning, f_sigma, lock state), the DEER maps, the
    scalars of the localization's input, what is missing or lost per map, and notes in words."""

    grid: MriGrid
    f_retracted_hz: float
    f_retracted_sigma_hz: float
    psf_tip: np.ndarray
    detuning: np.ndarray
    f_sigma: np.ndarray
    lock_state: np.ndarray
    deer: list[DeerMap]
    scalars: dict[str, float]
    missing: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def deer_dip(n_rf: np.ndarray, n_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The DEER dip 1 - n_rf / n_ref and its one-sigma error from Poisson counts, propagated:
    sigma = sqrt(n_rf + r^2 n_ref) / n_ref with r = n_rf / n_ref (n_rf = 0 counted as 1); NaN where
    n_ref = 0."""
    n_rf = np.asarray(n_rf, dtype=np.float64)
    n_ref = np.asarray(n_ref, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(n_ref > 0, n_rf / n_ref, np.nan)
        sigma = np.sqrt(np.maximum(n_rf, 1.0) + r**2 * n_ref) / n_ref
    return 1.0 - r, np.where(n_ref > 0, sigma, np.nan)


def _place(shape: tuple[int, ...], iz: np.ndarray, iy: np.ndarray, ix: np.ndarray,
           columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, int]:
    """Place rows on a (planes, rows, columns) grid by their indices: NaN where none; rows off the grid
    are left out; a later row at the same pixel replaces an earlier one. Returns the maps, the number
    of rows off the grid and of repeated pixels."""
    ok = (iz >= 0) & (iz < shape[0]) & (iy >= 0) & (iy < shape[1]) & (ix >= 0) & (ix < shape[2])
    flat = np.ravel_multi_index((iz[ok], iy[ok], ix[ok]), shape)
    maps = {}
    for name, v in columns.items():
        m = np.full(int(np.prod(shape)), np.nan)
        m[flat] = np.asarray(v, dtype=np.float64)[ok]  # in arrival order: the last row wins
        maps[name] = m.reshape(shape)
    return maps, int((~ok).sum()), int(len(flat) - len(np.unique(flat)))


def _note_rows(notes: list[str], what: str, off: int, repeated: int) -> None:
    if off:
        notes.append(f"{what}: {off} rows lie off the [mri] grid (kept in the tables, left out of the maps)")
    if repeated:
        notes.append(f"{what}: {repeated} pixels measured more than once (the last row is used)")


def _position_deviation(rows: dict[str, np.ndarray], mask: np.ndarray, tip: np.ndarray, idx: tuple) -> float:
    """Largest distance (m) between the reported tip positions of the rows `mask` and their grid points."""
    if not mask.any():
        return 0.0
    return float(np.max(np.linalg.norm(rows["position"][mask] - tip[idx], axis=-1)))


def retracted_reference(lock: dict[str, np.ndarray]) -> tuple[float, float, list[str]]:
    """The NV frequency with the tip retracted and its sigma (Hz) from the scan-0 lock rows (several:
    their inverse-variance mean, noted); MriMapError when there is none or its lock was lost."""
    ref = (lock["scan"] == RETRACTED)
    if not ref.any():
        raise MriMapError("no tip-retracted reference (a lock row of scan 0): no detuning can be computed")
    good = ref & (lock["state"] != LOST) & np.isfinite(lock["f_sigma_hz"])
    if not good.any():
        raise MriMapError("the tip-retracted reference lost its lock: no detuning can be computed")
    f, s = lock["f_lock_hz"][good], lock["f_sigma_hz"][good]
    notes = []
    if good.sum() > 1:
        notes.append(f"{int(good.sum())} tip-retracted references: their inverse-variance mean is used")
    w = 1.0 / s**2
    return float(np.sum(w * f) / np.sum(w)), float(1.0 / np.sqrt(np.sum(w))), notes


def _constant(values: np.ndarray, what: str, notes: list[str]) -> float:
    """The value a column should hold in every row (median, noted when the rows differ); NaN if none."""
    if len(values) == 0:
        return float("nan")
    if np.ptp(values) > 1e-9 * np.max(np.abs(values)):
        notes.append(f"{what} differs between DEER rows ({values.min():.9g} to {values.max():.9g}): the median is used")
    return float(np.median(values))


def build_maps(lock: dict[str, np.ndarray], deer: dict[str, np.ndarray], config: dict) -> MriMaps:
    """The run's maps from its lock and deer tables (`store.read_lock`, `read_deer`) and its effective
    configuration (`config["mri"]`, `config["coherence"]["timing"]["rf_pi_s"]`); MriMapError (one line)
    when the configuration has no usable `[mri]` table or the retracted reference is missing or lost."""
    if "mri" not in config:
        raise MriMapError("the run's config has no [mri] table")
    mri = config["mri"]
    grid = MriGrid.from_config(mri)
    f0, f0_sigma, notes = retracted_reference(lock)

    # the PSF stack
    psf = lock["scan"] == PSF
    shape = (len(grid.psf_gaps), grid.ny, grid.nx)
    cols = {"f": lock["f_lock_hz"][psf], "f_sigma": lock["f_sigma_hz"][psf], "state": lock["state"][psf]}
    placed, off, rep = _place(shape, lock["plane"][psf], lock["iy"][psf], lock["ix"][psf], cols)
    _note_rows(notes, "PSF", off, rep)
    state = placed["state"]
    lost_px = state == LOST
    detuning = np.where(lost_px, np.nan, placed["f"] - f0)
    f_sigma = np.where(lost_px, np.nan, placed["f_sigma"])
    psf_tip = grid.psf_tip
    missing = {"psf": int(np.isnan(state).sum())}
    lost = {"psf": int(lost_px.sum())}
    recovered = {"psf": int((state == RECOVERED).sum())}
    on = psf & (lock["plane"] >= 0) & (lock["plane"] < shape[0]) & (lock["iy"] >= 0) & (lock["iy"] < shape[1]) \
        & (lock["ix"] >= 0) & (lock["ix"] < shape[2])
    dev = _position_deviation(lock, on, psf_tip, (lock["plane"][on], lock["iy"][on], lock["ix"][on]))

    # the DEER maps: the lock rows and the deer rows of scan 2, each placed by (plane, iy, ix)
    maps: list[DeerMap] = []
    dl, dd = lock["scan"] == DEER, deer["scan"] == DEER
    for p, (name, tip) in enumerate(grid.deer_maps()):
        pshape = (1, *tip.shape[:2])
        sl, sd = dl & (lock["plane"] == p), dd & (deer["plane"] == p)
        lk, off_l, rep_l = _place(pshape, np.zeros(sl.sum(), int), lock["iy"][sl], lock["ix"][sl],
                                  {"f": lock["f_lock_hz"][sl], "f_sigma": lock["f_sigma_hz"][sl],
                                   "state": lock["state"][sl]})
        dr, off_d, rep_d = _place(pshape, np.zeros(sd.sum(), int), deer["iy"][sd], deer["ix"][sd],
                                  {"n_rf": deer["n_rf"][sd], "n_ref": deer["n_ref"][sd]})
        _note_rows(notes, f"DEER {name} (lock)", off_l, rep_l)
        _note_rows(notes, f"DEER {name}", off_d, rep_d)
        lk, dr = {k: v[0] for k, v in lk.items()}, {k: v[0] for k, v in dr.items()}
        lost_here = lk["state"] == LOST
        dip, sigma = deer_dip(dr["n_rf"], dr["n_ref"])
        bad = lost_here | np.isnan(dr["n_rf"])
        maps.append(DeerMap(name, tip, np.where(bad, np.nan, dip), np.where(bad, np.nan, sigma),
                            dr["n_rf"], dr["n_ref"], np.where(lost_here, np.nan, lk["f"] - f0),
                            np.where(lost_here, np.nan, lk["f_sigma"]), lk["state"]))
        missing[f"deer/{name}"] = int(np.isnan(dr["n_rf"]).sum())
        lost[f"deer/{name}"] = int(lost_here.sum())
        recovered[f"deer/{name}"] = int((lk["state"] == RECOVERED).sum())
        for rows, mask in ((lock, sl), (deer, sd)):
            ok = mask & (rows["iy"] < tip.shape[0]) & (rows["ix"] < tip.shape[1])
            dev = max(dev, _position_deviation(rows, ok, tip, (rows["iy"][ok], rows["ix"][ok])))
    beyond = int((dd & (deer["plane"] >= len(maps))).sum() + (dl & (lock["plane"] >= len(maps))).sum())
    if beyond:
        notes.append(f"DEER: {beyond} rows name a plane the [mri] table does not have (left out of the maps)")
    if dev > POSITION_TOLERANCE * grid.step:
        notes.append(f"reported tip positions differ from the [mri] grid by up to {dev * 1e9:.3g} nm "
                     "(the maps use the grid)")

    for what, n in missing.items():
        if n:
            notes.append(f"{what}: {n} pixels never measured (NaN)")
    for what, n in lost.items():
        if n:
            notes.append(f"{what}: {n} pixels lost their lock (NaN, left out)")

    timing = config.get("coherence", {}).get("timing", {})
    scalars = {"f_rf": _constant(deer["f_rf_hz"][dd], "f_rf_hz", notes),
               "tau": _constant(deer["tau_s"][dd], "tau_s", notes),
               "b0": bias_from_nv_frequency(f0),
               "depth": float(mri.get("nv_depth_m", np.nan)),
               "t2star_dark": float(mri.get("t2star_dark_s", np.nan)),
               "t_pi_rf": float(timing.get("rf_pi_s", np.nan))}
    return MriMaps(grid, f0, f0_sigma, psf_tip, detuning, f_sigma, state, maps, scalars,
                   missing, lost, recovered, notes)


__all__ = ["MriMapError", "MriSection", "MriGrid", "DeerMap", "MriMaps", "deer_dip", "retracted_reference",
           "build_maps", "LOST", "RECOVERED"]
