"""One HDF5 file per run, written as messages arrive and readable while the run goes on.

The file is opened in HDF5's single-writer/multiple-reader mode (SWMR) while the run streams, so a
reader sees a consistent file at every flush and a host that dies leaves a complete file up to its
last acknowledgement. At run end it is reopened normally to add the results and the exit status.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np

from nvscope.proto.histogram import HISTOGRAM_MODES, N_BINS, bin_edges_s
from nvscope.proto.messages import Coherence, Deer, Lock, Message, Notice, Pixel, RunEnd, RunStart
from nvscope.proto.records import record_fields
from nvscope.proto.version import software_version

log = logging.getLogger(__name__)

PIXEL_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = record_fields(Pixel)
"""Per-pixel datasets under /pixels: name -> (dtype, shape of one row), derived from `Pixel`."""

PIXEL_G2_FIELDS: dict[str, str] = {"g2": "<f8", "g2_std": "<f8", "g2_reason": "|i1", "g2_latency_s": "<f8"}
"""The host's on-line g2(0) under /pixels, row for row with the pixels: g2(0), its std, the reason
code where they are NaN (table in the `g2_reasons` attribute) and the seconds from the pixel's
arrival to its g2's writing (NaN: estimated by a later host after a restart). Written after the
pixels are acknowledged, so they may lag /pixels/seq by the last batch until the next one."""

PIXEL_UNITS: dict[str, str] = {
    "seq": "1", "index": "1", "ix": "1", "iy": "1", "position": "m", "dwell_s": "s", "n_a": "counts",
    "n_b": "counts", "n_events": "counts", "hist": "counts", "lost_tags": "counts", "tac_dead_s": "s",
    "n_starts": "counts", "g2": "1", "g2_std": "1", "g2_reason": "1", "g2_latency_s": "s"}
"""The `units` attribute of each numeric dataset under /pixels ("1": a number without unit, an index or
a code; text columns have none). A numeric pixel field missing here gets its unit from its name's
suffix (`_s`, `_m`, `_hz`, `_cps`) or the tests fail."""

UNIT_SUFFIXES: dict[str, str] = {"_s": "s", "_m": "m", "_hz": "Hz", "_cps": "counts/s"}
"""The unit a dataset's name says by its suffix (any table, and the run-end maps)."""

HISTOGRAM_ATTRS: dict[str, object] = {"histogram_mode": "allpairs", "tac_dead_s": 0.0, "delay_a_s": 0.0,
                                      "delay_b_s": 0.0}
"""How `pixels/hist` is acquired, copied as file attributes from the run's config `scan` table (these
defaults where it has none): the mode, the converter's dead time (s) and each detector's delay (s;
the rig bins tau = (t_B - delay_b_s) - (t_A - delay_a_s)). Each pixel row also carries its own
`histogram_mode`, `tac_dead_s` and `n_starts`."""

DELAY_EDGES = "delay_edges_s"
DELAY_CENTRES = "delay_s"
"""The delay axis of `pixels/hist` (s): its N_BINS + 1 bin edges and N_BINS centres, named by the
histogram's `delay_edges` and `delay_centres` attributes."""

COHERENCE_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = record_fields(Coherence)
"""Per-curve datasets under /coherence, derived from `Coherence`: scalars, and the curves (t, C, sigma)
as rows padded with NaN (widened as needed)."""

LOCK_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = record_fields(Lock)
"""Per-tip-position datasets under /lock (NV-MRI), derived from `Lock`: one row per lock message."""

DEER_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = record_fields(Deer)
"""Per-tip-position datasets under /deer (NV-MRI), derived from `Deer`: one row per DEER message."""

CURVE_CHUNK = (16, 64)
"""Chunk (rows, columns) of a NaN-padded row dataset; also its initial width."""


def run_path(out_dir: Path, run_id: str) -> Path:
    """Where the file of run `run_id` lives."""
    return Path(out_dir) / f"{run_id}.h5"


