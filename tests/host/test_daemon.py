"""The host daemon against a hand-driven rig socket: store in order, ack, drop duplicates and junk;
per-pixel g2 as pixels arrive; answers to adaptive dwell's partial pixels; a slow run-end analysis
holds up neither; a run's session closes it; commands posted from other threads go out promptly."""

from __future__ import annotations

import logging
import threading
import time

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from nvscope.host.daemon import HostDaemon
from nvscope.host.session import RunPhase
from nvscope.host.srm.online_g2 import G2_REASONS, REASON_NO_EVENTS
from nvscope.host.store import run_path
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, singles_base
from nvscope.proto import decode, encode
from nvscope.proto.endpoints import rig_socket
from nvscope.proto.messages import Ack, Heartbeat, Hello, PartialG2, PartialPixel, Pixel, RunEnd, RunStart, Stop


@pytest.fixture
def rig_and_host(tmp_path):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    endpoint = rig.getsockopt(zmq.LAST_ENDPOINT).decode()
    host = HostDaemon(endpoint, tmp_path, analyses={}, ctx=ctx)
    peer = recv_hello(rig, host)
    yield rig, peer, host, tmp_path
    host.close()
    rig.close()
    ctx.term()


def recv_hello(rig, host: HostDaemon, timeout_s: float = 10.0) -> bytes:
    """The routing id of `host`'s hello (the heartbeats of hosts before it are skipped), stepping `host`
    meanwhile: a hello sent before its connection is up (ZMQ_IMMEDIATE) goes out at its next step."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not rig.poll(20):
            host.step(0)
            continue
        peer, *frames = rig.recv_multipart()
        if isinstance(decode(frames), Hello):
            return peer
    raise AssertionError(f"no hello within {timeout_s} s")


def pixel(run_id: str, seq: int) -> Pixel:
    hist = np.full(215, seq, dtype=np.int64)
    return Pixel(run_id=run_id, seq=seq, index=seq - 1, ix=seq - 1, iy=0,
                 position=np.array([seq * 1e-7, 0.0, 0.0]), dwell_s=0.1, n_a=10 * seq, n_b=11 * seq,
                 n_events=215 * seq, hist=hist)


def pump(host: HostDaemon, rig, want_acks: int, until_seq: int | None = None) -> list[Ack]:
    """Serve the host until the rig has `want_acks` replies (and, with `until_seq`, an ack of that seq:
    a run_end is acknowledged only once its analysis is written, after the acks of what came before)."""
    acks = []
    for _ in range(200):
        host.step(20)
        while rig.poll(0):
            _, *frames = rig.recv_multipart()
            msg = decode(frames)
            if not isinstance(msg, Heartbeat):  # the host's heartbeats, every second, are not replies
                acks.append(msg)
        if len(acks) >= want_acks and (until_seq is None or any(a.seq == until_seq for a in acks)):
            break
    return acks


def test_pixels_stored_in_order_with_duplicates_and_junk_dropped(rig_and_host):
    rig, peer, host, out = rig_and_host
    run = "srm-test-1"
    start = RunStart(run_id=run, seq=0, run_kind="srm", config={"scan": {"nx": 3}}, version="v-test",
                     seed=42, n_pixels=3, grid_shape=np.array([1, 3]))
    send = lambda frames: rig.send_multipart([peer, *frames])  # noqa: E731
    send(encode(start))
    send(encode(pixel(run, 1)))
    send([b"\x00not msgpack"])                                                  # garbage
    send([msgpack.packb(["nvscope", "pixel", 7, {}])])                          # wrong schema
    send([msgpack.packb(["nvscope", "teleport", 1, {}])])                       # unknown kind
    send(encode(pixel(run, 1)))                                                 # duplicate
    send(encode(pixel(run, 2)))
    acks = pump(host, rig, 1)
    assert acks and all(isinstance(a, Ack) for a in acks)
    assert acks[-1].run_id == run and acks[-1].seq == 2
    assert host.stats.malformed == 3 and host.stats.duplicates == 1
    report = host.report()  # what `nvscope status` and the web view show
    assert report["malformed"] == 3 and 0 < report["ack_latency_s"] < 5
    # readable while the run goes on (SWMR)
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["pixels/seq"][()].tolist() == [1, 2]
        assert f.attrs["exit_status"] == "running"
    send(encode(pixel(run, 3)))
    send(encode(RunEnd(run_id=run, seq=4, exit_status="completed", n_pixels=3)))
    acks = pump(host, rig, 1, until_seq=4)
    assert [a.seq for a in acks] == [3, 4]  # the pixel at once, the run_end once the file is final
    assert host.stats.finished == [(run, "completed")]
    with h5py.File(run_path(out, run), "r") as f:
        assert f["pixels/seq"][()].tolist() == [1, 2, 3]
        assert f["pixels/hist"][2].tolist() == [3] * 215
        assert f["pixels/position"][1, 0] == pytest.approx(2e-7)
        assert f.attrs["exit_status"] == "completed"
        assert f.attrs["seed"] == 42 and f.attrs["rt_version"] == "v-test"
        assert '"nx": 3' in f.attrs["config"]
        assert f["gaps"].shape == (0, 2)


def test_gap_is_recorded_and_reported_not_skipped(rig_and_host, caplog):
    rig, peer, host, out = rig_and_host
    run = "srm-gap"
    rig.send_multipart([peer, *encode(RunStart(run_id=run, seq=0, n_pixels=5, grid_shape=np.array([1, 5])))])
    rig.send_multipart([peer, *encode(pixel(run, 1))])
    rig.send_multipart([peer, *encode(pixel(run, 4))])
    pump(host, rig, 1)
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["gaps"][()].tolist() == [[2, 3]]
    assert "never arrived" in caplog.text


def test_host_restart_resumes_the_file(rig_and_host):
    rig, peer, host, out = rig_and_host
    run = "srm-resume"
    rig.send_multipart([peer, *encode(RunStart(run_id=run, seq=0, n_pixels=4, grid_shape=np.array([1, 4])))])
    rig.send_multipart([peer, *encode(pixel(run, 1))])
    pump(host, rig, 1)
    host.close()  # the host goes away; a new one comes back on the same folder
    endpoint = rig.getsockopt(zmq.LAST_ENDPOINT).decode()
    host2 = HostDaemon(endpoint, out, analyses={}, ctx=rig.context)
    peer2 = recv_hello(rig, host2)
    for seq in (1, 2):  # replay from the first unacknowledged: seq 1 is a duplicate now
        rig.send_multipart([peer2, *encode(pixel(run, seq))])
    acks = pump(host2, rig, 1)
    assert acks[-1].seq == 2 and host2.stats.duplicates == 1
    host2.close()
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["pixels/seq"][()].tolist() == [1, 2]


def antibunched(run_id: str, seq: int, g0: float = 0.3, singles: int = 50_000, dwell_s: float = 1.0,
                kind=Pixel, rng=np.random.default_rng(7)):
    """A pixel (or a partial pixel) whose histogram is drawn from the NV model with g2(0) = g0."""
    hist = rng.poisson(expected_histogram(NV_DEFAULT_SHAPE, g0, singles_base(singles, singles, dwell_s)))
    fields = dict(run_id=run_id, seq=seq, index=seq - 1, dwell_s=dwell_s, n_a=singles, n_b=singles,
                  n_events=int(hist.sum()), hist=hist.astype(np.int64))
    if kind is Pixel:
        fields.update(ix=seq - 1, iy=0, position=np.array([seq * 1e-7, 0.0, 0.0]))
    return kind(**fields)


def empty_pixel(run_id: str, seq: int) -> Pixel:
    return Pixel(run_id=run_id, seq=seq, index=seq - 1, ix=seq - 1, iy=0, dwell_s=1.0, n_a=0, n_b=0)


def start_srm(rig, peer, run: str, n: int) -> None:
    rig.send_multipart([peer, *encode(RunStart(run_id=run, seq=0, run_kind="srm", n_pixels=n,
                                               grid_shape=np.array([1, n])))])


def test_pixels_get_their_g2_in_the_file_as_they_arrive(rig_and_host):
    rig, peer, host, out = rig_and_host
    run = "srm-online"
    start_srm(rig, peer, run, 4)
    for seq in (1, 2):
        rig.send_multipart([peer, *encode(antibunched(run, seq))])
    rig.send_multipart([peer, *encode(empty_pixel(run, 3))])
    assert pump(host, rig, 1)[-1].seq == 3
    assert host.settle(10)  # the g2 rows follow the ack, from the g2 worker
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:  # the run is still going
        assert f.attrs["exit_status"] == "running"
        g = f["pixels"]
        g2, std, reason, latency = (g[k][()] for k in ("g2", "g2_std", "g2_reason", "g2_latency_s"))
        assert f.attrs["g2_online_estimator"] == "mle"
        assert list(f.attrs["g2_reasons"]) == list(G2_REASONS)
    assert len(g2) == 3
    assert np.all(np.abs(g2[:2] - 0.3) < 4 * std[:2]) and np.all((std[:2] > 0) & (std[:2] < 0.3))
    assert reason.tolist() == [0, 0, REASON_NO_EVENTS] and np.isnan(g2[2]) and np.isnan(std[2])
    assert np.all((latency > 0) & (latency < 5.0))


def test_partial_pixel_is_answered_not_stored(rig_and_host):
    rig, peer, host, out = rig_and_host
    run = "srm-partial"
    start_srm(rig, peer, run, 2)
    rig.send_multipart([peer, *encode(antibunched(run, 1))])
    pump(host, rig, 1)
    partial = antibunched(run, 2, g0=0.5, dwell_s=0.4, kind=PartialPixel)
    rig.send_multipart([peer, *encode(partial)])
    rig.send_multipart([peer, *encode(PartialPixel(run_id=run, seq=2, index=1, dwell_s=0.1))])  # empty so far
    magic, kind, schema, body = msgpack.unpackb(encode(partial)[0])
    body["hist"] = {"nd": ["<i8", [214]], "b": body["hist"]["b"][:-8]}  # a histogram one bin short
    rig.send_multipart([peer, msgpack.packb([magic, kind, schema, body], use_bin_type=True)])
    replies = pump(host, rig, 2)
    assert all(isinstance(r, PartialG2) for r in replies) and len(replies) == 2
    full, empty = replies
    assert (full.run_id, full.seq, full.index, full.dwell_s) == (run, 2, 1, 0.4)
    assert 0 < full.g2_std < 0.5 and abs(full.g2 - 0.5) < 4 * full.g2_std
    assert np.isnan(empty.g2_std) and empty.dwell_s == 0.1
    assert host.stats.malformed == 1  # dropped with a logged line, unanswered
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["pixels/seq"][()].tolist() == [1] and f["pixels/g2"].shape == (1,)
        assert f["stored_seq"][0] == 1


class BrokenEstimator:
    name, min_events = "broken", 1

    def estimate(self, *args):
        raise RuntimeError("no estimate today")


def test_restarted_host_estimates_the_pixels_stored_without_g2(rig_and_host, caplog):
    rig, peer, _, out = rig_and_host
    endpoint = rig.getsockopt(zmq.LAST_ENDPOINT).decode()
    broken = HostDaemon(endpoint, out, analyses={}, ctx=rig.context, g2_estimator=BrokenEstimator())
    peer2 = recv_hello(rig, broken)
    run = "srm-catch-up"
    start_srm(rig, peer2, run, 3)
    for seq in (1, 2):
        rig.send_multipart([peer2, *encode(antibunched(run, seq))])
    assert pump(broken, rig, 1)[-1].seq == 2  # stored and acknowledged, whatever the estimator does
    broken.close()  # waits for the g2 worker
    assert "on-line g2 failed" in caplog.text
    again = HostDaemon(endpoint, out, analyses={}, ctx=rig.context)
    peer3 = recv_hello(rig, again)
    rig.send_multipart([peer3, *encode(antibunched(run, 3))])
    pump(again, rig, 1)
    again.close()
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        g2, latency = f["pixels/g2"][()], f["pixels/g2_latency_s"][()]
        assert f.attrs["g2_online_estimator"] == "mle"
    assert len(g2) == 3 and np.all(np.isfinite(g2))
    assert np.isnan(latency[:2]).all() and latency[2] > 0  # arrival unknown to the new host


class SlowAnalysis:
    """A run-end analysis that takes `seconds` (sleeping, like a long fit that releases the GIL)."""

    def __init__(self, seconds: float):
        self.seconds, self.started, self.calls = seconds, None, 0

    def __call__(self, store):
        self.started = time.monotonic()
        self.calls += 1
        time.sleep(self.seconds)
        return {"result/x": np.arange(3.0)}, {"analysis_note": "slow"}


def collect(host: HostDaemon, rig, until, timeout_s: float = 10.0) -> list[tuple[object, float]]:
    """Serve the host until `until(replies)`; every reply with the monotonic time it reached the rig."""
    replies, deadline = [], time.monotonic() + timeout_s
    while not until(replies) and time.monotonic() < deadline:
        host.step(2)
        while rig.poll(0):
            _, *frames = rig.recv_multipart()
            if not isinstance(decode(frames), Heartbeat):
                replies.append((decode(frames), time.monotonic()))
    return replies


def test_slow_analysis_delays_neither_acks_nor_partial_answers(tmp_path):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    slow = SlowAnalysis(2.0)
    host = HostDaemon(rig.getsockopt(zmq.LAST_ENDPOINT).decode(), tmp_path, analyses={"srm": slow}, ctx=ctx)
    peer = recv_hello(rig, host)
    try:
        start_srm(rig, peer, "srm-slow-1", 2)
        for seq in (1, 2):
            rig.send_multipart([peer, *encode(antibunched("srm-slow-1", seq))])
        rig.send_multipart([peer, *encode(RunEnd(run_id="srm-slow-1", seq=3, n_pixels=2))])
        collect(host, rig, lambda r: slow.started is not None)
        assert slow.started is not None
        # a second run streams while the first one's analysis sleeps
        run = "srm-slow-2"
        start_srm(rig, peer, run, 20)
        rig.send_multipart([peer, *encode(antibunched(run, 1))])
        collect(host, rig, lambda r: any(isinstance(m, Ack) and m.run_id == run for m, _ in r))
        ack_s, answer_s = [], []
        for seq in range(2, 12):
            t0 = time.monotonic()
            rig.send_multipart([peer, *encode(antibunched(run, seq))])
            got = collect(host, rig, lambda r: any(isinstance(m, Ack) and m.seq == seq for m, _ in r))
            ack_s.append(next(t for m, t in got if isinstance(m, Ack) and m.seq == seq) - t0)
            t0 = time.monotonic()
            rig.send_multipart([peer, *encode(antibunched(run, seq + 1, dwell_s=0.5, kind=PartialPixel))])
            got = collect(host, rig, lambda r: any(isinstance(m, PartialG2) for m, _ in r))
            answer_s.append(next(t for m, t in got if isinstance(m, PartialG2)) - t0)
        assert time.monotonic() - slow.started < slow.seconds  # all of it while the analysis ran
        assert slow.calls == 1
        # bounds far above the few ms they take, far below the analysis's 2 s (loaded test machines)
        assert max(ack_s) < 0.5 and np.median(ack_s) < 0.1, ack_s
        assert max(answer_s) < 0.5 and np.median(answer_s) < 0.1, answer_s
        # the first run's run_end is acknowledged once its results are in the file, not before
        got = collect(host, rig, lambda r: any(isinstance(m, Ack) and m.run_id == "srm-slow-1" and m.seq == 3
                                               for m, _ in r))
        t_ack = next(t for m, t in got if isinstance(m, Ack) and m.run_id == "srm-slow-1" and m.seq == 3)
        assert t_ack - slow.started >= slow.seconds
        with h5py.File(run_path(tmp_path, "srm-slow-1"), "r") as f:
            assert f.attrs["exit_status"] == "completed" and f.attrs["analysis_note"] == "slow"
            assert f["result/x"][()].tolist() == [0.0, 1.0, 2.0] and f.attrs["analysis_s"] >= slow.seconds
            assert f["pixels/g2"].shape == (2,)  # the on-line g2 was complete before the analysis
        assert host.sessions["srm-slow-1"].phase is RunPhase.FINISHED
        assert host.stats.finished == [("srm-slow-1", "completed")]
    finally:
        host.close()
        rig.close()
        ctx.term()


def test_session_closes_a_run_as_before(rig_and_host):
    """A run_end moves the run through ending and analysing to finished; the file carries the exit
    status, reason and the host's settings; a replayed run_end is a duplicate, acknowledged again."""
    rig, peer, host, out = rig_and_host
    run = "srm-session"
    host.analyses["srm"] = lambda store: ({"maps/n": np.array([store.n_pixels])}, {"analysis_note": "ok"})
    host.run_attributes[run] = {"operator_note": "bench 3"}
    start_srm(rig, peer, run, 1)
    rig.send_multipart([peer, *encode(antibunched(run, 1))])
    end = RunEnd(run_id=run, seq=2, exit_status="stopped", reason="stopped by the host", n_pixels=1)
    rig.send_multipart([peer, *encode(end)])
    acks = pump(host, rig, 1, until_seq=2)
    session = host.sessions[run]
    assert session.phase is RunPhase.FINISHED and session.exit_status == "stopped" and session.kind == "srm"
    assert session.end == end and acks[-1] == Ack(run_id=run, seq=2) and host.stats.finished == [(run, "stopped")]
    rig.send_multipart([peer, *encode(end)])  # replayed: dropped, acknowledged again
    acks = pump(host, rig, 1)
    assert acks[-1].seq == 2 and host.stats.duplicates == 1 and host.stats.finished == [(run, "stopped")]
    with h5py.File(run_path(out, run), "r") as f:
        assert f.attrs["exit_status"] == "stopped" and f.attrs["reason"] == "stopped by the host"
        assert f["maps/n"][()].tolist() == [1] and f.attrs["analysis_note"] == "ok"
        assert f.attrs["operator_note"] == "bench 3" and f.attrs["g2_online_estimator"] == "mle"
        assert f["pixels/g2"].shape == (1,) and np.isfinite(f["pixels/g2"][0])


