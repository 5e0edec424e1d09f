"""Tip stepping for NV-MRI: the order in which the tip visits its positions, as pure functions of the
grid (docs/physics.md section 2.4; rt/mri.py plays them).

A plane is an nx x ny lateral grid at one apex height (gap); its lines run along x. In raster order
every line is scanned in +x (the tip flies back to the line's start between lines); in serpentine
order every other line runs in -x. A vertical section is a line along x at a fixed y, repeated at
each of its gaps (iy = the gap's index). Every function returns arrays in scan order:
`ix`, `iy` (grid indices), `xyz` (n, 3) apex positions in m (z = the gap), and `line_start` (n,)
bool, True at the first position of each line: the lock's feedforward starts afresh there ("a
reset at each line's fly-back"). Pure numpy; nothing here touches a device.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TipPath(NamedTuple):
    """Tip positions in scan order: plane (n,) index of the plane or section, ix, iy (n,) grid
    indices, xyz (n, 3) apex positions (m), line_start (n,) True at each line's first position."""

    plane: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    xyz: np.ndarray
    line_start: np.ndarray

    def __len__(self) -> int:
        return int(self.ix.shape[0])


def line_order(nx: int, n_lines: int, serpentine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ix, line, line_start) of n_lines lines of nx positions in scan order: every line in +x, or in
    serpentine order every odd line in -x."""
    if nx < 1 or n_lines < 0:
        raise ValueError(f"a scan needs nx >= 1 and n_lines >= 0, got {nx}, {n_lines}")
    ix = np.tile(np.arange(nx, dtype=np.int64), (n_lines, 1))
    if serpentine:
        ix[1::2] = ix[1::2, ::-1]
    line = np.repeat(np.arange(n_lines, dtype=np.int64), nx)
    start = np.zeros((n_lines, nx), dtype=bool)
    start[:, 0] = True
    return ix.reshape(-1), line, start.reshape(-1)


def plane_path(nx: int, ny: int, x0: float, y0: float, step: float, gap: float, serpentine: bool,
               plane: int = 0) -> TipPath:
    """One lateral plane of nx x ny positions from (x0, y0) in steps of `step` (m) at apex height gap (m)."""
    ix, iy, start = line_order(nx, ny, serpentine)
    xyz = np.column_stack([x0 + ix * step, y0 + iy * step, np.full(ix.shape, float(gap))])
    return TipPath(np.full(ix.shape, plane, dtype=np.int64), ix, iy, xyz, start)


def stack_path(nx: int, ny: int, x0: float, y0: float, step: float, gaps, serpentine: bool,
               first_plane: int = 0) -> TipPath:
    """The 3D stack: one plane per gap (m) in the order given, planes numbered from `first_plane`."""
    return concat([plane_path(nx, ny, x0, y0, step, g, serpentine, first_plane + k) for k, g in enumerate(gaps)])


def section_path(nx: int, x0: float, step: float, y: float, gaps, serpentine: bool, plane: int = 0) -> TipPath:
    """A vertical section along x at y (m): one line of nx positions per gap (m), iy the gap's index."""
    gaps = np.asarray(gaps, dtype=np.float64).reshape(-1)
    ix, iy, start = line_order(nx, gaps.size, serpentine)
    xyz = np.column_stack([x0 + ix * step, np.full(ix.shape, float(y)), gaps[iy]])
    return TipPath(np.full(ix.shape, plane, dtype=np.int64), ix, iy, xyz, start)


def concat(paths: list[TipPath]) -> TipPath:
    """Paths one after the other (an empty list: the empty path)."""
    if not paths:
        return TipPath(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)),
                       np.zeros(0, bool))
    return TipPath(*(np.concatenate([getattr(p, f) for p in paths]) for f in TipPath._fields))


__all__ = ["TipPath", "line_order", "plane_path", "stack_path", "section_path", "concat"]
