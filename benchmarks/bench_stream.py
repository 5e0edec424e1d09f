"""Pixel messages rt -> host -> HDF5 with journal, acks and CurveZMQ, against raw pyzmq, in one run (issue 11):

(a) throughput: the rig's `RtLink` (journal `rt.spool.Spool` in a temporary folder, fsync in batches)
    on a keyed rig socket sends run_start, N pixels (215-bin histograms as the rig makes them) and
    run_end to a real `HostDaemon` (keyed host socket) that stores them in its HDF5 run file, flushes,
    fsyncs and acks; messages/s from the first send until the last ack reaches the rig. Baseline: raw
    pyzmq DEALER/ROUTER of the same encoded bytes (no journal, store or acks), until the receiver
    says it has them all. Also: the pipeline without CurveZMQ, and the raw transport with it.
(b) latency at 1000 pixels/s: the rig sends a pixel every 1 ms (paced, absolute schedule) and times,
    per pixel, send -> its ack received (rig side) and send -> the host's flush + fsync that made it
    durable (host side, the same monotonic clock: host and rig are on this machine).

The host's I/O loop runs in its own process by default (`--host-in thread`: a thread of this process,
sharing the rig's GIL). Brief profile of where the time goes: journal fsync, journal writes and
encoding on the rig; decode, HDF5 appends, HDF5 flush and fsync on the host (timers wrapped around
those functions for the run; nothing of nvscope is changed).

Run: .venv/bin/python benchmarks/bench_stream.py [--quick] [--host-in process|thread] [--no-g2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from bench_latency import ms, pct  # this folder is on the path when a benchmark runs as a script
from nvscope.proto import encode
from nvscope.proto.endpoints import HostSecurity, RigSecurity, host_socket, rig_socket
from nvscope.proto.keys import init_keys
from nvscope.proto.messages import Hello, Pixel, RunEnd, RunStart

GOAL_RATIO = 0.5
"""Pipeline (CURVE, journal, store, acks) messages/s over raw pyzmq's, at least."""
GOAL_P99_S = 10e-3
"""rt send -> durable store at 1000 pixels/s, p99 at most."""
PACE_S = 1e-3
SIZES = {"default": {"n": 6_000, "paced": 5_000}, "quick": {"n": 1_000, "paced": 1_000}}
"""Pixels per pipeline run (throughput) and per paced run, by size."""
RAW_MIN = 50_000
"""Messages of a raw pyzmq run at least (the pixels' frames cycled): long enough for a stable rate."""




# ---------------------------------------------------------------------------------------- timers
class Timers:
    """Wall time spent in wrapped functions (totals and counts by key), restored on exit."""

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, key: str, after: Callable | None = None) -> None:
        """Time `owner.name` under `key`; `after(args, t_end_monotonic, seconds)` is called after each call."""
        orig = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                self.total[key] += dt
                self.count[key] += 1
                if after is not None:
                    after(args, time.monotonic(), dt)
        setattr(owner, name, timed)
        self._undo.append((owner, name, orig))

    def replace(self, owner: object, name: str, new: Callable) -> None:
        """Set `owner.name` to `new` until exit."""
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def snapshot(self) -> dict[str, tuple[float, int]]:
        return {k: (self.total[k], self.count[k]) for k in self.total}

    def __enter__(self) -> Timers:
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)
        self._undo.clear()


def diff(after: dict, before: dict) -> dict[str, tuple[float, int]]:
    """Timer totals accrued between two snapshots."""
    return {k: (t - before.get(k, (0.0, 0))[0], n - before.get(k, (0.0, 0))[1]) for k, (t, n) in after.items()}


# ---------------------------------------------------------------------------------------- keys and data
def make_keys(directory: Path) -> tuple[RigSecurity, HostSecurity]:
    """A rig pair and a host pair (`nvscope keys init`), each allowing the other."""
    rig_pub, rig_sec = init_keys(directory / "rig", "rig")
    host_pub, host_sec = init_keys(directory / "host", "host")
    return RigSecurity(str(rig_sec), str(host_pub)), HostSecurity(str(host_sec), str(rig_pub))


