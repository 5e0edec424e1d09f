"""Throughput of the Dask paths against the number of workers, as ratios to the single process in the same run.

    python benchmarks/bench_scale.py [--runs 8] [--grid 6x6] [--emitters 12] [--windows 8] [--events 20000]
                                     [--workers 1,2] [--method cnn]

- reanalyze: `--runs` synthetic SRM run files (written by the host's own store, Poisson histograms of an
  emitter, `--grid` pixels each) re-analysed by `host.reanalyze.reanalyze_run` (the task of `nvscope
  reanalyze`): in this process one after another (the baseline), then on a local Dask cluster of each
  number of `--workers` (processes, one thread each), in runs/s.
- training data: `models.g2.training_data.simulate_dataset` of `--emitters` x `--windows` histograms in this
  process (the baseline), then on the same clusters (one task per emitter), in emitters/s; the arrays are
  checked to be identical.

Every path runs one thread per process: like Dask's workers (its nanny sets OMP_NUM_THREADS,
MKL_NUM_THREADS, OPENBLAS_NUM_THREADS to 1), this process sets them to 1 before numpy loads, unless they are set
in the environment (OMP_NUM_THREADS=2 ... to measure the single process with threaded BLAS; on busy cores it
was 1.5-2x slower than one thread).

Each path is warmed first (imports and Numba compilations: a worker pays them once, listed as "warm-up"), so
the rates are those of a running cluster. Where the time goes: Dask's task stream gives each task's compute
time in its worker; the rest of the wall time (workers x wall - sum of compute) is scheduling, transfer of the
results, (de)serialization and idle workers at the tail. Default sizes take about 1.5 min on 2 free cores.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # as Dask's workers (module docstring)
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nvscope.host.reanalyze import ReanalyzeConfig, reanalyze_run
from nvscope.host.reanalyze_cli import run_all
from nvscope.models.dask_cluster import dask_client
from nvscope.models.g2.training_data import simulate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "host"))  # the tests' run-file helper
from synthetic_runs import write_srm_run  # noqa: E402


def task_times(stream: list[dict], prefix: str) -> tuple[float, float, int]:
    """(sum of compute s, sum of transfer + (de)serialization s, tasks) of the tasks whose key starts with
    `prefix` in a Dask task stream (`distributed.get_task_stream`)."""
    compute = other = 0.0
    n = 0
    for task in stream:
        if not str(task["key"]).startswith(prefix):
            continue
        n += 1
        for part in task["startstops"]:
            d = part["stop"] - part["start"]
            if part["action"] == "compute":
                compute += d
            else:
                other += d
    return compute, other, n


def describe(label: str, wall: float, workers: int, compute: float, other: float, n: int, unit: str,
             items: int, base_rate: float | None) -> float:
    """Print one line: rate, ratio to the baseline, and where the workers' time went; returns the rate."""
    rate = items / wall
    ratio = f"{rate / base_rate:5.2f}x" if base_rate else "1.00x"
    busy = compute / (workers * wall) if wall > 0 else float("nan")
    overhead = max(workers * wall - compute, 0.0) / max(n, 1)  # worker-seconds not computing, per task
    print(f"  {label:<18} {wall:6.2f} s {rate:6.2f} {unit} {ratio}  compute {compute / max(n, 1):.3f} s/task, "
          f"overhead {overhead * 1e3:5.0f} ms/task (transfer+(de)serialize {other * 1e3 / max(n, 1):.0f} ms; "
          f"the rest scheduling and idle workers at the tail), workers busy {busy:5.1%}")
    return rate


