"""The web view follows run files while the host writes them (SWMR, read-only, no lock): new rows as
deltas, the run-end maps once the host has finalized the file, which it can do while the view reads;
a malformed or foreign .h5 is listed as unreadable and nothing crashes."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from nvscope.host.web import runfiles
from nvscope.host.web.events import EventRing
from nvscope.host.web.runfiles import open_swmr
from nvscope.host.web.tailer import Tailer


def _step(tailer: Tailer) -> list:
    seq = tailer.ring.last_seq
    tailer.step()
    return tailer.ring.since(seq)


def test_rows_arrive_as_deltas_and_the_run_end_maps_after_the_host_finalized(tmp_path, swmr_writer, monkeypatch):
    monkeypatch.setattr(runfiles, "STATUS_CHECK_S", 0.0)
    ring = EventRing(1000)
    tailer = Tailer(tmp_path, ring, rescan_s=0.0)
    ring.set_state(tailer.state)
    writer = swmr_writer(tmp_path / "srm-test.h5", nx=3, ny=2)
    events = _step(tailer)
    assert [e.type for e in events] == ["run"]
    assert events[0].data["status"] == "running" and events[0].data["n_planned"] == 6

    writer.pixels(2)
    events = _step(tailer)
    px = [e for e in events if e.type == "pixels"]
    assert len(px) == 1 and px[0].data["first"] == 0 and px[0].data["index"] == [0, 1]
    assert px[0].data["ix"] == [0, 1] and px[0].data["iy"] == [0, 0]
    assert np.allclose(px[0].data["pl_cps"], [(100 + 50) / 0.01, (101 + 52) / 0.02])
    assert events[-1].type == "run" and events[-1].data["n_done"] == 2 and events[-1].data["photons"] == 303

    writer.pixels(3)
    writer.g2()
    events = _step(tailer)
    px = next(e for e in events if e.type == "pixels")
    g2 = next(e for e in events if e.type == "g2")
    assert px.data["first"] == 2 and px.data["index"] == [2, 3, 4]  # only the new rows
    assert g2.data["first"] == 0 and np.allclose(g2.data["g2"], 0.1 + 0.01 * np.arange(5))
    pl = np.array([(100 + i + 50 + 2 * i) / (0.01 * (1 + i)) for i in range(5)])
    assert np.allclose(g2.data["G2"], pl**2 * (1 - (0.1 + 0.01 * np.arange(5))))  # G2 = PL^2 (1 - g2(0))
    assert _step(tailer) == []  # nothing new, nothing sent

    # the tailer holds the file open (SWMR, no lock) while the host closes and reopens it to finalize
    assert tailer.files[tmp_path / "srm-test.h5"].f is not None
    writer.pixels(1)
    writer.end("stopped", "stopped by the operator")
    events = _step(tailer)
    types = [e.type for e in events]
    assert "final" in types and types[-1] == "run", types
    assert next(e for e in events if e.type == "pixels").data["first"] == 5
    final = next(e for e in events if e.type == "final").data
    assert final["status"] == "stopped" and final["reason"] == "stopped by the operator"
    with h5py.File(tmp_path / "srm-test.h5", "r", locking=False) as f:
        for name in ("pl_cps", "g2", "G2"):
            stored = f[f"maps/{name}"][()]
            sent = np.array(final["maps"][name], dtype=float)  # None -> NaN
            assert np.array_equal(sent, stored, equal_nan=True), name
    summary = events[-1].data
    assert summary["status"] == "stopped" and summary["n_done"] == 6
    assert _step(tailer) == []  # an ended run is not read again

    snap = ring.snapshot().data  # a page that connects now gets every row and the maps
    run = snap["data"]["srm-test"]
    assert run["columns"]["index"] == list(range(6)) and run["final"]["status"] == "stopped"

    later = Tailer(tmp_path, EventRing(100), rescan_s=0.0)  # a view started after the run ended
    later.step()
    with h5py.File(tmp_path / "srm-test.h5", "r", locking=False) as f:
        took = f.attrs["ended_unix_s"] - f.attrs["created_unix_s"]
    for view in (tailer, later):  # the run's own duration, not the time since it started
        assert view.files[tmp_path / "srm-test.h5"].summary(now=time.time() + 3600)["elapsed_s"] == pytest.approx(took)


def test_a_file_not_in_swmr_mode_yet_is_retried_and_a_bad_one_is_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "OPEN_GRACE_S", 0.0)
    (tmp_path / "junk.h5").write_bytes(b"not an HDF5 file" * 8)
    (tmp_path / "empty.h5").write_bytes(b"")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    ring = EventRing(100)
    tailer = Tailer(tmp_path, ring, rescan_s=0.0)
    ring.set_state(tailer.state)
    tailer.step()
    runs = {r["file"]: r for r in tailer.runs()}
    assert {n: r["status"] for n, r in runs.items()} == {"junk.h5": "unreadable", "empty.h5": "unreadable",
                                                          "foreign.h5": "unreadable"}
    assert "file signature not found" in runs["junk.h5"]["reason"]
    assert "not an nvscope run file" in runs["foreign.h5"]["reason"]
    assert ring.snapshot().data["runs"]  # the snapshot lists them, with their reasons


def test_a_new_file_gets_a_grace_period_before_it_is_called_unreadable(tmp_path):
    (tmp_path / "srm-being-created.h5").write_bytes(b"")  # the host has just created it
    ring = EventRing(100)
    tailer = Tailer(tmp_path, ring, rescan_s=0.0)
    tailer.step()
    assert tailer.runs()[0]["status"] == "opening"


def test_open_swmr_takes_no_lock(tmp_path, swmr_writer):
    writer = swmr_writer(tmp_path / "srm-lock.h5")
    writer.pixels(1)
    with open_swmr(tmp_path / "srm-lock.h5") as f:  # held open across the host's finalize
        writer.end("completed")
        assert f["pixels/index"].shape[0] == 1


def test_nv_mri_lock_and_deer_rows_and_vqns_curves_arrive_as_deltas(tmp_path, swmr_writer):
    ring = EventRing(1000)
    tailer = Tailer(tmp_path, ring, rescan_s=0.0)
    mri = swmr_writer(tmp_path / "mri-test.h5", nx=2, ny=2, kind="mri")
    vqns = swmr_writer(tmp_path / "vqns-test.h5", nx=0, ny=0, kind="vqns")
    _step(tailer)
    mri.lock(3)
    vqns.curve(1, 5)
    events = _step(tailer)
    lock = next(e for e in events if e.type == "lock").data
    deer = next(e for e in events if e.type == "deer").data
    assert lock["first"] == 0 and lock["lock_scan"] == [0, 1, 1] and lock["lock_ix"] == [0, 0, 1]
    assert lock["lock_f_lock_hz"] == [2.87e9, 2.87e9 + 1e3, 2.87e9 + 2e3] and lock["lock_state"] == [0, 1, 2]
    assert deer["deer_n_rf"] == [80, 81, 82] and deer["deer_n_ref"] == [100, 100, 100]
    assert np.allclose(deer["deer_dip"], [0.2, 0.19, 0.18])  # 1 - n_rf / n_ref
    assert np.allclose(lock["lock_detuning_hz"], [0.0, 1e3, 2e3])  # locked minus the retracted tip's
    curves = next(e for e in events if e.type == "curves").data
    assert curves["first"] == 0 and curves["n_pulses"] == [1] and len(curves["t"][0]) == 5
    runs = {r["run_id"]: r for r in tailer.runs()}
    assert runs["mri-test"]["n_done"] == 3 and runs["mri-test"]["photons"] == 3003 + 243 + 300
    assert runs["vqns-test"]["n_done"] == 1 and runs["vqns-test"]["photons"] == 5 * 35

    vqns.curve(2, 8)  # a longer curve: the file's rows widen, the page gets the curve without padding
    mri.lock(1)
    events = _step(tailer)
    curves = next(e for e in events if e.type == "curves").data
    assert curves["first"] == 1 and curves["n_pulses"] == [2] and len(curves["t"][0]) == 8
    assert next(e for e in events if e.type == "lock").data["first"] == 3
    data = tailer.run_data("vqns-test")
    assert [len(t) for t in data["columns"]["t"]] == [5, 8]

    vqns.step(2)  # the loop's step after two curves: the spectrum, its band and the ranking, live
    step = next(e for e in _step(tailer) if e.type == "step").data
    w = np.geomspace(1e4, 1e8, 6)
    assert step["first"] == 0 and step["n_curves"] == [2] and step["lorentzians"] == [2]
    assert np.allclose(step["omega"][0], w) and np.allclose(step["S_fit"][0], 2 * w)  # without the padding
    assert np.allclose(step["S_lo"][0], w) and np.allclose(step["S_hi"][0], 4 * w) and step["ranked"] == [[16, 8]]
    vqns.step(3)
    step = next(e for e in _step(tailer) if e.type == "step").data
    assert step["first"] == 1 and step["ranked"] == [[16, 8, 4]]
