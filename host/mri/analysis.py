"""The run-end analysis of an NV-MRI run: its maps, the 3D localization of the dark spins (models.mri)
and, on a simulated rig, the error of each localized spin against the simulator's truth; the results
go into the run file and figures beside it (docs/run-files.md, docs/physics.md section 2.6).

`read` runs on the host (which owns the file) and `compute` in a worker process (the localization's
fits take seconds), like the SRM analysis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..store import RunStore, read_deer, read_lock
from .figures import mri_figures
from .maps import LOST, MriMaps, build_maps

if TYPE_CHECKING:
    from nvscope.models.mri.localize import Localization

PSF_FILL_MAX = 0.05
"""A PSF plane with at most this fraction of pixels missing or lost is completed for the localization by
interpolation from its measured pixels (noted; the stored maps keep NaN); a plane missing more is left out."""


@dataclass
class MriInputs:
    """What the run-end NV-MRI analysis needs of a run, read from its file: the lock and deer tables
    (`store.read_lock`, `read_deer`), the effective configuration, the run id, where the figures go."""

    lock: dict[str, np.ndarray]
    deer: dict[str, np.ndarray]
    config: dict
    run_id: str
    figure: Path


def _fill_plane(plane: np.ndarray, tip: np.ndarray) -> np.ndarray:
    """A PSF plane (ny, nx) Hz with its NaN pixels interpolated (cubic, nearest at the edges) from the rest."""
    from scipy.interpolate import griddata

    ok = np.isfinite(plane)
    pts, at = tip[..., :2][ok], tip[..., :2][~ok]
    values = griddata(pts, plane[ok], at, method="cubic")
    far = np.isnan(values)
    if far.any():
        values[far] = griddata(pts, plane[ok], at[far], method="nearest")
    out = plane.copy()
    out[~ok] = values
    return out


def localization_input(maps: MriMaps) -> tuple[dict, list[tuple[str, np.ndarray]], list[str]]:
    """The localization's input arrays (the `nvscope mri localize` IN contract) from the maps; where each
    DEER value came from ((map name, mask of its valid pixels) in order); notes on what was left out or
    completed. The PSF: the longest run of consecutive planes that are complete or nearly (PSF_FILL_MAX,
    interpolated); the DEER data: the one DEER map as it is when it is complete, else the valid pixels of
    every DEER map as a list (N, 3)."""
    notes: list[str] = []
    usable = []
    for z in range(maps.detuning.shape[0]):
        bad = ~np.isfinite(maps.detuning[z])
        usable.append(bad.mean() <= PSF_FILL_MAX)
    runs, start = [], None  # (length, -first plane) of each run of consecutive usable planes
    for z, ok in enumerate(usable + [False]):
        if ok and start is None:
            start = z
        elif not ok and start is not None:
            runs.append((z - start, -start))
            start = None
    n, z0 = max(runs, default=(0, 0))
    z0 = -z0
    planes = range(z0, z0 + n)
    if n < len(usable):
        notes.append(f"PSF planes {sorted(set(range(len(usable))) - set(planes))} left out of the localization "
                     f"(more than {PSF_FILL_MAX:.0%} of their pixels missing or lost, or not adjacent to the rest)")
    detuning, f_sigma = [], []
    for z in planes:
        plane = maps.detuning[z]
        if not np.isfinite(plane).all():
            notes.append(f"PSF plane {z}: {int((~np.isfinite(plane)).sum())} missing or lost pixels interpolated "
                         "for the localization (the stored map keeps NaN)")
            plane = _fill_plane(plane, maps.psf_tip[z])
        detuning.append(plane)
        sig = maps.f_sigma[z]
        ok = np.isfinite(sig) & (sig > 0)  # an interpolated pixel gets its plane's largest lock sigma
        f_sigma.append(np.where(ok, sig, np.max(sig[ok]) if ok.any() else np.nan))
    arrays: dict = {"psf_tip": maps.psf_tip[z0:z0 + n],
                    "detuning": np.stack(detuning) if detuning else np.zeros((0, *maps.detuning.shape[1:]))}
    if f_sigma and np.isfinite(f_sigma).all():  # the lock's standard errors, propagated into the positions
        arrays["detuning_sigma"] = np.stack(f_sigma)
    with_data = [d for d in maps.deer if d.valid.any()]
    if len(with_data) == 1 and with_data[0].valid.all():
        d = with_data[0]
        arrays.update(deer_tip=d.tip, deer=d.deer, deer_sigma=d.deer_sigma)
        placement = [(d.name, d.valid)]
    else:
        placement = [(d.name, d.valid) for d in with_data]
        arrays.update(deer_tip=np.concatenate([d.tip[d.valid] for d in with_data]) if with_data else np.zeros((0, 3)),
                      deer=np.concatenate([d.deer[d.valid] for d in with_data]) if with_data else np.zeros(0),
                      deer_sigma=np.concatenate([d.deer_sigma[d.valid] for d in with_data]) if with_data else np.zeros(0))
    arrays.update(maps.scalars)
    return arrays, placement, notes


def model_maps(maps: MriMaps, placement: list[tuple[str, np.ndarray]], model: np.ndarray) -> dict[str, np.ndarray]:
    """The localization's DEER model (the shape of its input) put back on each DEER map (NaN elsewhere)."""
    out, flat, k = {}, np.ravel(model), 0
    for name, mask in placement:
        m = np.full(mask.shape, np.nan)
        n = int(mask.sum())
        m[mask] = flat[k:k + n]  # a complete map's pixels in C order, as a boolean mask takes them
        k += n
        out[name] = m
    return out


