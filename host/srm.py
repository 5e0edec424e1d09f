"""Antibunching SRM results of a run: PL, g2(0), its error and G2 = <N>^2 (1 - g2(0)) maps."""

from __future__ import annotations

import numpy as np

from nvscope.models.g2.mle import estimate_g2, fit_shape
from nvscope.models.g2.model import singles_base

from .figures import srm_figure
from .store import RunStore, read_pixels


def pixel_maps(grid_shape: tuple[int, int], ix: np.ndarray, iy: np.ndarray,
               values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Place per-pixel values on the (ny, nx) grid; pixels never measured are NaN."""
    maps = {}
    for name, v in values.items():
        m = np.full(grid_shape, np.nan)
        m[iy, ix] = v
        maps[name] = m
    return maps


def srm_results(px: dict[str, np.ndarray]):
    """Per-pixel PL (counts/s), g2(0) and its std by Poisson MLE, and G2 (paper Eq. 1-2); and the
    emitter shape, fitted once on the summed histogram with its normalization fixed by the singles
    (with the base free, the slow bunching and the base are nearly degenerate in a 500 ns window)."""
    hist, dwell = px["hist"], px["dwell_s"]
    shape = fit_shape(hist.sum(axis=0), base=singles_base(px["n_a"], px["n_b"], dwell).sum())
    g2, g2_std = estimate_g2(hist, shape, n_a=px["n_a"], n_b=px["n_b"], t_acq=dwell)
    pl = (px["n_a"] + px["n_b"]) / dwell
    return {"pl_cps": pl, "g2": g2, "g2_std": g2_std, "G2": pl**2 * (1.0 - g2)}, shape


def srm_analysis(store: RunStore) -> tuple[dict, dict]:
    """The analysis the host runs when an SRM run ends: maps into the file and a PNG beside it."""
    px = read_pixels(store.f)
    if len(px["index"]) == 0:
        return {}, {"analysis_note": "no pixels"}
    values, shape = srm_results(px)
    grid = tuple(int(n) for n in store.f.attrs["grid_shape"])
    maps = pixel_maps(grid, px["ix"], px["iy"], values)
    png = store.path.with_suffix(".png")
    srm_figure(maps, px["position"], png, title=str(store.f.attrs["run_id"]))
    results = {f"maps/{k}": v for k, v in maps.items()}
    attrs = {"g2_method": "mle", "shape_t1_s": shape.t1, "shape_t2_s": shape.t2, "shape_a": shape.a,
             "figure": png.name}
    return results, attrs
