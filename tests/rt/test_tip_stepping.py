"""rt.kernels.tip_stepping: raster and serpentine orders of a plane, the 3D stack, vertical sections,
and the fly-back marks that reset the lock's feedforward."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.rt.kernels.tip_stepping import concat, line_order, plane_path, section_path, stack_path


def test_serpentine_runs_every_other_line_backwards_and_raster_flies_back():
    ix, line, start = line_order(3, 3, serpentine=True)
    assert ix.tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert line.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.flatnonzero(start).tolist() == [0, 3, 6]
    ix, line, start = line_order(3, 2, serpentine=False)
    assert ix.tolist() == [0, 1, 2, 0, 1, 2] and np.flatnonzero(start).tolist() == [0, 3]
    # serpentine: consecutive positions are always neighbours (no fly-back); raster jumps nx - 1 back
    p = plane_path(5, 4, -2e-9, -1e-9, 1e-9, 20e-9, serpentine=True)
    steps = np.abs(np.diff(p.xyz, axis=0)).sum(axis=1)
    np.testing.assert_allclose(steps, 1e-9, rtol=1e-9)
    r = plane_path(5, 4, -2e-9, -1e-9, 1e-9, 20e-9, serpentine=False)
    assert np.abs(np.diff(r.xyz[:, 0])).max() == pytest.approx(4e-9)


def test_plane_positions_and_every_grid_point_once():
    p = plane_path(4, 3, -1.5e-9, 2e-9, 0.5e-9, 15e-9, serpentine=True, plane=2)
    assert len(p) == 12 and set(p.plane.tolist()) == {2}
    np.testing.assert_allclose(p.xyz[:, 0], -1.5e-9 + 0.5e-9 * p.ix)
    np.testing.assert_allclose(p.xyz[:, 1], 2e-9 + 0.5e-9 * p.iy)
    np.testing.assert_allclose(p.xyz[:, 2], 15e-9)
    assert sorted(zip(p.iy.tolist(), p.ix.tolist())) == [(y, x) for y in range(3) for x in range(4)]


def test_stack_and_sections():
    s = stack_path(3, 2, 0.0, 0.0, 1e-9, [10e-9, 12e-9], serpentine=False, first_plane=1)
    assert len(s) == 12 and s.plane.tolist() == [1] * 6 + [2] * 6
    np.testing.assert_allclose(s.xyz[6:, 2], 12e-9)
    sec = section_path(4, -2e-9, 1e-9, 3e-9, [20e-9, 22e-9, 24e-9], serpentine=True, plane=5)
    assert len(sec) == 12 and sec.iy.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_allclose(sec.xyz[:, 1], 3e-9)
    np.testing.assert_allclose(sec.xyz[:, 2], np.array([20e-9, 22e-9, 24e-9])[sec.iy])
    assert sec.ix[4:8].tolist() == [3, 2, 1, 0] and np.flatnonzero(sec.line_start).tolist() == [0, 4, 8]
    both = concat([s, sec])
    assert len(both) == 24 and both.plane[-1] == 5 and len(concat([])) == 0
