"""PNG figures of an NV-MRI run (axes in nm, frequencies in MHz or kHz), written beside its run file:

- `<run_id>.png`: each DEER map with the localization's model and the residual in sigmas, and the
  localized spins in 3D with their error bars (the simulator's truth when known);
- `<run_id>-psf.png`: the locked detuning at each PSF gap (the PSF stack);
- `<run_id>-lock.png`: the lock's error f_sigma at every map, lost pixels marked x, recovered ones o.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .maps import LOST, RECOVERED, MriMaps  # noqa: E402

NM = 1e9


def map_extent_nm(tip: np.ndarray) -> tuple[tuple[float, float, float, float], str]:
    """imshow extent (left, right, bottom, top) in nm of a map's tip grid (rows, columns, 3), pixel
    centres at the tips, and the vertical axis' label: y for a plane, the gap z for a section."""
    x = tip[0, :, 0] * NM
    axis = 2 if tip.shape[0] > 1 and np.ptp(tip[:, 0, 2]) > 0 else 1
    v = tip[:, 0, axis] * NM
    hx = 0.5 * (x[-1] - x[0]) / (len(x) - 1) if len(x) > 1 else 0.5
    hv = 0.5 * (v[-1] - v[0]) / (len(v) - 1) if len(v) > 1 else 0.5
    return (x[0] - hx, x[-1] + hx, v[0] - hv, v[-1] + hv), ("gap z (nm)" if axis == 2 else "y (nm)")


