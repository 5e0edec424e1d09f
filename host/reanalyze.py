"""Re-analysis of one stored run file into `<out>/<run_id>-reanalyzed.h5`: the task `nvscope reanalyze`
hands to each Dask worker (docs/dask.md).

`reanalyze_run(path, cfg)` is a module-level function of picklable arguments, so that any worker with
nvscope installed can run it; it reads the run with the host's own readers and runs the host's own
run-end analyses on it (`SrmAnalysis` with the estimator of `nvscope g2 estimate --method`, `MriAnalysis`,
and for VQNS one cold fit of every stored curve by the loop's `loop_analysis` and `vqns_results`), and
never raises for a bad run: it returns a `RunOutcome` saying why (missing, not HDF5, not a run file,
unknown kind, an analysis that failed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from nvscope.proto.command_line import one_line
from nvscope.proto.version import software_version

from .store import RunStore, read_coherence, unit_of

KINDS = ("srm", "mri", "vqns")
"""The run kinds that can be re-analysed (the `run_kind` attribute of a run file)."""

SUFFIX = "-reanalyzed.h5"
"""An output's name: `<run_id>` + SUFFIX."""


@dataclass(frozen=True)
class ReanalyzeConfig:
    """What every task gets: the output folder, the g2 estimator (`cnn` or `mle`) and the CNN file (None:
    the shipped one), and the VQNS fit's restarts (None: the run's recorded `vqns_loop_config`)."""

    out_dir: str
    method: str = "cnn"
    model: str | None = None
    vqns_restarts: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    """The result of one task: the input, its run id and kind ('' when unknown), whether an output was
    written (`output`) or why not (`reason`, one line), and the seconds the task took in its worker."""

    input: str
    ok: bool
    run_id: str = ""
    kind: str = ""
    output: str = ""
    reason: str = ""
    seconds: float = 0.0
    worker_pid: int = 0

    def line(self) -> str:
        """One line for the terminal."""
        name = self.run_id or Path(self.input).name
        if self.ok:
            return f"{name}: ok ({self.kind}, {self.seconds:.1f} s) -> {self.output}"
        return f"{self.input}: failed: {self.reason}"


class RunFileError(Exception):
    """A run file that cannot be re-analysed; the message says why in one line."""


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    from .srm.cnn_estimator import file_sha256 as sha

    return sha(Path(path))