class RunStore:
    """The open file of one run: append messages in sequence, flush, finalize."""

    tables: ClassVar[dict[str, type[Message]]] = {"pixels": Pixel, "coherence": Coherence, "lock": Lock, "deer": Deer,
                                                  "notices": Notice}
    """The stored message kinds: group name -> message class, one dataset per `record_fields` column."""

    def __init__(self, path: Path, f: h5py.File):
        self.path = path
        self.f = f
        self.last_seq = int(f["stored_seq"][0])
        self.duplicates = int(f["duplicates"][0]) if "duplicates" in f else 0
        """Copies of stored messages received again and dropped (replays), over every host of the run."""
        self.finished = f.attrs["exit_status"] != "running"
        self._columns: dict[str, dict[str, h5py.Dataset]] = {}  # open dataset handles per table (a lookup costs ~1 ms)
        self._rows: dict[str, list[Message]] = {}  # added, not yet written: by table, in order
        self._gaps: list[tuple[int, int]] = []  # found, not yet written

    @classmethod
    def create(cls, path: Path, start: RunStart, g2_attrs: dict[str, object] | None = None) -> RunStore:
        """A new run file from its run_start message (config, versions, seed as attributes);
        `g2_attrs`: how the on-line g2 is computed (estimator, reason table), as attributes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(path, "w", libver="latest")
        a = f.attrs
        a["run_id"], a["run_kind"] = start.run_id, start.run_kind
        a["config"] = json.dumps(start.config, sort_keys=True)
        a["rt_version"], a["host_version"] = start.version, software_version()
        a["seed"], a["n_pixels"] = start.seed, start.n_pixels
        a["grid_shape"] = np.asarray(start.grid_shape)
        a["created_unix_s"] = time.time()
        a["exit_status"], a["reason"] = "running", ""
        f.create_dataset("stored_seq", data=np.array([start.seq - 1], dtype="<i8"))  # run_start is added next
        f.create_dataset("gaps", shape=(0, 2), maxshape=(None, 2), dtype="<i8", chunks=(64, 2))
        f.create_dataset("duplicates", data=np.zeros(1, dtype="<i8"))
        for group, kind in cls.tables.items():
            _create_table(f.create_group(group), kind)
        _prepare_pixel_g2(f, g2_attrs or {})
        _prepare_histogram_axis(f)
        _prepare_vqns_steps(f)
        f.swmr_mode = True
        f.flush()
        return cls(path, f)

    @classmethod
    def reopen(cls, path: Path, g2_attrs: dict[str, object] | None = None) -> RunStore:
        """Resume writing a run file after a host restart (recovering it if that host was killed);
        `g2_attrs` as in `create` (a file written by an older host gets the on-line g2 datasets)."""
        try:
            f = open_for_writing(path)
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
            recover(path)
            f = open_for_writing(path)
        if f.attrs["exit_status"] == "running":
            _cut_back_to_first_hole(f, tuple(cls.tables))
        store = cls(path, f)
        if not store.finished:
            for group, kind in cls.tables.items():  # a file of an older host lacks the newer tables
                if group not in f:
                    _create_table(f.create_group(group), kind)
            if "duplicates" not in f:
                f.create_dataset("duplicates", data=np.zeros(1, dtype="<i8"))
            _prepare_pixel_g2(f, g2_attrs or {})  # SWMR allows no new dataset or attribute after this
            _prepare_histogram_axis(f)
            _prepare_vqns_steps(f)
            f.swmr_mode = True
        return store

    @property
    def n_pixels(self) -> int:
        """Pixels stored so far (added: written by the next flush)."""
        return int(self.f["pixels/seq"].shape[0]) + len(self._rows.get("pixels", ()))

    @property
    def n_g2(self) -> int:
        """Pixels whose on-line g2 is stored (the first `n_g2` pixel rows)."""
        return int(self.f["pixels/g2"].shape[0]) if "g2" in self.f["pixels"] else 0

    def add_g2(self, g2: np.ndarray, g2_std: np.ndarray, reason: np.ndarray, latency_s: np.ndarray) -> None:
        """Append the on-line g2 of the next pixel rows without one (flush follows)."""
        n, k = self.n_g2, len(g2)
        if n + k > self.n_pixels:
            raise ValueError(f"{self.path.name}: g2 for pixel rows {n}..{n + k - 1}, but only {self.n_pixels} stored")
        g = self.f["pixels"]
        for name, values in (("g2", g2), ("g2_std", g2_std), ("g2_reason", reason), ("g2_latency_s", latency_s)):
            g[name].resize(n + k, axis=0)
            g[name][n:] = values

    def add_vqns_step(self, step: dict[str, np.ndarray | float]) -> None:
        """Append one step of a VQNS run's loop to `vqns_live/` (VQNS_STEP_FIELDS; flush follows), so that a
        reader sees the spectrum, its band and the ranking after each curve, not only at run end."""
        g = self.f[VQNS_LIVE]
        for name in VQNS_STEP_FIELDS:
            ds, value = g[name], np.asarray(step[name], dtype=float)
            n = ds.shape[0]
            if ds.ndim == 2:  # a row of any width, NaN-padded
                row = np.full(max(ds.shape[1], value.size), np.nan)
                row[: value.size] = value
                ds.resize((n + 1, row.size))
                ds[n] = row
            else:
                ds.resize(n + 1, axis=0)
                ds[n] = value

    def add(self, msg: Message) -> None:
        """Add one data message that follows `last_seq` (a jump is recorded as a gap and reported); it is
        written with the batch at the next `flush`."""
        group = next((g for g, kind in self.tables.items() if isinstance(msg, kind)), None)
        if group is not None:
            self._rows.setdefault(group, []).append(msg)
        elif not isinstance(msg, (RunStart, RunEnd)):  # their content lives in the attributes
            log.warning("run %s: no storage for message kind %s (seq %d)", msg.run_id, msg.kind, msg.seq)
        if msg.seq > self.last_seq + 1:
            self._gaps.append((self.last_seq + 1, msg.seq - 1))
            log.error("run %s: messages %d..%d never arrived (gap recorded in %s)",
                      msg.run_id, self.last_seq + 1, msg.seq - 1, self.path.name)
        self.last_seq = msg.seq

    def flush(self, durable: bool = True) -> None:
        """Write what was added (one block per column and table) and flush it for readers; `durable`:
        then make it durable, to the disk (fsync: a power cut keeps it; the ack follows). All or nothing:
        a write that fails (a full disk) leaves none of the batch's rows in the file, keeps them for the
        next flush, and raises."""
        self._write_rows()
        self.f["stored_seq"][0] = self.last_seq
        self.f["duplicates"][0] = self.duplicates
        self.f.flush()
        if durable:
            os.fsync(self.f.id.get_vfd_handle())

    def _write_rows(self) -> None:
        if not self._rows and not self._gaps:
            return
        grown: list[tuple[h5py.Dataset, int]] = []  # every dataset resized, with its length before
        try:
            for group, msgs in self._rows.items():
                columns = self._columns.get(group)
                if columns is None:
                    columns = self._columns[group] = {name: self.f[group][name]
                                                      for name in record_fields(self.tables[group])}
                _append_rows(columns, msgs, grown)
            if self._gaps:
                gaps = self.f["gaps"]
                grown.append((gaps, gaps.shape[0]))
                gaps.resize(gaps.shape[0] + len(self._gaps), axis=0)
                gaps[-len(self._gaps):] = self._gaps
        except Exception:
            for ds, n in grown:  # cut back: no part of the batch stays
                if ds.shape[0] > n:
                    ds.resize(n, axis=0)
            raise
        self._rows, self._gaps = {}, []

    def finalize(self, end: RunEnd, results: dict[str, np.ndarray], attrs: dict[str, object]) -> None:
        """Close the streaming file and add the results, the exit status and its reason."""
        self._write_rows()
        self.f.close()
        self._columns.clear()
        with open_for_writing(self.path) as f:
            f["stored_seq"][0] = end.seq
            if "duplicates" in f:
                f["duplicates"][0] = self.duplicates
            status, reason = end.exit_status, end.reason
            gaps = f["gaps"][()]
            if len(gaps) and status == "completed":  # messages never arrived: the run is not complete
                missing = int((gaps[:, 1] - gaps[:, 0] + 1).sum())
                status = "failed"
                reason = (f"{missing} messages never arrived (seq ranges {gaps.tolist()}); the rig reported the "
                          f"run completed")
            f.attrs["exit_status"], f.attrs["reason"] = status, reason
            f.attrs["n_pixels_done"] = end.n_pixels
            f.attrs["ended_unix_s"] = time.time()
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, arr in results.items():
                if name in f:
                    del f[name]
                ds = f.create_dataset(name, data=arr)
                unit = unit_of(name)
                if unit is not None:
                    ds.attrs["units"] = unit
        fd = os.open(self.path, os.O_RDONLY)  # the results and exit status reach the disk before the ack
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.f = h5py.File(self.path, "r", libver="latest")
        self.last_seq, self.finished = end.seq, True

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self.f.id.valid:
            self.f.close()


def unit_of(name: str, table: str = "") -> str | None:
    """The `units` attribute of dataset `name` (its last path part) of `table` ("pixels": PIXEL_UNITS
    first), from its name's suffix otherwise; None when neither says."""
    leaf = name.rsplit("/", 1)[-1]
    if table == "pixels" and leaf in PIXEL_UNITS:
        return PIXEL_UNITS[leaf]
    return next((u for suffix, u in UNIT_SUFFIXES.items() if leaf.endswith(suffix)), None)