def test_post_from_another_thread_is_sent_promptly(rig_and_host):
    rig, peer, host, _ = rig_and_host
    stop = threading.Event()

    def io_loop():
        while not stop.is_set():
            host.step(200)  # waits on the socket far longer than the post may take

    io = threading.Thread(target=io_loop)
    io.start()
    try:
        time.sleep(0.1)
        delays = []
        for i in range(20):
            t0 = time.monotonic()
            threading.Thread(target=host.post, args=(Stop(run_id="srm-x", seq=100 + i, reason=f"r{i}"),)).start()
            while True:  # the host's heartbeats (one a second) pass by
                assert rig.poll(2000)
                _, *frames = rig.recv_multipart()
                if not isinstance(decode(frames), Heartbeat):
                    break
            delays.append(time.monotonic() - t0)
            assert decode(frames) == Stop(run_id="srm-x", seq=100 + i, reason=f"r{i}")
        assert np.median(delays) < 0.05 and max(delays) < 0.19, delays  # not the 200 ms poll
    finally:
        stop.set()
        io.join()


class GatedProcesses:
    """Stands in for the daemon's worker processes: each job waits for `gate`, then runs in line."""

    def __init__(self):
        self.gate, self.jobs = threading.Event(), []

    def run(self, fn, *args):
        self.jobs.append(args)
        assert self.gate.wait(30)
        return fn(*args)

    def close(self, wait=True):
        self.gate.set()