def bench_reanalyze(folder: Path, runs: list[Path], worker_counts: list[int], method: str) -> None:
    out = folder / "out"
    cfg = ReanalyzeConfig(str(out), method)
    warm = write_srm_run(folder, "srm-20000101-000000-warmup", 999, (2, 2), 0.5)
    print(f"reanalyze: {len(runs)} SRM runs, method {method}")
    t0 = time.perf_counter()
    assert reanalyze_run(str(warm), cfg).ok
    print(f"  single process warm-up (imports, Numba, model): {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    outcomes = [reanalyze_run(str(p), cfg) for p in runs]
    wall = time.perf_counter() - t0
    assert all(o.ok for o in outcomes), [o.reason for o in outcomes if not o.ok]
    compute = sum(o.seconds for o in outcomes)
    base = describe("single process", wall, 1, compute, 0.0, len(runs), "runs/s", len(runs), None)
    from distributed import get_task_stream

    for n in worker_counts:
        t0 = time.perf_counter()
        with dask_client(local_workers=n) as client:
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.run(reanalyze_run, str(warm), cfg)  # every worker imports and compiles once
            t_warm = time.perf_counter() - t0
            with get_task_stream(client) as stream:
                t0 = time.perf_counter()
                outcomes = run_all(client, [str(p) for p in runs], cfg)
                wall = time.perf_counter() - t0
            assert all(o.ok for o in outcomes), [o.reason for o in outcomes if not o.ok]
            c, other, k = task_times(stream.data, "reanalyze_run")
            print(f"  {n} workers: cluster start {t_start:.2f} s, warm-up {t_warm:.2f} s "
                  f"(in-task {np.mean([o.seconds for o in outcomes]):.3f} s per run)")
            describe(f"dask, {n} workers", wall, n, c, other, k, "runs/s", len(runs), base)


def bench_training(emitters: int, windows: int, events: int, worker_counts: list[int]) -> None:
    print(f"training data: {emitters} emitters x {windows} windows, at most {events} expected events")
    kw = dict(n_emitters=emitters, windows=windows, seed=5, events=events)
    t0 = time.perf_counter()
    simulate_dataset(2, 2, seed=1, events=1000, workers=1)
    print(f"  single process warm-up (Numba): {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    plain = simulate_dataset(**kw, workers=1)
    wall = time.perf_counter() - t0
    base = describe("single process", wall, 1, wall, 0.0, emitters, "emitters/s", emitters, None)
    if 2 in worker_counts:  # the path before Dask: a process pool (its start included), before any cluster
        t0 = time.perf_counter()
        pooled = simulate_dataset(**kw, workers=2)
        wall = time.perf_counter() - t0
        assert all(np.array_equal(pooled[k], plain[k]) for k in plain)
        describe("process pool, 2", wall, 2, wall * 2, 0.0, emitters, "emitters/s", emitters, base)
        print("    (the pool's line counts its whole wall time as compute: no per-task times)")
    from distributed import get_task_stream

    for n in worker_counts:
        t0 = time.perf_counter()
        with dask_client(local_workers=n) as client:
            t_start = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.run(simulate_dataset, 2, 2, 1, 1000, 1)  # every worker compiles once
            t_warm = time.perf_counter() - t0
            with get_task_stream(client) as stream:
                t0 = time.perf_counter()
                data = simulate_dataset(**kw, client=client)
                wall = time.perf_counter() - t0
            assert all(np.array_equal(data[k], plain[k]) for k in plain), "not the same arrays"
            c, other, k = task_times(stream.data, "_simulate")
            print(f"  {n} workers: cluster start {t_start:.2f} s, warm-up {t_warm:.2f} s; arrays identical")
            describe(f"dask, {n} workers", wall, n, c, other, k, "emitters/s", emitters, base)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8, help="SRM run files to re-analyse")
    p.add_argument("--grid", default="6x6", help="pixels of each run, ROWSxCOLS")
    p.add_argument("--method", choices=("cnn", "mle"), default="cnn")
    p.add_argument("--emitters", type=int, default=12)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--workers", default="1,2", help="Dask worker counts, comma-separated")
    p.add_argument("--sections", default="reanalyze,training")
    a = p.parse_args()
    grid = tuple(int(v) for v in a.grid.lower().split("x"))
    counts = [int(v) for v in a.workers.split(",")]
    print(f"bench_scale: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other work on the cores "
          f"shows in every rate); rates after warm-up, ratios to the single process in this run")
    t_all = time.perf_counter()
    if "reanalyze" in a.sections:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            folder = Path(tmp)
            runs = [write_srm_run(folder, f"srm-20000101-{i:06d}-bench0", i, grid, 0.2 + 0.6 * i / max(a.runs, 1))
                    for i in range(a.runs)]
            bench_reanalyze(folder, runs, counts, a.method)
    if "training" in a.sections:
        bench_training(a.emitters, a.windows, a.events, counts)
    print(f"bench_scale: {time.perf_counter() - t_all:.0f} s in all; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":  # (Dask's worker processes are spawned: they import this file without running it)
    raise SystemExit(main())
