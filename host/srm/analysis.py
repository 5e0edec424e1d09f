"""Antibunching SRM results of a run: PL, g2(0), its error and G2 = <N>^2 (1 - g2(0)) maps, and a figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvscope.models.g2.estimation import G2Estimator
from nvscope.models.g2.mle import MleEstimator
from nvscope.models.g2.scan_context import ScanContext, estimate_scan, super_resolved
from nvscope.models.g2.reasons import G2_NOTES, G2_REASONS

from .figures import srm_figure
from ..store import RunStore, acquisition, read_pixels


def on_grid(grid_shape: tuple[int, int], ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Which pixels lie on the run's (ny, nx) grid (a rig that sent others is reported, not trusted)."""
    return (ix >= 0) & (ix < grid_shape[1]) & (iy >= 0) & (iy < grid_shape[0])


def pixel_maps(grid_shape: tuple[int, int], ix: np.ndarray, iy: np.ndarray,
               values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Place per-pixel values on the (ny, nx) grid; pixels never measured are NaN, pixels off the
    grid are left out (they stay in /pixels)."""
    ok = on_grid(grid_shape, ix, iy)
    maps = {}
    for name, v in values.items():
        m = np.full(grid_shape, np.nan)
        m[iy[ok], ix[ok]] = np.asarray(v)[ok]
        maps[name] = m
    return maps


def srm_results(px: dict[str, np.ndarray], estimator: G2Estimator) -> tuple[dict[str, np.ndarray], ScanContext]:
    """Per-pixel PL (counts/s), g2(0) and its std by `estimator`, G2 (paper Eq. 1-2), the dwell, the
    no-estimate reason and the note; and the scan's context (`models.g2.scan_context`): each pixel's model
    has the normalization of its histogram mode (all pairs or start-stop, from the pixel table) fixed by
    its singles, and the emitter's shape at the pixel's own pump (fitted on its histogram where it has
    enough events, else from its PL through the scan's saturation model), at the fitted zero delay where
    that is significant. With no events at all, or no antibunching beyond the noise (uncorrelated light),
    the NV default shape is used and the estimates carry NOTE_DEFAULT_SHAPE."""
    dwell = px["dwell_s"]
    est, context, pl = estimate_scan(estimator, px["hist"], px["n_a"], px["n_b"], dwell, *acquisition(px))
    return {"pl_cps": pl, "g2": est.g2, "g2_std": est.g2_std, "G2": super_resolved(pl, est.g2),
            "g2_reason": est.reason.astype(float), "g2_note": est.note.astype(float), "dwell_s": dwell}, context


@dataclass
class SrmInputs:
    """What the run-end SRM analysis needs of a run, read from its file: the pixel table
    (`store.read_pixels`), the grid (ny, nx), the run id and where the figure goes."""

    pixels: dict[str, np.ndarray]
    grid_shape: tuple[int, int]
    run_id: str
    figure: Path


@dataclass
class SrmAnalysis:
    """The analysis the host runs when an SRM run ends: maps into the file and a PNG beside it.

    `read` (on the host, which owns the file) and `compute` (a pure function of the inputs, which
    writes only the PNG) are separate so that the host can run `compute` in a worker process and
    write its results itself; calling the analysis on a store does both in line."""

    estimator: G2Estimator = field(default_factory=MleEstimator)

    def __call__(self, store: RunStore) -> tuple[dict, dict]:
        return self.compute(self.read(store))

    def read(self, store: RunStore) -> SrmInputs:
        """The run's pixels and grid, from its open file."""
        return SrmInputs(read_pixels(store.f), tuple(int(n) for n in store.f.attrs["grid_shape"]),
                         str(store.f.attrs["run_id"]), store.path.with_suffix(".png"))

    def compute(self, inputs: SrmInputs) -> tuple[dict, dict]:
        """(result datasets, result attributes) of the run: the maps, the shape, the figure's name."""
        px = inputs.pixels
        if len(px["index"]) == 0:
            return {}, {"analysis_note": "no pixels"}
        values, context = srm_results(px, self.estimator)
        maps = pixel_maps(inputs.grid_shape, px["ix"], px["iy"], values)
        ok = on_grid(inputs.grid_shape, px["ix"], px["iy"])
        srm_figure(maps, px["position"][ok], inputs.figure, title=inputs.run_id)
        results = {f"maps/{k}": v for k, v in maps.items()}
        attrs = {"g2_method": self.estimator.name, **context.attributes(), "figure": inputs.figure.name, "g2_reasons": list(G2_REASONS),
                 "g2_notes": list(G2_NOTES),
                 "total_dwell_s": float(px["dwell_s"].sum())}
        off = int((~on_grid(inputs.grid_shape, px["ix"], px["iy"])).sum())
        if off:
            attrs["analysis_note"] = f"{off} pixels lie off the {inputs.grid_shape} grid: kept in /pixels, not in the maps"
        return results, attrs