def test_a_late_shape_refit_neither_holds_up_nor_reorders_the_g2_rows(rig_and_host):
    """The refit due after two pixels is held back while six more pixels arrive: their g2 rows are
    written at once, in order, with the shape in use (the default); a partial pixel is answered
    meanwhile; once the refit is back (and the one it made due), later pixels use the new shape."""
    from nvscope.host.srm.online_g2 import MleEstimator, estimate_pixels
    from nvscope.models.g2.model import pixel_base

    rig, peer, host, out = rig_and_host
    gated = GatedProcesses()
    host.lanes.processes = gated
    run = "srm-late-refit"
    start_srm(rig, peer, run, 12)
    pixels = [antibunched(run, seq, g0=0.1 * (seq % 5)) for seq in range(1, 13)]

    def send_and_wait_rows(msgs, rows):
        for m in msgs:
            rig.send_multipart([peer, *encode(m)])
        collect(host, rig, lambda r: run in host.sessions and host.sessions[run].store.n_g2 >= rows)

    try:
        send_and_wait_rows(pixels[:2], 2)
        collect(host, rig, lambda r: gated.jobs)
        assert len(gated.jobs) == 1  # the refit due after 2 pixels is out, held back
        send_and_wait_rows(pixels[2:8], 8)
        session = host.sessions[run]
        assert len(gated.jobs) == 1 and session.g2.scan.shape == NV_DEFAULT_SHAPE
        t0 = time.monotonic()
        rig.send_multipart([peer, *encode(antibunched(run, 9, dwell_s=0.5, kind=PartialPixel))])
        got = collect(host, rig, lambda r: any(isinstance(m, PartialG2) for m, _ in r))
        assert any(isinstance(m, PartialG2) for m, _ in got) and time.monotonic() - t0 < 2.0
    finally:
        gated.gate.set()
    assert host.settle(30)
    assert len(gated.jobs) == 2  # the sum of 8 pixels made the second refit due
    fitted = session.g2.scan.shape
    assert fitted != NV_DEFAULT_SHAPE
    assert session.g2.scan.shape_events == pytest.approx(sum(p.n_events for p in pixels[:8]))
    send_and_wait_rows(pixels[8:], 12)
    assert host.settle(10)
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        g2 = f["pixels/g2"][()]
        assert f["pixels/seq"][()].tolist() == list(range(1, 13))
    hist = np.stack([p.hist for p in pixels])
    base = pixel_base(np.array([p.n_a for p in pixels]), np.array([p.n_b for p in pixels]),
                      np.array([p.dwell_s for p in pixels]), 12)
    from nvscope.models.g2.model import kernel_bin_averages, pixel_models

    default = estimate_pixels(MleEstimator(), hist[:8], pixel_models(base[:8], kernel_bin_averages(NV_DEFAULT_SHAPE))).g2
    later = estimate_pixels(MleEstimator(), hist[8:], pixel_models(base[8:], kernel_bin_averages(fitted))).g2
    np.testing.assert_allclose(g2, np.r_[default, later], rtol=1e-9)
    assert len(set(np.round(g2, 9))) == 12  # every row differs: a swap of two rows would show


