"""Reading one run file while the host writes it: SWMR, read-only, never a lock; new rows as deltas."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from nvscope.models.g2.scan_context import pixel_pl, super_resolved

from ..mri.maps import MriMapError, deer_dip, retracted_reference
from ..store import VQNS_LIVE, VQNS_STEP_FIELDS

NOT_SWMR_YET = "already open for write"
"""HDF5's words for a file whose writer has it open outside SWMR mode (being created, or finalized)."""

STATUS_CHECK_S = 0.5
"""How often a running file is opened afresh to read its attributes (s): they cannot change under SWMR, so
the end of a run shows only after the host has closed and reopened the file, and HDF5 shares one open
file per process (a second handle would see the first one's cached attributes)."""


OPEN_GRACE_S = 2.0
"""A file that cannot be opened as a run file for this long after it was first seen is listed as unreadable
(before that it may be one the host is creating: empty, or not in SWMR mode yet)."""


def open_swmr(path: Path) -> h5py.File:
    """`path` opened read-only for SWMR reading, without HDF5's file lock: a reader that held the lock
    would make the host's run-end reopen fail (errno 11), so this reader never takes one."""
    return h5py.File(path, "r", libver="latest", swmr=True, locking=False)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class RunData:
    """What the page shows of one run, built row by row from its file (numpy arrays per column)."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    final: dict | None = None

    def extend(self, part: dict[str, np.ndarray]) -> None:
        """Append rows (same columns each time; curves may widen)."""
        for name, rows in part.items():
            old = self.columns.get(name)
            if old is None or len(old) == 0:
                self.columns[name] = rows
            elif rows.ndim == 2 and rows.shape[1] != old.shape[1]:  # NaN-padded curves: widen to the longest
                width = max(rows.shape[1], old.shape[1])
                pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=np.nan)  # noqa: E731
                self.columns[name] = np.concatenate([pad(old), pad(rows)])
            else:
                self.columns[name] = np.concatenate([old, rows])

    def as_dict(self) -> dict:
        """The columns and the run-end results, for a snapshot."""
        return {"columns": {k: _curves(v) if v.ndim == 2 and k in CURVE_COLUMNS else v
                            for k, v in self.columns.items()}, "final": self.final}


CURVE_COLUMNS = ("t", "coherence", "sigma", "omega", "S_fit", "S_lo", "S_hi", "ranked")
"""VQNS curve and loop-step columns: NaN-padded rows, sent as lists without the padding."""


def _curves(rows: np.ndarray) -> list[np.ndarray]:
    return [r[np.isfinite(r)] for r in rows]


TABLES: dict[str, tuple[str, ...]] = {
    "pixels": ("index", "ix", "iy", "n_a", "n_b", "dwell_s"),
    "lock": ("index", "scan", "plane", "ix", "iy", "f_lock_hz", "f_sigma_hz", "state", "photons"),
    "deer": ("index", "scan", "plane", "ix", "iy", "n_rf", "n_ref"),
    "coherence": ("n_pulses", "t", "coherence", "sigma", "signal_counts", "bright_counts", "dark_counts"),
    VQNS_LIVE: tuple(VQNS_STEP_FIELDS),
}
"""The columns the page follows, per table of docs/run-files.md section 3."""

TABLES_OF_KIND: dict[str, tuple[str, ...]] = {"srm": ("pixels",), "mri": ("lock", "deer"),
                                              "vqns": ("coherence", VQNS_LIVE)}
"""The tables each run kind fills (a file of another kind: all of them)."""

EVENT_OF_TABLE = {"pixels": "pixels", "lock": "lock", "deer": "deer", "coherence": "curves", VQNS_LIVE: "step"}
"""The SSE event type that carries new rows of each table."""


class RunFile:
    """One `<run_id>.h5` under the data folder: its summary and the rows read so far; `poll` reads
    what the host added since (SWMR refresh) and returns it as events (type, payload)."""

    def __init__(self, path: Path):
        self.path = path
        self.run_id = path.stem
        self.kind = ""
        self.status = "opening"
        self.reason = ""
        self.n_planned = 0
        self.grid_shape: list[int] = [0, 0]
        self.created_unix_s = 0.0
        self.updated_unix_s = 0.0
        self.data = RunData()
        self.rows: dict[str, int] = {t: 0 for t in TABLES}
        self.n_g2 = 0
        self.photons = 0
        self._f_retracted: float | None = None  # NV-MRI: the NV frequency with the tip retracted (Hz)
        self.f: h5py.File | None = None
        self._cols: dict[str, list[h5py.Dataset]] | None = None
        self._checked = 0.0
        self._first_error = 0.0
        self._sent_summary: dict | None = None

    @property
    def done(self) -> bool:
        """Nothing more will change: the run ended and its results were read, or the file is unreadable."""
        return self.status in ("completed", "stopped", "failed", "unreadable")

    @property
    def n_done(self) -> int:
        """Pixels (SRM), tip positions (NV-MRI) or curves (VQNS) stored."""
        return self.rows["coherence"] if self.kind == "vqns" else max(self.rows["pixels"], self.rows["lock"])

    def summary(self, now: float | None = None) -> dict:
        """The run's line in the run list: status, reason, progress, elapsed and remaining time, photons."""
        now = time.time() if now is None else now
        end = now if self.status == "running" else (self.updated_unix_s or now)
        elapsed = max(end - self.created_unix_s, 0.0) if self.created_unix_s else None
        remaining = None
        if self.status == "running" and elapsed and self.n_planned and 0 < self.n_done < self.n_planned:
            remaining = elapsed / self.n_done * (self.n_planned - self.n_done)
        return {"run_id": self.run_id, "file": self.path.name, "kind": self.kind, "status": self.status,
                "reason": self.reason, "n_planned": self.n_planned, "n_done": self.n_done,
                "grid_shape": self.grid_shape, "created_unix_s": self.created_unix_s, "elapsed_s": elapsed,
                "remaining_s": remaining, "photons": self.photons, "n_g2": self.n_g2}

    def close(self) -> None:
        """Let go of the file."""
        self._cols = None
        if self.f is not None:
            try:
                self.f.close()
            except Exception:  # noqa: BLE001 (a handle of a file that changed under it)
                pass
            self.f = None

    # ------------------------------------------------------------------ polling
    def poll(self, now: float | None = None) -> list[tuple[str, dict]]:
        """Read what is new; the events that say so (row deltas, then the run's summary if it changed).
        Never raises for a bad file: it is reported as unreadable with the reason."""
        now = time.time() if now is None else now
        events: list[tuple[str, dict]] = []
        try:
            if self.f is not None and self.status == "running" and now - self._checked >= STATUS_CHECK_S:
                self.close()  # a fresh handle: the attributes change only across the host's close and reopen
            if self.f is None:
                if not self._open(now):
                    return self._summary_event(events, now)
            events += self._read_new()
            if self.status != "running":
                events += self._finish()
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self.close()  # reopened next time
            if self.status == "opening":  # never opened: a file being created gets OPEN_GRACE_S to become one
                self._first_error = self._first_error or now
                if now - self._first_error >= OPEN_GRACE_S:
                    self._unreadable(exc)
        return self._summary_event(events, now)

    def _summary_event(self, events: list[tuple[str, dict]], now: float) -> list[tuple[str, dict]]:
        s = self.summary(now)
        key = {k: v for k, v in s.items() if k not in ("elapsed_s", "remaining_s")}
        if key != self._sent_summary:
            self._sent_summary = key
            events.append(("run", s))
        return events

    def _unreadable(self, exc: BaseException) -> None:
        self.status = "unreadable"
        self.reason = " ".join(str(exc).split()) or type(exc).__name__

    def _open(self, now: float) -> bool:
        """Open the file and read its attributes; False: not in SWMR mode yet (retry later)."""
        try:
            f = open_swmr(self.path)
        except OSError as exc:
            if NOT_SWMR_YET in str(exc):
                return False
            raise
        try:
            self._read_attrs(f)
        except Exception:
            f.close()
            raise
        self.f = f
        self._checked = now
        return True

    def _read_attrs(self, f: h5py.File) -> None:
        a = f.attrs
        if "run_id" not in a or "exit_status" not in a:
            raise ValueError("not an nvscope run file (no run_id or exit_status attribute)")
        self.run_id = _text(a["run_id"])
        self.kind = _text(a.get("run_kind", ""))
        self.n_planned = int(a.get("n_pixels", 0))
        self.grid_shape = [int(v) for v in np.asarray(a.get("grid_shape", [0, 0])).ravel()[:2]]
        self.created_unix_s = float(a.get("created_unix_s", 0.0))
        self.status, self.reason = _text(a["exit_status"]), _text(a.get("reason", ""))

    def _columns(self) -> dict[str, list[h5py.Dataset]]:
        """The open datasets this run's kind follows, per table (looked up once per open: a lookup costs
        more than a refresh); a table this file lacks is left out."""
        if self._cols is None:
            f, cols = self.f, {}
            for table in TABLES_OF_KIND.get(self.kind, tuple(TABLES)):
                if table in f and all(n in f[table] for n in TABLES[table]):
                    cols[table] = [f[table][n] for n in TABLES[table]]
            if self.kind == "srm" and "pixels" in f and "g2" in f["pixels"]:
                cols["g2"] = [f["pixels/g2"], f["pixels/g2_std"]]
            self._cols = cols
        return self._cols

    def _read_new(self) -> list[tuple[str, dict]]:
        """New rows of every followed table (refreshing its datasets), as delta events."""
        events = []
        columns = self._columns()
        for table, cols in columns.items():
            if table == "g2":
                continue
            cols[0].refresh()  # its first column says whether there is anything new
            if cols[0].shape[0] <= self.rows[table]:
                continue
            for ds in cols[1:]:
                ds.refresh()
            n = min(ds.shape[0] for ds in cols)
            start = self.rows[table]
            if n <= start:
                continue
            part = {name: ds[start:n] for name, ds in zip(TABLES[table], cols)}
            self.rows[table] = n
            self.updated_unix_s = time.time()
            events.append((EVENT_OF_TABLE[table], self._delta(table, start, part)))
        if "g2" in columns:
            g2, std = columns["g2"]
            g2.refresh()
            std.refresh()
            n = min(g2.shape[0], std.shape[0], self.rows["pixels"])
            if n > self.n_g2:
                part = {"g2": g2[self.n_g2:n], "g2_std": std[self.n_g2:n]}
                part["G2"] = super_resolved(self.data.columns["pl_cps"][self.n_g2:n], part["g2"])
                events.append(("g2", {"run_id": self.run_id, "first": self.n_g2, **part}))
                self.data.extend(part)
                self.n_g2 = n
        return events

    def _delta(self, table: str, start: int, part: dict[str, np.ndarray]) -> dict:
        """Keep the new rows of `table` and say what they add: row `first` on, the page's columns."""
        if table == "pixels":
            pl = pixel_pl(part["n_a"], part["n_b"], part["dwell_s"])
            self.photons += int(part["n_a"].sum() + part["n_b"].sum())
            keep = {"index": part["index"], "ix": part["ix"], "iy": part["iy"], "pl_cps": pl}
        elif table == "lock":
            self.photons += int(part["photons"].sum())
            keep = {f"lock_{k}": v for k, v in part.items() if k != "photons"}
            if self._f_retracted is None:  # the scan-0 rows come first; rows before them get no detuning
                lock = {k[5:]: v for k, v in self.data.columns.items() if k.startswith("lock_")}
                lock = {k: np.concatenate([lock[k], part[k]]) if k in lock else part[k]
                        for k in ("scan", "state", "f_lock_hz", "f_sigma_hz")}
                try:
                    self._f_retracted = retracted_reference(lock)[0]
                except MriMapError:
                    pass
            keep["lock_detuning_hz"] = part["f_lock_hz"] - (np.nan if self._f_retracted is None
                                                            else self._f_retracted)
        elif table == "deer":
            self.photons += int(part["n_rf"].sum() + part["n_ref"].sum())
            keep = {f"deer_{k}": v for k, v in part.items()}
            keep["deer_dip"] = deer_dip(part["n_rf"], part["n_ref"])[0]
        elif table == VQNS_LIVE:  # the loop's steps: spectrum, band and ranking after each curve
            keep = dict(part)
        else:
            counts = [part[k] for k in ("signal_counts", "bright_counts", "dark_counts")]
            self.photons += int(sum(np.nansum(c) for c in counts))
            keep = {k: part[k] for k in ("n_pulses", "t", "coherence", "sigma")}
        self.data.extend(keep)
        payload = {k: _curves(v) if k in CURVE_COLUMNS else v for k, v in keep.items()}
        return {"run_id": self.run_id, "first": start, **payload}

    def _finish(self) -> list[tuple[str, dict]]:
        """The run has ended (the handle is fresh, opened after the host finalized the file): read the
        run-end results, let go of the file."""
        try:
            self.data.final = {"status": self.status, "reason": self.reason, **run_results(self.f, self.kind)}
            ended = self.f.attrs.get("ended_unix_s")  # files of older hosts: the file's last change
        finally:
            self.close()
        self.updated_unix_s = float(ended) if ended is not None else self.path.stat().st_mtime
        return [("final", {"run_id": self.run_id, **self.data.final})]


