"""`nvscope reanalyze`: re-estimate stored runs on Dask (docs/cli.md, docs/dask.md).

One task per run file (`host.reanalyze.reanalyze_run`) on a local cluster of worker processes, or on
the Dask scheduler given with --scheduler; each writes `<out>/<run_id>-reanalyzed.h5`. A line per run
as it finishes, `<out>/reanalyze-summary.json` at the end. Exit 0 when every run was re-analysed, 1 when
one failed (its line and the summary say why), 2 for bad arguments (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from nvscope.models.dask_cluster import dask_client
from nvscope.proto.command_line import InputError, one_line, writable_folder

SUMMARY = "reanalyze-summary.json"
"""The summary's name in the output folder."""
CONNECT_TIMEOUT_S = 5.0
"""How long --scheduler is tried before it counts as unreachable (s)."""


def add_reanalyze_parser(subparsers) -> argparse.ArgumentParser:
    """Add `reanalyze` to an argparse subparsers object."""
    r = subparsers.add_parser(
        "reanalyze", help="re-estimate many stored runs at once on Dask",
        description="Re-run the run-end analysis of stored run files (SRM: g2(0) maps with --method; NV-MRI: maps "
                    "and localization; VQNS: one fit of every stored curve), one Dask task per file, on a local "
                    "cluster (one process per core) or an existing scheduler. Writes OUT/<run_id>-reanalyzed.h5 "
                    "per run (with the input's run id and SHA-256, the method, the model and its SHA-256, the "
                    "nvscope version and the time) and OUT/reanalyze-summary.json. Exit 0: all re-analysed; "
                    "1: some failed (each said in one line); 2: bad arguments.")
    r.add_argument("runs", nargs="+", metavar="RUN.h5", help="run files written by the host")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--method", choices=("cnn", "mle"), default="cnn", help="g2(0) estimator (default cnn)")
    r.add_argument("--model", metavar="FILE.onnx", help="the g2 CNN instead of the shipped one")
    r.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (default: a local cluster)")
    r.add_argument("--workers", type=int, metavar="N",
                   help="local cluster: worker processes (default: one per core, at most one per run)")
    r.add_argument("--vqns-restarts", type=int, metavar="N",
                   help="VQNS runs: random starts of the fit (default: the run's recorded fit settings)")
    return r


def reanalyze_command(args: argparse.Namespace) -> int:
    """Re-analyse the runs; exit 0 if all succeeded, 1 if any failed (InputError: bad arguments, exit 2)."""
    from .reanalyze import ReanalyzeConfig

    runs = list(dict.fromkeys(str(Path(r).absolute()) for r in args.runs))  # the same file once
    out = writable_folder(args.out, "--out")  # absolute: the workers may run elsewhere
    model = _model(args.method, args.model)
    if args.vqns_restarts is not None and args.vqns_restarts < 1:
        raise InputError(f"--vqns-restarts must be >= 1, got {args.vqns_restarts}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and args.scheduler:
        raise InputError("--workers is for the local cluster; the scheduler of --scheduler has its own workers")
    cfg = ReanalyzeConfig(str(out), args.method, model, args.vqns_restarts)
    t0 = time.perf_counter()
    workers = args.workers or min(len(runs), os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(dask_client(args.scheduler, None if args.scheduler else workers,
                                                     CONNECT_TIMEOUT_S, quiet=not getattr(args, "verbose", False)))
        except ConnectionError as exc:
            raise InputError(f"--scheduler {args.scheduler}: {exc}") from None
        where = args.scheduler or f"local cluster of {len(client.scheduler_info()['workers'])} workers"
        print(f"nvscope reanalyze: {len(runs)} runs on {where}", flush=True)
        outcomes = run_all(client, runs, cfg, lambda k, o: print(f"[{k}/{len(runs)}] {o.line()}", flush=True))
    seconds = time.perf_counter() - t0
    write_summary(out / SUMMARY, outcomes, cfg, where, seconds)
    failed = [o for o in outcomes if not o.ok]
    print(f"nvscope reanalyze: {len(outcomes) - len(failed)} of {len(outcomes)} runs re-analysed in {seconds:.1f} s"
          f"{f', {len(failed)} failed' if failed else ''}; summary {out / SUMMARY}",
          file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def _model(method: str, model: str | None) -> str | None:
    """The CNN file as an absolute path (None: the shipped one), loaded once here so that a bad file is
    exit 2 before any work starts (ModelFileError)."""
    if method != "cnn":
        if model is not None:
            raise InputError("--model is for --method cnn")
        return None
    from .srm.g2_cli import _estimator

    _estimator(method, model)
    return None if model is None else str(Path(model).absolute())


def run_all(client, runs: list[str], cfg, progress=None) -> list:
    """One `reanalyze_run` task per run file on `client`; the outcomes in the order of `runs`, `progress(k,
    outcome)` called as each finishes (k: how many have). A task lost with its worker is a failed run."""
    from distributed import as_completed

    from .reanalyze import RunOutcome, reanalyze_run

    futures = client.map(reanalyze_run, runs, cfg=cfg, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    outcomes: list = [None] * len(runs)
    for k, future in enumerate(as_completed(futures), 1):
        i = index[future.key]
        try:
            outcome = future.result()
        except Exception as exc:  # the worker died (KilledWorker) or the task could not be run there
            outcome = RunOutcome(runs[i], False, reason=f"task lost: {type(exc).__name__}: {one_line(exc)}")
        outcomes[i] = outcome
        if progress is not None:
            progress(k, outcome)
    return _shared_outputs(outcomes)


def _shared_outputs(outcomes: list) -> list:
    """Two input files of one run id wrote the same output (the last one stays): both are failed, saying so."""
    by_output: dict[str, list[int]] = {}
    for i, o in enumerate(outcomes):
        if o.ok:
            by_output.setdefault(o.output, []).append(i)
    for output, rows in by_output.items():
        if len(rows) > 1:
            for i in rows:
                others = ", ".join(outcomes[j].input for j in rows if j != i)
                outcomes[i] = dataclasses.replace(outcomes[i], ok=False, reason=(
                    f"run {outcomes[i].run_id} is also in {others}: one output {output} for both (the last written stays)"))
    return outcomes


def write_summary(path: Path, outcomes: list, cfg, where: str, seconds: float) -> None:
    """The summary JSON (every input with ok or failed, the reason, the output), atomically."""
    from nvscope.proto.version import software_version

    summary = {"method": cfg.method, "model": cfg.model, "vqns_restarts": cfg.vqns_restarts, "scheduler": where,
               "nvscope_version": software_version(), "seconds": round(seconds, 3),
               "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "ok": sum(o.ok for o in outcomes), "failed": sum(not o.ok for o in outcomes),
               "runs": [{"input": o.input, "status": "ok" if o.ok else "failed", "run_id": o.run_id, "kind": o.kind,
                         "output": o.output, "reason": o.reason, "seconds": round(o.seconds, 3)} for o in outcomes]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)