def test_use_shape_keeps_the_refit_of_the_larger_sum():
    from nvscope.host.srm.online_g2 import MleEstimator, ScanEstimator
    from nvscope.models.g2.model import EmitterShape
    from nvscope.models.g2.scan_context import ScanContext

    def context(shape, events):
        return ScanContext(shape, 0, None, 0.0, 1e-9, 0.0, events)

    scan = ScanEstimator(MleEstimator())
    newer, older = EmitterShape(12e-9, 200e-9, 0.5), EmitterShape(15e-9, 300e-9, 0.8)
    assert scan.use_shape(context(newer, 9000.0), 9000.0)
    assert not scan.use_shape(context(older, 4000.0), 4000.0)  # a refit of a smaller sum came back late
    assert scan.shape == newer and scan.shape_events == 9000.0
    assert not scan.use_shape(ScanContext(older, 4, None, 0.0, 1e-9, 0.0, 1e5), 1e5)  # the default: no antibunching


class AnalysisInProcess:
    """A `ProcessAnalysis` whose compute is a builtin (picklable, runs in the worker process):
    int('not a number') raises there; os._exit kills the worker; tuple returns its input."""

    def __init__(self, compute, inputs):
        self.compute, self.inputs, self.read_in = compute, inputs, None

    def read(self, store):
        self.read_in = threading.current_thread().name
        return self.inputs