def _set_units(ds: h5py.Dataset, table: str) -> None:
    unit = unit_of(ds.name, table)
    if unit is not None and ds.dtype.kind in "iuf" and "units" not in ds.attrs:
        ds.attrs["units"] = unit


def _create_table(g: h5py.Group, kind: type[Message]) -> None:
    """One empty, growable dataset per column of `kind`'s rows (`record_fields`), with its `units`."""
    table = g.name.lstrip("/")
    for name, (dtype, row) in record_fields(kind).items():
        if row == (-1,):  # a row of any width, NaN-padded
            ds = g.create_dataset(name, shape=(0, CURVE_CHUNK[1]), maxshape=(None, None), dtype=dtype,
                                  chunks=CURVE_CHUNK, fillvalue=np.nan)
        else:
            chunk_rows = max(1, min(256, 65536 // (np.dtype(dtype).itemsize * int(np.prod(row)))))
            ds = g.create_dataset(name, shape=(0, *row), maxshape=(None, *row), dtype=dtype,
                                  chunks=(chunk_rows, *row))
        _set_units(ds, table)


def _prepare_histogram_axis(f: h5py.File) -> None:
    """The delay axis of `pixels/hist` and how it is acquired (HISTOGRAM_ATTRS from the config's `scan`
    table), and `units` on every numeric pixel column, where the file lacks them (before SWMR starts)."""
    try:
        scan = json.loads(f.attrs.get("config", "{}")).get("scan") or {}
    except (ValueError, AttributeError):  # a config that is not a JSON table: the defaults
        scan = {}
    for key, default in HISTOGRAM_ATTRS.items():
        if key not in f.attrs:
            value = scan.get(key, default) if isinstance(scan, dict) else default
            f.attrs[key] = str(value) if key == "histogram_mode" else float(value)
    if f.attrs["histogram_mode"] not in HISTOGRAM_MODES:
        log.warning("%s: the config's histogram_mode %r is none of %s", f.filename, f.attrs["histogram_mode"],
                    HISTOGRAM_MODES)
    edges = bin_edges_s()
    if DELAY_EDGES not in f:
        ds = f.create_dataset(DELAY_EDGES, data=edges)
        ds.attrs["units"] = "s"
        ds.attrs["description"] = (f"the {N_BINS + 1} bin edges of pixels/hist's delay axis, "
                                   "tau = (t_B - delay_b_s) - (t_A - delay_a_s)")
    if DELAY_CENTRES not in f:
        ds = f.create_dataset(DELAY_CENTRES, data=(edges[:-1] + edges[1:]) / 2)
        ds.attrs["units"] = "s"
        ds.attrs["description"] = f"the {N_BINS} bin centres of pixels/hist's delay axis"
    hist = f["pixels/hist"]  # named, not attached as a dimension scale: `recover` copies by name, not by reference
    hist.attrs.setdefault("axes", "pixel, delay")
    hist.attrs.setdefault("delay_edges", f"/{DELAY_EDGES}")
    hist.attrs.setdefault("delay_centres", f"/{DELAY_CENTRES}")
    for name in f["pixels"]:
        _set_units(f["pixels"][name], "pixels")


def _append_rows(columns: dict[str, h5py.Dataset], msgs: list[Message],
                 grown: list[tuple[h5py.Dataset, int]]) -> None:
    """Append `msgs` as the next rows of their table's `columns`: one resize and one write per column
    (a variable-length row widens its dataset as needed); each dataset resized is noted in `grown`."""
    n, k = columns["seq"].shape[0], len(msgs)
    for name, ds in columns.items():
        values = [getattr(m, name) for m in msgs]
        grown.append((ds, n))
        if ds.dtype.kind == "S":  # text, UTF-8, cut to the column's width
            block = np.array([v.encode()[: ds.dtype.itemsize] for v in values], dtype=ds.dtype)
            ds.resize(n + k, axis=0)
        elif ds.ndim == 2 and ds.maxshape[1] is None:  # rows of any width, NaN-padded
            width = max(ds.shape[1], *(len(v) for v in values))
            block = np.full((k, width), np.nan)
            for row, v in zip(block, values):
                row[: len(v)] = v
            ds.resize((n + k, width))
        else:
            block = np.asarray(values, dtype=ds.dtype)
            ds.resize(n + k, axis=0)
        ds[n:n + k] = block

VQNS_LIVE = "vqns_live"
"""The group of a VQNS run's loop steps as they happen (docs/run-files.md): one row per fit."""

VQNS_STEP_FIELDS: dict[str, int] = {"n_curves": 1, "lorentzians": 1, "best_rate": 1, "omega": 2, "S_fit": 2,
                                    "S_lo": 2, "S_hi": 2, "ranked": 2}
"""The columns of `vqns_live/` and their rank: curves fitted, Lorentzians used, the best candidate's expected
information per second (nats/s), the loop's frequency grid (rad/s), the reported spectrum and its band
(rad^2/s), the candidates' pulse numbers best first (NaN-padded rows)."""


def _prepare_vqns_steps(f: h5py.File) -> None:
    """The empty `vqns_live/` datasets of a VQNS run file that lacks them (before SWMR starts)."""
    if f.attrs.get("run_kind") != "vqns" or VQNS_LIVE in f:
        return
    g = f.create_group(VQNS_LIVE)
    for name, rank in VQNS_STEP_FIELDS.items():
        if rank == 2:
            ds = g.create_dataset(name, shape=(0, CURVE_CHUNK[1]), maxshape=(None, None), dtype="<f8",
                                  chunks=CURVE_CHUNK, fillvalue=np.nan)
        else:
            ds = g.create_dataset(name, shape=(0,), maxshape=(None,), dtype="<f8", chunks=(64,), fillvalue=np.nan)
        unit = {"omega": "rad/s", "S_fit": "rad^2/s", "S_lo": "rad^2/s", "S_hi": "rad^2/s", "best_rate": "nats/s"}
        if name in unit:
            ds.attrs["units"] = unit[name]


def _prepare_pixel_g2(f: h5py.File, attrs: dict[str, object]) -> None:
    """Add the on-line g2 datasets that the file lacks and set `attrs` (before SWMR starts)."""
    g = f["pixels"]
    for name, dtype in PIXEL_G2_FIELDS.items():
        if name not in g:
            fill = 0 if np.dtype(dtype).kind == "i" else np.nan
            ds = g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,), fillvalue=fill)
            _set_units(ds, "pixels")
    for key, value in attrs.items():
        old = f.attrs.get(key)
        if isinstance(value, str) and isinstance(old, str) and old and old != value and g["g2"].shape[0]:
            log.warning("%s: %s was %r for the first %d pixels, %r from now on",
                        f.filename, key, old, g["g2"].shape[0], value)
            value = f"{old} (pixel rows < {g['g2'].shape[0]}), then {value}"
        if isinstance(value, (tuple, list)):  # a table of strings, e.g. the reason codes
            value = np.array(value, dtype=h5py.string_dtype())
        f.attrs[key] = value


