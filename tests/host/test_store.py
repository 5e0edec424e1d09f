"""The run file's layout follows the message declarations: every field of a stored message kind is a
dataset with its dtype and row shape, and a field added to a message gets its dataset."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import h5py
import numpy as np
import pytest

from nvscope.host.store import RunStore, read_coherence, read_deer, read_lock, read_pixels, recover, run_path
from nvscope.proto.histogram import bin_edges_s
from nvscope.proto.messages import Array, Coherence, Deer, Lock, Notice, Pixel, RunEnd, RunStart


def _pixel(seq: int, kind=Pixel, **extra) -> Pixel:
    hist = np.arange(215, dtype=np.int64) % (seq + 2)
    return kind(run_id="run", seq=seq, index=seq - 1, ix=seq - 1, iy=2, position=np.array([seq * 1e-7, 2e-7, -3e-9]),
                dwell_s=0.25 * seq, n_a=100 + seq, n_b=200 + seq, n_events=int(hist.sum()), hist=hist, **extra)


@pytest.fixture
def new_store(tmp_path):
    stores = []

    def make(cls=RunStore) -> RunStore:
        start = RunStart(run_id="run", seq=0, n_pixels=3, grid_shape=np.array([1, 3]))
        stores.append(cls.create(run_path(tmp_path, "run"), start))
        stores[-1].add(start)  # as the daemon does: run_start is message 0
        return stores[-1]
    yield make
    for s in stores:
        s.close()


def test_every_pixel_field_lands_in_the_file_with_its_dtype(new_store):
    store = new_store()
    msgs = [_pixel(1), _pixel(2)]
    for msg in msgs:
        store.add(msg)
    store.flush()
    assert store.n_pixels == 2
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:
        stored = set(f["pixels"]) - {"g2", "g2_std", "g2_reason", "g2_latency_s"}
        names = [fl.name for fl in dataclasses.fields(Pixel) if fl.name != "run_id"]
        assert stored == set(names)
        for name in names:
            values = [np.asarray(getattr(m, name)) for m in msgs]
            ds = f["pixels"][name]
            if values[0].dtype.kind == "U":  # text: UTF-8 bytes in a fixed-width column
                assert ds.dtype == np.dtype("S256") and ds.shape == (2,), name
                assert [v.decode() for v in ds[()]] == [str(v) for v in values], name
                continue
            assert ds.dtype == values[0].dtype, name  # int -> int64, float -> float64, arrays as declared
            assert ds.shape == (2, *values[0].shape), name
            assert np.array_equal(ds[()], np.stack(values)), name
        px = read_pixels(f, 1)
    assert set(px) == set(names) and px["n_events"].tolist() == [msgs[1].n_events]


def test_coherence_curves_are_nan_padded_rows_widened_as_needed(new_store):
    store = new_store()
    short = Coherence(run_id="run", seq=1, n_pulses=2, t=np.array([1e-6, 2e-6, 3e-6]), coherence=np.array([0.9, 0.8, 0.7]),
                      sigma=np.full(3, 0.01), repetitions=100, pi_s=4e-8, pi_half_s=2e-8,
                      signal_counts=np.array([310.0, 290.0, 280.0]), bright_counts=np.array([330.0, 320.0, 331.0]),
                      dark_counts=np.array([80.0, 79.0, 83.0]), dark_repetitions=33)
    long = Coherence(run_id="run", seq=2, n_pulses=0, t=np.linspace(1e-7, 1e-5, 70), coherence=np.linspace(1, 0, 70),
                     sigma=np.full(70, 0.02), repetitions=50)
    store.add(short)
    store.add(long)
    store.flush()
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:
        c = read_coherence(f)
        assert f["coherence/t"].dtype == np.float64 and f["coherence/n_pulses"].dtype == np.int64
    assert set(c) == {"seq", "n_pulses", "t", "coherence", "sigma", "repetitions", "pi_s", "pi_half_s",
                      "signal_counts", "bright_counts", "dark_counts", "dark_repetitions"}
    assert c["seq"].tolist() == [1, 2] and c["n_pulses"].tolist() == [2, 0] and c["repetitions"].tolist() == [100, 50]
    assert c["pi_s"].tolist() == [4e-8, 0.0] and c["dark_repetitions"].tolist() == [33, 0]
    for name in ("signal_counts", "bright_counts", "dark_counts"):  # the raw photons: kept where sent
        assert np.array_equal(c[name][0, :3], getattr(short, name)) and np.all(np.isnan(c[name][1]))
    for name in ("t", "coherence", "sigma"):
        assert c[name].shape == (2, 70)
        assert np.array_equal(c[name][0, :3], getattr(short, name)) and np.all(np.isnan(c[name][0, 3:]))
        assert np.array_equal(c[name][1], getattr(long, name))


@dataclass(frozen=True)
class _TaggedPixel(Pixel):
    """A pixel that a future schema might send: two fields more."""

    kind: ClassVar[str] = "tagged_pixel"
    temperature_k: float = 0.0
    trace: Annotated[np.ndarray, Array("<f8", (-1,))] = field(default_factory=lambda: np.zeros(0))


class _TaggedStore(RunStore):
    tables = {**RunStore.tables, "pixels": _TaggedPixel}


def test_a_field_added_to_a_message_gets_its_dataset(new_store):
    store = new_store(_TaggedStore)
    store.add(_pixel(1, _TaggedPixel, temperature_k=4.2, trace=np.array([1.0, 2.0])))
    store.add(_pixel(2, _TaggedPixel, temperature_k=300.0, trace=np.arange(80.0)))
    store.flush()
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:
        g = f["pixels"]
        assert g["temperature_k"].dtype == np.float64 and g["temperature_k"][()].tolist() == [4.2, 300.0]
        trace = g["trace"][()]
        assert g["hist"].shape == (2, 215) and g["n_events"][1] == _pixel(2).n_events
    assert trace.shape == (2, 80) and trace[0, :2].tolist() == [1.0, 2.0] and np.all(np.isnan(trace[0, 2:]))
    assert np.array_equal(trace[1], np.arange(80.0))


def test_reopened_store_appends_after_the_last_flushed_row(new_store):
    store = new_store()
    store.add(_pixel(1))
    store.flush()
    store.close()
    again = RunStore.reopen(store.path)
    try:
        assert again.last_seq == 1 and again.n_pixels == 1 and again.n_g2 == 0
        again.add(_pixel(3))  # seq 2 never came: recorded as a gap
        again.flush()
        assert again.f["gaps"][()].tolist() == [[2, 2]]
        assert again.f["pixels/seq"][()].tolist() == [1, 3]
    finally:
        again.close()


def _lock(seq: int, index: int, **kw) -> Lock:
    return Lock(run_id="run", seq=seq, index=index, scan=kw.pop("scan", 1), plane=kw.pop("plane", 0), ix=index % 3,
                iy=index // 3, position=np.array([index * 1e-9, -2e-9, 20e-9]), f_lock_hz=5.539e9 + index * 1e6,
                f_sigma_hz=kw.pop("f_sigma_hz", 2e4 + index), state=kw.pop("state", 0), cycles=40 + index,
                photons=10_000 + index, **kw)


def test_lock_and_deer_rows_round_trip_field_by_field(new_store):
    store = new_store()
    msgs = [_lock(1, 0, scan=0), _lock(2, 1), _lock(3, 2, scan=2, state=2, f_sigma_hz=float("inf")),
            Deer(run_id="run", seq=4, index=2, scan=2, plane=1, ix=2, iy=0, position=np.array([2e-9, -2e-9, 15e-9]),
                 f_rf_hz=8.41e9, tau_s=2e-6, shots=180_000, n_rf=5100, n_ref=5400)]
    for msg in msgs:
        store.add(msg)
    store.flush()
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:
        lock, deer = read_lock(f), read_deer(f)
        assert f["lock/f_lock_hz"].dtype == np.float64 and f["lock/state"].dtype == np.int64
        assert f["lock/position"].shape == (3, 3) and f["deer/position"].shape == (1, 3)
    for table, rows in ((lock, msgs[:3]), (deer, msgs[3:])):
        names = [fl.name for fl in dataclasses.fields(type(rows[0])) if fl.name != "run_id"]
        assert set(table) == set(names)
        for name in names:
            assert np.array_equal(table[name], np.stack([np.asarray(getattr(m, name)) for m in rows])), name
    assert lock["scan"].tolist() == [0, 1, 2] and np.isinf(lock["f_sigma_hz"][2])
    assert deer["n_rf"].tolist() == [5100] and deer["index"].tolist() == [2]


def test_a_file_of_an_older_host_gets_the_lock_and_deer_tables_when_reopened(new_store):
    store = new_store()
    store.add(_pixel(1))
    store.flush()
    store.close()
    with h5py.File(store.path, "r+", libver="latest") as f:  # as an older host wrote it
        del f["lock"], f["deer"]
        assert read_lock(f)["f_lock_hz"].shape == (0,) and read_deer(f)["position"].shape == (0, 3)
    again = RunStore.reopen(store.path)
    try:
        again.add(_lock(2, 0, scan=0))
        again.flush()
        assert again.f["lock/seq"][()].tolist() == [2] and again.f["pixels/seq"][()].tolist() == [1]
    finally:
        again.close()


def test_a_run_with_gaps_is_never_completed(new_store):
    """The rig may say `completed`, but a run whose file lacks messages is `failed`, and says which."""
    from nvscope.proto.messages import RunEnd

    store = new_store()
    store.add(_pixel(1))
    store.add(_pixel(4))  # 2 and 3 never came
    store.flush()
    store.finalize(RunEnd(run_id="run", seq=5, exit_status="completed", n_pixels=4), {}, {})
    assert store.f.attrs["exit_status"] == "failed"
    assert store.f.attrs["reason"].startswith("2 messages never arrived (seq ranges [[2, 3]])")


def test_notices_are_stored_as_utf8_text_and_duplicates_are_counted(new_store):
    store = new_store()
    long = "µ-wave (TCPIP::x): no reply " + "x" * 400
    store.add(Notice(run_id="run", seq=1, source="microwave", text=long, retry=2))
    store.duplicates += 3
    store.flush()
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:
        text = f["notices/text"][0].decode()
        assert f["notices/source"][0].decode() == "microwave" and f["notices/retry"][()].tolist() == [2]
        assert text == long.encode()[:256].decode() and f["duplicates"][()].tolist() == [3]


class _FailingColumns(RunStore):
    """A store whose `dwell_s` column cannot be written (a full disk, in the middle of a batch)."""

    def flush(self):
        import nvscope.host.store as mod
        real = mod._append_rows

        def half(columns, msgs, grown):
            for name, ds in columns.items():
                grown.append((ds, ds.shape[0]))
                if name == "dwell_s":
                    raise OSError(28, "No space left on device")
                ds.resize(ds.shape[0] + len(msgs), axis=0)
        mod._append_rows = half
        try:
            super().flush()
        finally:
            mod._append_rows = real


def test_a_batch_that_cannot_be_written_leaves_nothing_of_itself_and_is_written_later(new_store):
    store = new_store(_FailingColumns)
    store.add(_pixel(2))  # seq 2 after 0: also a gap [1, 1]
    store.add(_pixel(3))
    with pytest.raises(OSError, match="No space left"):
        store.flush()
    assert store.f["gaps"].shape[0] == 0 and store.f["stored_seq"][0] == -1
    assert {store.f["pixels"][name].shape[0] for name in ("seq", "hist", "index")} == {0}
    RunStore.flush(store)  # space is back: the same batch is written whole
    assert store.f["pixels/seq"][()].tolist() == [2, 3] and store.f["gaps"][()].tolist() == [[1, 1]]
    assert store.f["stored_seq"][0] == 3


# --- the histogram's axis, how it was acquired, units ------------------------------------------------


def test_the_histogram_has_its_delay_axis_acquisition_and_units(tmp_path):
    from nvscope.host.store import unit_of
    from nvscope.proto.histogram import N_BINS, bin_edges_s
    from nvscope.proto.records import record_fields

    scan = {"histogram_mode": "startstop", "tac_dead_s": 2.2e-8, "delay_a_s": 1.5e-9, "delay_b_s": -3e-9, "nx": 2}
    start = RunStart(run_id="run", seq=0, n_pixels=3, grid_shape=np.array([1, 3]), config={"scan": scan})
    store = RunStore.create(run_path(tmp_path, "run"), start)
    try:
        store.add(start)
        store.add(_pixel(1, histogram_mode="startstop", tac_dead_s=2.2e-8, n_starts=150))
        store.flush()
        with h5py.File(store.path, "r", libver="latest", swmr=True) as f:  # a reader while the run streams
            assert f.attrs["histogram_mode"] == "startstop"
            for key in ("tac_dead_s", "delay_a_s", "delay_b_s"):
                assert f.attrs[key] == scan[key], key
            edges = f["delay_edges_s"]
            assert np.array_equal(edges[()], bin_edges_s()) and edges.attrs["units"] == "s"
            assert edges.shape == (N_BINS + 1,) and edges[0] == -250e-9 and abs(edges[-1] - 250e-9) < 1e-21
            hist = f["pixels/hist"]
            centres = f[hist.attrs["delay_centres"]]
            assert centres.name == "/delay_s" and centres.attrs["units"] == "s" and centres.shape == (N_BINS,)
            assert np.allclose(centres[()], (edges[1:] + edges[:-1]) / 2, rtol=0, atol=1e-21)
            assert f[hist.attrs["delay_edges"]] == edges and hist.attrs["axes"] == "pixel, delay"
            numeric = [n for n, (dtype, _) in record_fields(Pixel).items() if np.dtype(dtype).kind in "iuf"]
            for name in numeric + ["g2", "g2_std", "g2_reason", "g2_latency_s"]:
                assert f["pixels"][name].attrs["units"] == unit_of(name, "pixels") is not None, name
            assert f["pixels/position"].attrs["units"] == "m" and f["pixels/dwell_s"].attrs["units"] == "s"
            assert f["pixels/hist"].attrs["units"] == "counts" and f["pixels/tac_dead_s"].attrs["units"] == "s"
            assert "units" not in f["pixels/histogram_mode"].attrs  # text
            assert f["pixels/n_starts"][()].tolist() == [150]
        store.finalize(RunEnd(run_id="run", seq=2, exit_status="completed", n_pixels=1),
                       {"maps/pl_cps": np.ones((1, 3)), "maps/dwell_s": np.ones((1, 3)), "maps/g2": np.ones((1, 3))},
                       {})
        f = store.f
        assert f["maps/pl_cps"].attrs["units"] == "counts/s" and f["maps/dwell_s"].attrs["units"] == "s"
        assert "units" not in f["maps/g2"].attrs
        assert f.attrs["histogram_mode"] == "startstop"
    finally:
        store.close()


def test_a_run_without_scan_config_and_an_older_or_recovered_file_get_the_defaults(new_store):
    store = new_store()  # run_start without a config: the defaults
    store.add(_pixel(1))
    store.flush()
    assert store.f.attrs["histogram_mode"] == "allpairs" and store.f.attrs["delay_b_s"] == 0.0
    store.close()
    with h5py.File(store.path, "r+", libver="latest") as f:  # as an older host wrote it
        for key in ("histogram_mode", "tac_dead_s", "delay_a_s", "delay_b_s"):
            del f.attrs[key]
        f.attrs["config"] = '{"scan": {"histogram_mode": "startstop", "tac_dead_s": 1e-8}}'
        del f["pixels/n_a"].attrs["units"]
        del f["delay_s"], f["delay_edges_s"]
    again = RunStore.reopen(store.path)
    try:
        again.add(_pixel(2))
        again.flush()
        f = again.f
        assert (f.attrs["histogram_mode"], f.attrs["tac_dead_s"], f.attrs["delay_a_s"]) == ("startstop", 1e-8, 0.0)
        assert f["delay_edges_s"].shape == (216,) and f[f["pixels/hist"].attrs["delay_centres"]].shape == (215,)
        assert f["pixels/n_a"].attrs["units"] == "counts" and f["pixels/seq"][()].tolist() == [1, 2]
    finally:
        again.close()
    recover(store.path)  # a rewritten file keeps the axis and its attributes
    with h5py.File(store.path, "r") as f:
        assert np.array_equal(f[f["pixels/hist"].attrs["delay_edges"]][()], bin_edges_s())
        assert f.attrs["histogram_mode"] == "startstop" and f["pixels/hist"].attrs["units"] == "counts"


def test_a_reader_holding_the_file_open_does_not_stop_the_run_end(new_store, tmp_path):
    """A user's reader (another process, HDF5's default file lock) open across the run end: the results
    are still written (the host's reopen for writing failed with 'unable to lock file' before)."""
    import subprocess
    import sys

    store = new_store()
    store.add(_pixel(1))
    store.flush()
    reader = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time\n"
         f"f = h5py.File({str(store.path)!r}, 'r', libver='latest', swmr=True)\n"
         "print(f['pixels/seq'].shape[0], flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "1"  # open, holding its lock
        store.finalize(RunEnd(run_id="run", seq=2, exit_status="completed", n_pixels=1),
                       {"maps/x": np.arange(3.0)}, {"note": "written"})
    finally:
        reader.communicate("", timeout=30)
    assert store.f.attrs["exit_status"] == "completed" and store.f["maps/x"][()].tolist() == [0.0, 1.0, 2.0]
    assert store.f.attrs["created_unix_s"] <= store.f.attrs["ended_unix_s"] <= time.time()


def test_a_vqns_run_file_takes_its_loop_steps_while_it_streams(tmp_path):
    """vqns_live/: one row per step, written while the file is in SWMR mode, rows NaN-padded to the widest;
    a VQNS file of an older host gets the group when reopened; other kinds have none."""
    from nvscope.host.store import VQNS_LIVE

    start = RunStart(run_id="vq", seq=0, run_kind="vqns", n_pixels=0, grid_shape=np.array([0, 0]))
    store = RunStore.create(run_path(tmp_path, "vq"), start)
    store.add(start)
    omega = np.geomspace(1e4, 1e8, 5)
    for k, ranked in ((2, [8, 4]), (3, [16, 8, 4])):
        store.add_vqns_step({"n_curves": k, "lorentzians": 2, "best_rate": 1e-3 * k, "omega": omega,
                             "S_fit": omega * k, "S_lo": omega, "S_hi": omega * 9, "ranked": ranked})
        store.flush(durable=False)
    with h5py.File(store.path, "r", libver="latest", swmr=True) as f:  # a reader, while the run streams
        g = f[VQNS_LIVE]
        assert g["n_curves"][()].tolist() == [2, 3] and g["best_rate"][1] == pytest.approx(3e-3)
        finite = lambda row: row[np.isfinite(row)]  # noqa: E731  (rows are NaN-padded)
        assert np.array_equal(finite(g["S_fit"][1]), omega * 3) and g["S_fit"].attrs["units"] == "rad^2/s"
        assert finite(g["ranked"][0]).tolist() == [8, 4] and finite(g["ranked"][1]).tolist() == [16, 8, 4]
    store.close()
    with h5py.File(store.path, "r+") as f:  # as an older host left it
        del f[VQNS_LIVE]
    again = RunStore.reopen(store.path)
    assert again.f[f"{VQNS_LIVE}/n_curves"].shape == (0,)
    again.close()
    other = RunStore.create(run_path(tmp_path, "sr"), RunStart(run_id="sr", seq=0, run_kind="srm", n_pixels=1,
                                                              grid_shape=np.array([1, 1])))
    assert VQNS_LIVE not in other.f
    other.close()


def test_a_message_counted_but_never_written_is_taken_again_after_a_crash(tmp_path):
    """A host killed in a flush can leave stored_seq ahead of the rows (seq 3's row missing, 4's there):
    reopened, the file is cut back to before the hole, so the rig's replay stores 3 and 4 again, once,
    instead of dropping 3 as a duplicate without a trace."""
    start = RunStart(run_id="run", seq=0, n_pixels=4, grid_shape=np.array([1, 4]))
    store = RunStore.create(run_path(tmp_path, "run"), start)
    store.add(start)
    for seq in (1, 2, 4):
        store.add(_pixel(seq))
    store._gaps.clear()  # as if 3 had been counted: no gap
    store.last_seq = 4
    store.flush()
    store.close()
    again = RunStore.reopen(run_path(tmp_path, "run"))
    assert again.last_seq == 2 and again.f["pixels/seq"][()].tolist() == [1, 2]
    assert again.f["pixels/hist"].shape[0] == 2 and again.f["pixels/g2"].shape[0] <= 2
    for seq in (3, 4):  # the replay
        again.add(_pixel(seq))
    again.flush()
    assert again.f["pixels/seq"][()].tolist() == [1, 2, 3, 4] and again.f["gaps"].shape[0] == 0
    again.close()
    intact = RunStore.reopen(run_path(tmp_path, "run"))  # nothing missing: nothing cut
    assert intact.last_seq == 4 and intact.f["pixels/seq"].shape[0] == 4
    intact.close()