def run_to_its_end(rig, peer, host, run: str, n: int) -> None:
    start_srm(rig, peer, run, n)
    for seq in range(1, n + 1):
        rig.send_multipart([peer, *encode(antibunched(run, seq))])
    rig.send_multipart([peer, *encode(RunEnd(run_id=run, seq=n + 1, n_pixels=n))])
    acks = pump(host, rig, 1, until_seq=n + 1)
    assert any(a.run_id == run and a.seq == n + 1 for a in acks)


@pytest.mark.parametrize("compute, inputs, error", [(int, "not a number", "ValueError"),
                                                     (__import__("os")._exit, 3, "BrokenProcessPool")])
def test_analysis_failing_in_its_process_keeps_every_pixel(rig_and_host, compute, inputs, error):
    """A run-end analysis that raises in the worker process, or kills it, finalizes the run with
    analysis_error and every pixel; the next run's analysis runs (in a fresh process if need be)."""
    import os

    rig, peer, host, out = rig_and_host
    host.analyses["srm"] = analysis = AnalysisInProcess(compute, inputs)
    run_to_its_end(rig, peer, host, "srm-fails", 3)
    assert analysis.read_in == "nvscope-analysis"
    with h5py.File(run_path(out, "srm-fails"), "r") as f:
        assert f.attrs["exit_status"] == "completed"
        assert f.attrs["analysis_error"].startswith(error)
        assert f["pixels/seq"][()].tolist() == [1, 2, 3] and f["pixels/g2"].shape == (3,)
    host.analyses["srm"] = AnalysisInProcess(tuple, ({"maps/pid": np.array([os.getpid()])}, {"analysis_note": "ok"}))
    run_to_its_end(rig, peer, host, "srm-after", 2)
    with h5py.File(run_path(out, "srm-after"), "r") as f:
        assert f.attrs["analysis_note"] == "ok" and "analysis_error" not in f.attrs
        assert f["maps/pid"][0] == os.getpid()  # the results came back to the host, which wrote them


