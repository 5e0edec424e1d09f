"""A finished SRM run file written by the host's own store, for the re-analysis tests and bench_scale
(one definition; imported from beside the tests as dwell_replay is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvscope.host.store import RunStore, run_path
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, singles_base
from nvscope.proto.messages import Pixel, RunEnd, RunStart


GRID = (3, 4)
"""The default (ny, nx) grid of a synthetic run."""


def write_srm_run(folder: Path, run_id: str, seed: int, grid: tuple[int, int] = GRID, g0: float = 0.3,
                  kind: str = "srm") -> Path:
    """A finished run of `kind` (grid (ny, nx)) of Poisson histograms of an emitter with g2(0) = g0
    (40 kcounts/s per detector, 1 s dwell), by the host's own RunStore."""
    rng = np.random.default_rng(seed)
    mean = expected_histogram(NV_DEFAULT_SHAPE, g0, singles_base(4e4, 4e4, 1.0))
    n = grid[0] * grid[1]
    start = RunStart(run_id=run_id, seq=0, run_kind=kind, n_pixels=n, grid_shape=np.array(grid), config={})
    store = RunStore.create(run_path(folder, run_id), start)
    store.add(start)
    for i in range(n):
        hist = rng.poisson(mean).astype(np.int64)
        store.add(Pixel(run_id=run_id, seq=i + 1, index=i, ix=i % grid[1], iy=i // grid[1],
                        position=np.array([i % grid[1] * 1e-7, i // grid[1] * 1e-7, 0.0]), dwell_s=1.0,
                        n_a=40_000 + i, n_b=40_000 - i, n_events=int(hist.sum()), hist=hist))
    store.flush()
    store.finalize(RunEnd(run_id=run_id, seq=n + 1, n_pixels=n), {}, {})
    store.close()
    return run_path(folder, run_id)