def truth_errors(config: dict, loc: Localization) -> tuple[dict[str, np.ndarray], dict] | None:
    """Each localized spin against the nearest true one (a simulated rig's `sim_truth`), relative to the
    NV: the true positions (K, 3) m, the nearest one's index, the error (m) and the error in sigmas; and
    a summary (JSON-able). None when the run has no truth."""
    truth = config.get("sim_truth")
    if not truth or "dark_spins_m" not in truth:
        return None
    nv = np.array([0.0, 0.0, -float(truth["nv_depth_m"])])
    true = np.asarray(truth["dark_spins_m"], dtype=np.float64).reshape(-1, 3) - nv
    est = np.array([s.position_m for s in loc.spins]).reshape(-1, 3)
    sig = np.array([s.sigma_m for s in loc.spins]).reshape(-1, 3)
    out = {"spin_positions_m": true}
    summary: dict = {"n_true": len(true), "n_found": len(est)}
    if len(true) and len(est):
        dist = np.linalg.norm(est[:, None, :] - true[None, :, :], axis=-1)
        nearest = np.argmin(dist, axis=1)
        err = est - true[nearest]
        with np.errstate(divide="ignore", invalid="ignore"):
            in_sigma = err / sig
        out.update(nearest=nearest, error_m=err, error_sigma=in_sigma)
        summary.update(error_nm=(err * 1e9).round(4).tolist(), error_sigma=np.round(in_sigma, 2).tolist())
    layer = truth.get("layer")
    if layer and loc.layer is not None:
        height = float(layer["height_m"]) - nv[2]  # lab height of the layer relative to the NV
        out["layer_height_m"] = np.float64(height)
        summary.update(layer_height_error_m=loc.layer.height_m - height,
                       layer_density_error_rel=loc.layer.density_per_m2 / float(layer["density_per_m2"]) - 1.0
                       if float(layer["density_per_m2"]) > 0 else None)
    return out, summary


def map_results(maps: MriMaps) -> dict[str, np.ndarray]:
    """The maps as run-file datasets (names under mri/)."""
    res = {"mri/psf/tip": maps.psf_tip, "mri/psf/detuning": maps.detuning, "mri/psf/f_sigma": maps.f_sigma,
           "mri/psf/lock_state": maps.lock_state, "mri/psf/gaps": np.asarray(maps.grid.psf_gaps, dtype=np.float64)}
    for d in maps.deer:
        for key in ("tip", "deer", "deer_sigma", "n_rf", "n_ref", "detuning", "f_sigma", "lock_state"):
            res[f"mri/deer/{d.name}/{key}"] = getattr(d, key)
    return res