def test_close_abandons_an_analysis_running_in_its_process(rig_and_host):
    """A host that closes while a run-end analysis runs in its worker process stops the process and
    leaves the file as it was (every pixel, status running), for the next host to analyse."""
    rig, peer, host, out = rig_and_host
    host.analyses["srm"] = AnalysisInProcess(time.sleep, 60.0)
    run = "srm-abandoned"
    start_srm(rig, peer, run, 2)
    for seq in (1, 2):
        rig.send_multipart([peer, *encode(antibunched(run, seq))])
    rig.send_multipart([peer, *encode(RunEnd(run_id=run, seq=3, n_pixels=2))])
    collect(host, rig, lambda r: host.processes.started and host.sessions[run].phase is RunPhase.ANALYSING)
    time.sleep(0.2)
    t0 = time.monotonic()
    host.close(wait_s=0.5)
    assert time.monotonic() - t0 < 10.0  # not the analysis's 60 s
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f.attrs["exit_status"] == "running" and "analysis_error" not in f.attrs
        assert f["pixels/seq"][()].tolist() == [1, 2]
    assert host.stats.finished == []


def test_a_silent_rig_is_reported_within_the_timeout_and_its_return_too(tmp_path, caplog):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    host = HostDaemon(rig.getsockopt(zmq.LAST_ENDPOINT).decode(), tmp_path, analyses={}, ctx=ctx, peer_timeout_s=0.5)
    peer = recv_hello(rig, host)
    run = "srm-quiet"
    try:
        rig.send_multipart([peer, *encode(RunStart(run_id=run, seq=0, n_pixels=3, grid_shape=np.array([1, 3])))])
        pump(host, rig, 1)
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO):
            while not host.rig_silent and time.monotonic() - t0 < 3.0:
                host.step(20)
            waited, reported = time.monotonic() - t0, host.rig_silent
            rig.send_multipart([peer, *encode(pixel(run, 1))])
            pump(host, rig, 1)
        assert reported and waited < 1.0, waited  # 0.5 s after the last frame heard (before t0)
        assert "silent for" in caplog.text and f"runs {run} waiting for it" in caplog.text
        assert not host.rig_silent and "back after" in caplog.text
    finally:
        host.close()
        rig.close()
        ctx.term()