def reanalyze_run(path: str, cfg: ReanalyzeConfig) -> RunOutcome:
    """Re-analyse the run file `path` into `cfg.out_dir` (module docstring); never raises for a bad run."""
    t0 = time.perf_counter()
    run_id = kind = ""
    try:
        p = Path(path)
        if not p.is_file():
            raise RunFileError("no such file" if not p.exists() else "not a file")
        sha = file_sha256(p)
        with _open_run(p) as f:
            run_id = str(f.attrs.get("run_id", ""))  # named in the outcome even when the file is refused
            run_id, kind = _identity(f)
            results, attrs = _analyse(p, f, kind, run_id, cfg)
            source = {"input_exit_status": str(f.attrs.get("exit_status", "")),
                      "input_host_version": str(f.attrs.get("host_version", "")),
                      "input_config": str(f.attrs.get("config", "{}")), "input_seed": f.attrs.get("seed", -1)}
        out = Path(cfg.out_dir) / f"{run_id}{SUFFIX}"
        meta = {"input_run_id": run_id, "input_run_kind": kind, "input_file": str(p.resolve()), "input_sha256": sha,
                **source, "method": cfg.method if kind == "srm" else kind, "nvscope_version": software_version(),
                "reanalyzed_unix_s": time.time(),
                "reanalyzed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_output(out, results, {**attrs, **meta})
        return RunOutcome(str(path), True, run_id, kind, str(out), "", time.perf_counter() - t0, os.getpid())
    except RunFileError as exc:
        reason = str(exc)
    except Exception as exc:  # an analysis that fails on this run: reported, the other runs go on
        reason = f"{type(exc).__name__}: {one_line(exc)}"
    return RunOutcome(str(path), False, run_id, kind, "", reason, time.perf_counter() - t0, os.getpid())


def _open_run(p: Path) -> h5py.File:
    """The file, read-only; one whose writer died (its SWMR flag still set) is read as SWMR."""
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        if "already open for write" in str(exc):
            return h5py.File(p, "r", libver="latest", swmr=True)
        raise RunFileError(_h5_reason(exc)) from None


def _h5_reason(exc: OSError) -> str:
    """Why h5py could not open a file, in a few words and its own."""
    text = one_line(exc).replace("Unable to synchronously open file ", "").replace("Unable to open file ", "")
    if "signature" in text:
        return f"not an HDF5 file {text}"
    if "truncated" in text:
        return f"truncated HDF5 file {text}"
    return f"unreadable HDF5 file {text}"


def _identity(f: h5py.File) -> tuple[str, str]:
    """(run id, kind) from the run file's attributes (docs/run-files.md)."""
    if "run_kind" not in f.attrs or "run_id" not in f.attrs:
        raise RunFileError("not an nvscope run file (no run_id / run_kind attribute)")
    run_id, kind = str(f.attrs["run_id"]), str(f.attrs["run_kind"])
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise RunFileError(f"run_id {run_id!r} cannot name an output file")
    if kind not in KINDS:
        raise RunFileError(f"run {run_id}: unknown run kind {kind!r} (known: {', '.join(KINDS)})")
    for name in ("stored_seq", "pixels"):
        if name not in f:
            raise RunFileError(f"run {run_id}: not an nvscope run file (no /{name})")
    return run_id, kind


def _analyse(p: Path, f: h5py.File, kind: str, run_id: str, cfg: ReanalyzeConfig) -> tuple[dict, dict]:
    """(result datasets, result attributes) of the run by the host's own analysis of its kind; figures
    go beside the output, `<run_id>-reanalyzed.png`."""
    figure = Path(cfg.out_dir) / f"{run_id}-reanalyzed.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    store = RunStore(p, f)
    if kind == "srm":
        from .srm.analysis import SrmAnalysis
        from .srm.g2_cli import _estimator

        estimator = _estimator(cfg.method, cfg.model)
        analysis = SrmAnalysis(estimator)
        results, attrs = analysis.compute(dataclasses.replace(analysis.read(store), figure=figure))
        if hasattr(estimator, "provenance"):  # the CNN: which model file made these numbers
            prov = estimator.provenance()
            attrs.update(model_file=prov["model_file"], model_sha256=prov["model_sha256"],
                         model_commit=prov["model_commit"])
        return results, attrs
    if kind == "mri":
        from .mri.analysis import MriAnalysis

        analysis = MriAnalysis()
        return analysis.compute(dataclasses.replace(analysis.read(store), figure=figure))
    return _vqns(f, cfg, figure)


def _vqns(f: h5py.File, cfg: ReanalyzeConfig, figure: Path) -> tuple[dict, dict]:
    """A VQNS run's stored curves fitted again, cold, in one step, with the loop's settings recorded in the
    file (`vqns_loop_config`; the restarts of `cfg.vqns_restarts` when given) and the rig's timing from its
    config: the loop's own `loop_analysis` and `vqns_results`."""
    from nvscope.models.vqns.data import coherence_set

    from .vqns.loop import VqnsLoopConfig, VqnsStep, loop_analysis, loop_config_from_json, run_timing, vqns_results

    curves = read_coherence(f)
    n = len(curves["n_pulses"])
    if n == 0:
        return {}, {"analysis_note": "no coherence curves"}
    recorded = f.attrs.get("vqns_loop_config")
    loop, lost = loop_config_from_json(recorded) if recorded is not None else (VqnsLoopConfig(), ["vqns_loop_config"])
    fit = loop.fit if cfg.vqns_restarts is None else dataclasses.replace(loop.fit, restarts=cfg.vqns_restarts)
    config = json.loads(f.attrs.get("config", "{}"))
    rig = run_timing(config)
    omega = loop.frequency_grid(rig.timing)
    plan = loop.plan(rig.timing, rig.repetitions, rig.dark_fraction)
    pi_s = curves.get("pi_s", np.zeros(n))
    data = coherence_set(curves["n_pulses"].astype(np.int64), curves["t"], curves["coherence"], curves["sigma"], pi_s)
    a = loop_analysis(data, fit, plan, None, omega)
    results, attrs = vqns_results([VqnsStep.of(n, a)], curves, config.get("sim_truth", {}), figure)
    attrs.update(fit_config=json.dumps(dataclasses.asdict(fit)), vqns_fits=f"1 cold fit of {n} curves",
                 vqns_timing_source=rig.source)
    if lost:
        attrs["vqns_not_restored"] = json.dumps(lost)
    return results, attrs


def write_output(path: Path, results: dict[str, np.ndarray], attrs: dict[str, object]) -> None:
    """The output file, atomically: written under a temporary name in the same folder, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                if isinstance(value, (list, tuple)):  # a table of strings, e.g. the reason codes
                    value = np.array([str(v) for v in value], dtype=h5py.string_dtype())
                f.attrs[key] = value
            for name, arr in results.items():
                ds = f.create_dataset(name, data=arr)
                unit = unit_of(name)
                if unit is not None:
                    ds.attrs["units"] = unit
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = ["KINDS", "SUFFIX", "ReanalyzeConfig", "RunOutcome", "RunFileError", "reanalyze_run", "write_output",
           "file_sha256"]