def make_pixels(run_id: str, n: int, seed: int) -> list[Pixel]:
    """`n` SRM pixels (seq 1..n) of a 0.3 ms-dwell NV: Poisson histograms of the model's expected one."""
    from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, singles_base

    rng = np.random.default_rng(seed)
    mean = expected_histogram(NV_DEFAULT_SHAPE, 0.3, singles_base(3e4, 3e4, 0.3))
    hists = rng.poisson(mean, size=(n, len(mean))).astype(np.int64)
    nx = int(np.ceil(np.sqrt(n)))
    return [Pixel(run_id=run_id, seq=i + 1, index=i, ix=i % nx, iy=i // nx, position=np.array([i % nx, i // nx, 0]) * 1e-8,
                  dwell_s=0.3, n_a=30000, n_b=30000, n_events=int(h.sum()), hist=h) for i, h in enumerate(hists)]


# ---------------------------------------------------------------------------------------- the host
def serve_host(endpoint: str, out: str, security: HostSecurity | None, stop: Callable[[], bool],
               no_g2: bool = False) -> dict:
    """A real HostDaemon (no run-end analysis) stepping until `stop()`; its stats and the host-side timers:
    decode, HDF5 appends (RunStore.add), HDF5 flush, the whole flush (+ fsync), and every flush's
    (run, stored seq, monotonic end)."""
    from nvscope.host import daemon
    from nvscope.host.store import RunStore

    import h5py

    flushes: list[tuple[str, int, float, float]] = []
    with Timers() as timers:
        timers.wrap(daemon, "decode", "host decode")
        timers.wrap(RunStore, "add", "host append to the batch (RunStore.add)")
        timers.wrap(h5py.File, "flush", "host HDF5 flush (File.flush)")
        timers.wrap(RunStore, "flush", "host flush total (block writes, HDF5 flush, fsync)",
                    after=lambda a, t, dt: flushes.append((a[0].path.stem, a[0].last_seq, t, dt)))
        ctx = zmq.Context()
        host = daemon.HostDaemon(endpoint, out, {}, ctx=ctx, security=security)
        if no_g2:
            host.g2_estimator = None  # sessions opened from now on estimate no on-line g2
        try:
            while not stop():
                host.step(5)
        finally:
            host.close(wait_s=10.0)
            ctx.term()
        return {"stored": host.stats.stored, "duplicates": host.stats.duplicates, "finished": host.stats.finished,
                "timers": timers.snapshot(), "flushes": flushes}


def _stdin_has_line() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