def _panel(fig, ax, values: np.ndarray, tip: np.ndarray, title: str, cmap: str, unit: str, **kw) -> None:
    extent, ylabel = map_extent_nm(tip)
    im = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, **kw,
                   aspect="equal" if ylabel.startswith("y") else "auto")
    ax.set_xlabel("x (nm)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label=unit)


def _mark_states(ax, state: np.ndarray, tip: np.ndarray) -> None:
    """Mark lost (red x) and recovered (orange o) pixels of a lock-state map on `ax`."""
    _, ylabel = map_extent_nm(tip)
    axis = 2 if ylabel.startswith("gap") else 1
    for code, marker, color, label in ((LOST, "x", "red", "lost"), (RECOVERED, "o", "orange", "recovered")):
        sel = state == code
        if sel.any():
            style = {"facecolors": "none", "edgecolors": color} if marker == "o" else {"c": color}
            ax.scatter(tip[..., 0][sel] * NM, tip[..., axis][sel] * NM, marker=marker, s=18, label=label, **style)
    if np.any(state == LOST) or np.any(state == RECOVERED):
        ax.legend(fontsize=6, loc="upper right")


def _axes(n: int, ncols: int = 4):
    """A figure with n map panels in rows of at most `ncols`, and its axes in order (spares hidden)."""
    cols, rows = min(max(1, n), ncols), -(-max(1, n) // ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.4 * rows), constrained_layout=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def psf_figure(maps: MriMaps, path: Path, title: str = "") -> None:
    """The locked detuning (MHz) at each PSF gap, one panel per gap."""
    fig, axes = _axes(maps.detuning.shape[0])
    for z, ax in enumerate(axes):
        if z < maps.detuning.shape[0]:
            _panel(fig, ax, maps.detuning[z] / 1e6, maps.psf_tip[z],
                   f"detuning at gap {maps.grid.psf_gaps[z] * NM:.1f} nm", "viridis", "MHz")
    fig.suptitle(f"{title} PSF: f_lock - f_retracted".strip())
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lock_figure(maps: MriMaps, path: Path, title: str = "") -> None:
    """The lock's error f_sigma (kHz) at each PSF plane and DEER map, lost and recovered pixels marked."""
    panels = [(f"PSF gap {g * NM:.1f} nm", maps.f_sigma[z], maps.lock_state[z], maps.psf_tip[z])
              for z, g in enumerate(maps.grid.psf_gaps)]
    panels += [(f"DEER {d.name}", d.f_sigma, d.lock_state, d.tip) for d in maps.deer]
    fig, axes = _axes(len(panels))
    for ax, (name, sigma, state, tip) in zip(axes, panels):
        _panel(fig, ax, sigma / 1e3, tip, f"lock error, {name}", "magma", "kHz")
        _mark_states(ax, state, tip)
    fig.suptitle(f"{title} lock: f_sigma (x lost, o recovered)".strip())
    fig.savefig(path, dpi=110)
    plt.close(fig)


def result_figure(maps: MriMaps, models: dict[str, np.ndarray], loc, truth: dict | None, path: Path,
                  title: str = "") -> None:
    """Each DEER map, the localization's model and the residual (in sigmas) in a row; the spins in 3D."""
    rows = [d for d in maps.deer if d.valid.any()] or maps.deer[:1]
    fig = plt.figure(figsize=(15, 3.4 * max(1, len(rows))), constrained_layout=True)
    grid = fig.add_gridspec(max(1, len(rows)), 4)
    for r, d in enumerate(rows):
        model = models.get(d.name)
        lim = np.nanmax(np.abs(d.deer)) if np.isfinite(d.deer).any() else 1.0
        _panel(fig, fig.add_subplot(grid[r, 0]), d.deer, d.tip, f"DEER {d.name}", "viridis", "1 - n_rf/n_ref",
               vmin=min(0.0, np.nanmin(d.deer)) if np.isfinite(d.deer).any() else 0.0, vmax=lim)
        if model is not None:
            _panel(fig, fig.add_subplot(grid[r, 1]), model, d.tip, f"model ({loc.model})", "viridis", "1 - n_rf/n_ref",
                   vmin=min(0.0, np.nanmin(d.deer)), vmax=lim)
            res = (d.deer - model) / d.deer_sigma
            _panel(fig, fig.add_subplot(grid[r, 2]), res, d.tip, "residual", "coolwarm", "sigma", vmin=-4, vmax=4)
    ax = fig.add_subplot(grid[:, 3], projection="3d")
    ax.scatter([0], [0], [0], marker="*", s=80, c="k", label="NV")
    if loc is not None and loc.spins:
        p = np.array([s.position_m for s in loc.spins]) * NM
        e = np.array([s.sigma_m for s in loc.spins]) * NM
        ax.scatter(p[:, 0], p[:, 1], p[:, 2], c="C0", s=30, label="localized")
        for (x, y, z), (sx, sy, sz) in zip(p, e):
            ax.plot([x - sx, x + sx], [y, y], [z, z], c="C0")
            ax.plot([x, x], [y - sy, y + sy], [z, z], c="C0")
            ax.plot([x, x], [y, y], [z - sz, z + sz], c="C0")
    if truth is not None and len(truth.get("spin_positions_m", ())):
        t = np.asarray(truth["spin_positions_m"]) * NM
        ax.scatter(t[:, 0], t[:, 1], t[:, 2], marker="x", c="C3", s=40, label="truth (simulator)")
    if loc is not None and loc.layer is not None:
        ax.set_title(f"layer at {loc.layer.height_m * NM:.2f} ± {loc.layer.height_sigma_m * NM:.2f} nm, "
                     f"{loc.layer.density_per_m2 * 1e-18:.2f} /nm²", fontsize=9)
    else:
        ax.set_title("spins relative to the NV (±1 sigma)", fontsize=9)
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    ax.set_zlabel("z (nm)")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mri_figures(maps: MriMaps, models: dict[str, np.ndarray], loc, truth: dict | None, path: Path,
                title: str = "") -> list[str]:
    """The run's three figures (module docstring), `path` = `<run_id>.png`; their file names, main first."""
    path = Path(path)
    psf, lock = path.with_name(f"{path.stem}-psf.png"), path.with_name(f"{path.stem}-lock.png")
    result_figure(maps, models, loc, truth, path, title)
    psf_figure(maps, psf, title)
    lock_figure(maps, lock, title)
    return [path.name, psf.name, lock.name]


__all__ = ["map_extent_nm", "psf_figure", "lock_figure", "result_figure", "mri_figures"]