@dataclass
class MriAnalysis:
    """The analysis the host runs when an mri run ends: maps, localization, truth, figures (see module)."""

    model: str = "auto"

    def __call__(self, store: RunStore) -> tuple[dict, dict]:
        return self.compute(self.read(store))

    def read(self, store: RunStore) -> MriInputs:
        """The run's lock and deer rows and its configuration, from its open file."""
        return MriInputs(read_lock(store.f), read_deer(store.f), json.loads(store.f.attrs["config"]),
                         str(store.f.attrs["run_id"]), store.path.with_suffix(".png"))

    def compute(self, inputs: MriInputs) -> tuple[dict, dict]:
        """(result datasets, result attributes) of the run (module docstring; docs/run-files.md)."""
        if len(inputs.lock["seq"]) == 0:
            return {}, {"analysis_note": "no lock rows"}
        maps = build_maps(inputs.lock, inputs.deer, inputs.config)
        results = map_results(maps)
        s = maps.scalars
        attrs: dict = {"mri_f_retracted_hz": maps.f_retracted_hz, "mri_f_retracted_sigma_hz": maps.f_retracted_sigma_hz,
                       "mri_b0_t": s["b0"], "mri_f_rf_hz": s["f_rf"], "mri_tau_s": s["tau"],
                       "mri_missing": json.dumps(maps.missing), "mri_lost": json.dumps(maps.lost),
                       "mri_recovered": json.dumps(maps.recovered), "mri_notes": json.dumps(maps.notes)}
        loc, models, truth, warnings = None, {}, None, []
        if not any(d.valid.any() for d in maps.deer):
            attrs["analysis_note"] = "no DEER data: maps only, no localization"
        else:
            arrays, placement, notes = localization_input(maps)
            warnings += notes
            try:  # a localization that cannot be done leaves the maps and figures written
                from nvscope.models.mri.localize import localize  # at the first mri run (scipy, scikit-image)
                from nvscope.models.mri.scan_data import scan_from_arrays

                loc = localize(scan_from_arrays(arrays), self.model)
            except Exception as exc:
                attrs["analysis_error"] = f"localization: {type(exc).__name__}: {exc}"
        if loc is not None:
            warnings += list(loc.warnings)
            models = model_maps(maps, placement, np.asarray(loc.deer_model))
            for name, m in models.items():
                results[f"mri/deer/{name}/deer_model"] = m
            results.update(localization_results(loc))
            attrs["mri_localization"] = json.dumps(loc.to_json())
            attrs["mri_model"] = loc.model
            truth = truth_errors(inputs.config, loc)
            if truth is not None:
                results.update({f"mri/truth/{k}": v for k, v in truth[0].items()})
                attrs["mri_truth"] = json.dumps(truth[1])
        attrs["mri_warnings"] = json.dumps(warnings)
        names = mri_figures(maps, models, loc, truth[0] if truth else None, inputs.figure, title=inputs.run_id)
        attrs["figure"], attrs["figures"] = names[0], json.dumps(names)
        return results, attrs


def localization_results(loc: Localization) -> dict[str, np.ndarray]:
    """The localization as run-file datasets: spin positions and sigmas (K, 3) m relative to the NV, and
    the layer's height (m, relative to the NV), density (spins/m^2) and their sigmas when it is a layer."""
    res = {"mri/localization/spin_positions_m": np.array([s.position_m for s in loc.spins], dtype=np.float64).reshape(-1, 3),
           "mri/localization/spin_sigmas_m": np.array([s.sigma_m for s in loc.spins], dtype=np.float64).reshape(-1, 3)}
    if loc.layer is not None:
        for key in ("height_m", "height_sigma_m", "density_per_m2", "density_sigma_per_m2"):
            res[f"mri/localization/layer_{key}"] = np.float64(getattr(loc.layer, key))
    return res


__all__ = ["MriAnalysis", "MriInputs", "localization_input", "model_maps", "truth_errors", "map_results",
           "localization_results", "LOST"]