def run_results(f: h5py.File, kind: str) -> dict:
    """The run-end results the page shows, read from a finished run file (docs/run-files.md)."""
    if kind == "srm":
        return {"maps": {n: f[f"maps/{n}"][()] for n in ("pl_cps", "g2", "g2_std", "G2") if f"maps/{n}" in f}}
    if kind == "mri":
        maps = {}
        if "mri/psf/detuning" in f:
            det = f["mri/psf/detuning"][()]
            for z in range(det.shape[0]):
                maps[f"psf plane {z}: detuning (Hz)"] = det[z]
        for name in sorted(f["mri/deer"]) if "mri/deer" in f else []:
            for q in ("deer", "detuning"):
                if q in f[f"mri/deer/{name}"]:
                    maps[f"deer {name}: {q}"] = f[f"mri/deer/{name}/{q}"][()]
        loc = _text(f.attrs.get("mri_localization", "{}"))
        return {"maps": maps, "localization": json.loads(loc) if loc else {}}
    if kind == "vqns" and "vqns/omega" in f:
        out = {"spectrum": {n: f[f"vqns/{n}"][()] for n in ("omega", "S_fit", "S_lo", "S_hi")}}
        steps = []
        n_curves = f["vqns/steps/n_curves"][()] if "vqns/steps/n_curves" in f else []
        for i, n in enumerate(n_curves):
            g = f[f"vqns/steps/{i}"]
            steps.append({"n_curves": int(n), **{k: g[k][()] for k in ("omega", "S_fit", "S_lo", "S_hi", "ranked",
                                                                            "candidates", "scores") if k in g}})
        out["steps"] = steps
        out["stop_reason"] = _text(f.attrs.get("stop_reason", ""))
        out["fits"] = vqns_fit_curves(f)
        return out
    return {}