def _cut_back_to_first_hole(f: h5py.File, tables: tuple[str, ...]) -> None:
    """Make `stored_seq` true of the rows: a host killed in the middle of a flush can leave it counting a
    message whose rows never reached the file (HDF5 wrote the counter before the table's new extent), and
    the replay would then drop that message as a duplicate, a hole nobody records. Every message from the
    first seq that is neither in a table nor in `gaps` on is cut from the tables and `stored_seq` set
    before it: none of it was acknowledged (acks follow a complete, durable flush), so the rig sends it
    all again."""
    stored = int(f["stored_seq"][0])
    present = np.zeros(stored + 2, dtype=bool)
    present[0] = True  # run_start
    seqs = {g: f[g]["seq"][()] for g in tables if g in f and "seq" in f[g]}
    for seq in seqs.values():
        present[seq[(seq >= 0) & (seq <= stored)]] = True
    gaps = f["gaps"][()] if "gaps" in f else np.zeros((0, 2), dtype=np.int64)
    for a, b in gaps:
        present[max(int(a), 0):min(int(b), stored) + 1] = True
    hole = int(np.flatnonzero(~present)[0])
    if hole > stored:
        return
    for g, seq in seqs.items():
        keep = int(np.searchsorted(seq, hole))  # a table's seqs increase
        for ds in f[g].values():
            if isinstance(ds, h5py.Dataset) and ds.shape and ds.shape[0] > keep:
                ds.resize(keep, axis=0)
    if len(gaps) and (gaps[:, 0] >= hole).any():
        f["gaps"].resize(int((gaps[:, 0] < hole).sum()), axis=0)
    f["stored_seq"][0] = hole - 1
    log.warning("%s: messages %d..%d were counted as stored but %d never reached the file (its writer died "
                "in a flush): cut back to %d, the rig sends them again", f.filename, hole, stored, hole, hole - 1)