class HostRunner:
    """The host daemon in a thread of this process or in its own process; `finish()` returns its report."""

    def __init__(self, mode: str, endpoint: str, out: Path, security: HostSecurity | None, no_g2: bool):
        self.mode = mode
        if mode == "thread":
            self._stop = threading.Event()
            self._result: dict = {}
            self._thread = threading.Thread(target=lambda: self._result.update(
                serve_host(endpoint, str(out), security, self._stop.is_set, no_g2)), daemon=True)
            self._thread.start()
        else:
            args = [sys.executable, __file__, "--serve-host", endpoint, str(out)]
            if security is not None:
                args += ["--host-key", security.secret_key_file, "--rig-key", security.rig_public_key]
            args += ["--no-g2"] if no_g2 else []
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True)

    def finish(self) -> dict:
        if self.mode == "thread":
            self._stop.set()
            self._thread.join(30)
            return self._result
        self._proc.stdin.write("stop\n")
        self._proc.stdin.flush()
        out, _ = self._proc.communicate(timeout=60)
        if self._proc.returncode:
            raise RuntimeError(f"host process exited {self._proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- the rig
class Rig:
    """The rig's side as rt/rig.py drives it: RtLink, journal, rig socket; a run sent as the run loop does
    (send, then poll and heartbeat per step)."""

    def __init__(self, directory: Path, security: RigSecurity | None, timers: Timers):
        from nvscope.rt import link as link_module
        from nvscope.rt.config import LinkConfig
        from nvscope.rt.spool import Spool

        self.ctx = zmq.Context()
        self.sock = rig_socket(self.ctx, "tcp://127.0.0.1:*", security)
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        cfg = LinkConfig()
        self.spool = Spool(directory, capacity=cfg.window)
        self.link = link_module.RtLink(self.sock, self.spool, cfg)
        timers.wrap(self.spool, "sync", "rig journal fsync (Spool.sync)")
        timers.wrap(self.spool, "put", "rig journal put (write, fsync every 64 / 50 ms)")
        timers.wrap(link_module, "encode", "rig encode")

    def wait_for_host(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.link.peer is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no hello from the host")
            self.link.poll(50)

    def run(self, run_id: str, pixels: list[Pixel], pace_s: float | None = None) -> dict:
        """One run: run_start, the pixels (every `pace_s` s if given), run_end; until everything is
        acknowledged. Returns the wall time, and per pixel its send and ack times (monotonic s)."""
        link, n = self.link, len(pixels)
        send_t = np.full(n + 2, np.nan)
        ack_t = np.full(n + 2, np.nan)
        acked = -1

        def take_acks():
            nonlocal acked
            if link.last_ack is not None and link.last_ack[0] == run_id and link.last_ack[1] > acked:
                ack_t[acked + 1:link.last_ack[1] + 1] = link.last_ack[2]
                acked = link.last_ack[1]

        def step(seq):
            link.poll(0)
            take_acks()
            link.heartbeat(run_id, "running", "srm", seq, n)

        def serve(commands):  # the window is full: the link waits for acks
            take_acks()

        start = RunStart(run_id=run_id, seq=0, run_kind="srm", n_pixels=n, grid_shape=np.array([1, n]))
        t0 = time.monotonic()
        self.spool.begin_run(run_id)
        send_t[0] = time.monotonic()
        link.send(start, serve)
        link.run_start = start
        for i, px in enumerate(pixels):
            if pace_s is not None:
                due = t0 + (i + 1) * pace_s
                while (left := due - time.monotonic()) > 0:
                    if left >= 1e-3 and self.sock.poll(int(left * 1e3), zmq.POLLIN):
                        step(px.seq - 1)
                    elif left < 1e-3:
                        time.sleep(left)
            send_t[px.seq] = time.monotonic()
            link.send(px, serve)
            step(px.seq)
        send_t[n + 1] = time.monotonic()
        link.send(RunEnd(run_id=run_id, seq=n + 1, n_pixels=n), serve)
        link.run_start = None
        self.spool.end_run(run_id)
        deadline = time.monotonic() + 120
        while len(self.spool) and time.monotonic() < deadline:
            link.poll(20)
            take_acks()
        if len(self.spool):
            raise TimeoutError(f"{len(self.spool)} messages of {run_id} never acknowledged")
        return {"wall_s": time.monotonic() - t0, "send_t": send_t, "ack_t": ack_t}

    def close(self) -> None:
        self.sock.close()
        self.spool.close()
        self.ctx.term()


# ---------------------------------------------------------------------------------------- raw pyzmq
def raw_receive(endpoint: str, n: int, security: HostSecurity | None = None) -> None:
    """The baseline's receiver: hello, take `n` messages, say done."""
    ctx = zmq.Context()
    sock = host_socket(ctx, endpoint, security)
    sock.send_multipart(encode(Hello(run_id="", seq=0)))
    for _ in range(n):
        sock.recv_multipart(copy=False)
    sock.send(b"done")
    sock.close()
    ctx.term()


def raw_rate(frames: list[list[bytes]], mode: str, keys: tuple[RigSecurity, HostSecurity] | None) -> float:
    """Messages/s of bare DEALER/ROUTER carrying `frames` (the receiver in a thread or a process)."""
    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*", keys[0] if keys else None)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    if mode == "thread":
        recv = threading.Thread(target=raw_receive, args=(endpoint, len(frames), keys[1] if keys else None))
        recv.start()
    else:
        args = [sys.executable, __file__, "--raw-receive", endpoint, str(len(frames))]
        if keys:
            args += ["--host-key", keys[1].secret_key_file, "--rig-key", keys[1].rig_public_key]
        recv = subprocess.Popen(args)
    peer = sock.recv_multipart()[0]
    t0 = time.monotonic()
    for f in frames:
        sock.send_multipart([peer, *f])
    sock.recv_multipart()
    dt = time.monotonic() - t0
    recv.join() if mode == "thread" else recv.wait(30)
    sock.close()
    ctx.term()
    return len(frames) / dt


# ---------------------------------------------------------------------------------------- the pipeline
def pipeline(tmp: Path, name: str, keys: tuple[RigSecurity, HostSecurity] | None, host: dict,
             pixels: list[Pixel], pace_s: float | None = None) -> tuple[dict, dict]:
    """A fresh rig and host for one run of `pixels` (every `pace_s` s if given): the rig's result (with
    its timers) and the host's report."""
    with Timers() as timers:
        rig = Rig(tmp / f"journal-{name}", keys[0] if keys else None, timers)
        host = HostRunner(host["mode"], rig.endpoint, tmp / f"out-{name}", keys[1] if keys else None,
                          host["no_g2"])
        try:
            rig.wait_for_host()
            before = timers.snapshot()
            result = rig.run(pixels[0].run_id, pixels, pace_s)
            result["timers"] = diff(timers.snapshot(), before)
        finally:
            report = host.finish()
            rig.close()
    report["timers"] = {k: tuple(v) for k, v in report["timers"].items()}
    if report["duplicates"] or [tuple(f) for f in report["finished"]] != [(pixels[0].run_id, "completed")]:
        print(f"  WARNING ({name}): host finished {report['finished']}, {report['duplicates']} duplicates")
    return result, report


def host_timers_for(report: dict, run_id: str) -> np.ndarray:
    """Durations of the host's flushes of one run."""
    return np.array([dt for r, _, _, dt in report["flushes"] if r == run_id])


def durable_times(report: dict, run_id: str, n: int) -> np.ndarray:
    """Per seq 0..n+1: when (monotonic s, host clock) the first flush covering it ended."""
    out = np.full(n + 2, np.nan)
    covered = -1
    for r, seq, t, _ in report["flushes"]:
        if r == run_id and seq > covered:
            out[covered + 1:seq + 1] = t
            covered = seq
    return out


def print_profile(label: str, wall_s: float, rig_t: dict, host_t: dict, n: int) -> None:
    print(f"  profile of {label} ({n} pixels, {wall_s:.2f} s wall; us per pixel, % of wall):")
    for where, t in (("rig", rig_t), ("host", host_t)):
        for key, (total, count) in sorted(t.items(), key=lambda kv: -kv[1][0]):
            print(f"    {key:52s} {1e6 * total / n:8.1f} us  {100 * total / wall_s:5.1f} %  ({count} calls)")


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds: fewer pixels")
    ap.add_argument("--host-in", choices=("process", "thread"), default="process",
                    help="where the host daemon's I/O loop runs (default: its own process)")
    ap.add_argument("--no-g2", action="store_true", help="host without the on-line g2 estimate (for profiling)")
    ap.add_argument("--dir", help="folder for journals and run files (default: a temporary one; a real disk: "
                                  "fsync is measured)")
    ap.add_argument("--n", type=int, help="pixels per throughput run")
    ap.add_argument("--serve-host", nargs=2, metavar=("ENDPOINT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--raw-receive", nargs=2, metavar=("ENDPOINT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--host-key", help=argparse.SUPPRESS)
    ap.add_argument("--rig-key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("nvscope.rt.link").setLevel(logging.ERROR)  # "acquisition paused" is expected here
    host_sec = HostSecurity(args.host_key, args.rig_key) if args.host_key else None
    if args.serve_host:
        report = serve_host(*args.serve_host, host_sec, _stdin_has_line, args.no_g2)
        print(json.dumps(report), flush=True)
        return
    if args.raw_receive:
        raw_receive(args.raw_receive[0], int(args.raw_receive[1]), host_sec)
        return

    size = SIZES["quick" if args.quick else "default"]
    n, n_paced = args.n or size["n"], size["paced"]
    mode = args.host_in
    how = {"mode": mode, "no_g2": args.no_g2}
    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        keys = make_keys(tmp / "keys")
        pixels = make_pixels("bench-a", n, 0)
        frames = [encode(p) for p in pixels]
        print(f"bench_stream: {n} pixels of {len(frames[0][0])} bytes per throughput run, {n_paced} paced at "
              f"{PACE_S * 1e3:g} ms; host in a {mode}{' (no on-line g2)' if args.no_g2 else ''}; files in {tmp}")
        raw_frames = [frames[i % n] for i in range(max(n, RAW_MIN))]
        raw = raw_rate(raw_frames, mode, None)
        raw_curve = raw_rate(raw_frames, mode, keys)
        thr, rep_curve = pipeline(tmp, "curve", keys, how, pixels)
        thr_plain, rep_plain = pipeline(tmp, "plain", None, how, pixels)
        lat, rep_lat = pipeline(tmp, "paced", keys, how, make_pixels("bench-c", n_paced, 2), PACE_S)

    rate = n / thr["wall_s"]
    rate_plain = n / thr_plain["wall_s"]
    send, ack = lat["send_t"][1:-1], lat["ack_t"][1:-1]
    to_ack = ack - send
    to_durable = durable_times(rep_lat, "bench-c", n_paced)[1:-1] - send
    sent_rate = (n_paced - 1) / (send[-1] - send[0])
    flush = host_timers_for(rep_lat, "bench-c")
    ok = lambda b: "yes" if b else "NO"  # noqa: E731
    print(f"(a) throughput, messages/s until the last ack (rig) / the receiver has all ({len(raw_frames)} raw):")
    print(f"  {'raw pyzmq DEALER/ROUTER (baseline)':52s} {raw:9.0f} msg/s  1.00x")
    print(f"  {'raw pyzmq + CurveZMQ':52s} {raw_curve:9.0f} msg/s  {raw_curve / raw:.2f}x")
    print(f"  {'pipeline, no CurveZMQ (journal, HDF5, fsync, acks)':52s} {rate_plain:9.0f} msg/s  "
          f"{rate_plain / raw:.2f}x")
    print(f"  {'pipeline with CurveZMQ':52s} {rate:9.0f} msg/s  {rate / raw:.2f}x   goal >= {GOAL_RATIO}x: "
          f"{ok(rate / raw >= GOAL_RATIO)}")
    print(f"  cost of CurveZMQ: pipeline {rate / rate_plain:.2f}x without it; raw transport {raw_curve / raw:.2f}x")
    print(f"(b) paced at {1e-3 * sent_rate:.2f} k pixels/s (goal 1.00), CurveZMQ on, {n_paced} pixels:")
    print(f"  rig send -> ack received (rig):        p50 {ms(pct(to_ack, 50))}  p99 {ms(pct(to_ack, 99))}  "
          f"max {ms(np.nanmax(to_ack))}   goal p99 <= {ms(GOAL_P99_S).strip()}: {ok(pct(to_ack, 99) <= GOAL_P99_S)}")
    late = send - send[0] >= 1.0
    if late.any():
        print(f"  the same after the first second ({late.sum()} pixels): p50 {ms(pct(to_ack[late], 50))}  "
              f"p99 {ms(pct(to_ack[late], 99))}  max {ms(np.nanmax(to_ack[late]))}")
    print(f"  rig send -> host flush+fsync done:     p50 {ms(pct(to_durable, 50))}  p99 {ms(pct(to_durable, 99))}  "
          f"max {ms(np.nanmax(to_durable))}")
    print(f"  host flush+fsync per batch ({len(flush)} flushes, {n_paced / max(1, len(flush)):.1f} px each): "
          f"p50 {ms(pct(flush, 50))}  p99 {ms(pct(flush, 99))}  max {ms(flush.max() if len(flush) else np.nan)}")
    print_profile("(a) with CurveZMQ", thr["wall_s"], thr["timers"], rep_curve["timers"], n)
    print_profile("(a) without CurveZMQ", thr_plain["wall_s"], thr_plain["timers"], rep_plain["timers"], n)
    print_profile("(b) paced, CurveZMQ", lat["wall_s"], lat["timers"], rep_lat["timers"], n_paced)

if __name__ == "__main__":
    main()