def vqns_fit_curves(f: h5py.File) -> list[np.ndarray]:
    """Each stored curve's fit, A exp(-sum chi) + B, from the best final restart's Lorentzians (ideal
    pulses) and readout terms A, B fitted to all curves at once by weighted least squares; [] if none."""
    from nvscope.models.vqns.attenuation import attenuation

    if "vqns/restarts/chi2" not in f or "coherence/t" not in f:
        return []
    chi2 = f["vqns/restarts/chi2"][()]
    ok = f["vqns/restarts/success"][()] if "vqns/restarts/success" in f else np.ones(len(chi2), bool)
    if not len(chi2) or not np.isfinite(chi2).any():
        return []
    best = int(np.nanargmin(np.where(ok, chi2, np.inf))) if ok.any() else int(np.nanargmin(chi2))
    a, w0, g = (f[f"vqns/restarts/{k}"][best] for k in ("a", "w0", "g"))
    t, y, s = (f[f"coherence/{k}"][()] for k in ("t", "coherence", "sigma"))
    n = f["coherence/n_pulses"][()]
    e = np.full(t.shape, np.nan)
    for i in range(len(n)):
        m = np.isfinite(t[i])
        e[i, m] = np.exp(-attenuation(a[:, None], w0[:, None], g[:, None], t[i, m][None], int(n[i])).sum(0))
    m = np.isfinite(e) & np.isfinite(y)
    w = np.where(np.isfinite(s) & (s > 0), 1 / np.where(s > 0, s, 1), 1.0)[m]
    A = np.vstack([e[m] * w, w]).T
    coef, *_ = np.linalg.lstsq(A, y[m] * w, rcond=None)
    return [r[np.isfinite(r)] for r in coef[0] * e + coef[1]]