def open_for_writing(path: Path) -> h5py.File:
    """Open a run file to write its results. The host is its files' only writer: when a reader in another
    process holds HDF5's file lock (a user's SWMR reader, `nvscope web`), the file is opened without the
    lock instead of failing ('unable to lock file, errno 11'), which would keep the results from it."""
    try:
        return h5py.File(path, "r+", libver="latest")
    except OSError as exc:
        if "unable to lock file" not in str(exc):
            raise
        return h5py.File(path, "r+", libver="latest", locking=False)


def recover(path: Path) -> None:
    """Rewrite a run file whose writer died (its SWMR flag still set): everything flushed is kept."""
    tmp = path.with_name(path.name + ".recovering")
    with h5py.File(path, "r", libver="latest", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(tmp, path)
    log.warning("recovered %s: its writer had died; every flushed message is kept", path.name)


def read_coherence(f: h5py.File) -> dict[str, np.ndarray]:
    """Every stored coherence curve of an open run file: scalars (N,) and NaN-padded rows (N, T)."""
    return {name: f["coherence"][name][()] for name in COHERENCE_FIELDS}


def read_table(f: h5py.File, group: str, kind: type[Message]) -> dict[str, np.ndarray]:
    """Every stored row of the table `group` of message kind `kind` in an open run file, one array per
    column (`record_fields`); empty columns when the file has no such table (written by an older host)."""
    if group not in f:
        return {name: np.zeros((0, *[0 if n == -1 else n for n in row]), dtype=dtype)
                for name, (dtype, row) in record_fields(kind).items()}
    return {name: f[group][name][()] for name in record_fields(kind)}


def read_lock(f: h5py.File) -> dict[str, np.ndarray]:
    """Every stored NV-MRI lock row of an open run file (columns of `LOCK_FIELDS`), in arrival order."""
    return read_table(f, "lock", Lock)


def read_deer(f: h5py.File) -> dict[str, np.ndarray]:
    """Every stored NV-MRI DEER row of an open run file (columns of `DEER_FIELDS`), in arrival order."""
    return read_table(f, "deer", Deer)


def acquisition(px: dict[str, np.ndarray]) -> tuple[str, np.ndarray, np.ndarray | None]:
    """How a run's histograms were acquired, from its pixel table: (mode, tac_dead_s (P,), n_starts (P,) or
    None). Files written before these columns existed hold all-pairs histograms. One run has one mode."""
    P = len(px["hist"])
    modes = px.get("histogram_mode")
    if modes is None or len(modes) == 0:
        return "allpairs", np.zeros(P), None
    modes = {m.decode() if isinstance(m, bytes) else str(m) for m in np.asarray(modes).tolist()}
    if len(modes) != 1:
        raise ValueError(f"a run's pixels must share one histogram mode, got {sorted(modes)}")
    mode = modes.pop()
    dead = np.asarray(px.get("tac_dead_s", np.zeros(P)), dtype=float)
    starts = px.get("n_starts")
    return mode, dead, None if starts is None else np.asarray(starts, dtype=float)


def read_pixels(f: h5py.File, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """The per-pixel datasets of an open run file (pixel rows start..stop, default all), as arrays."""
    return {name: f["pixels"][name][start:stop] for name in PIXEL_FIELDS}


