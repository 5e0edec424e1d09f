"""The host daemon against a hand-driven rig socket: store in order, ack, drop duplicates and junk."""

from __future__ import annotations

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from nvscope.host.daemon import HostDaemon
from nvscope.host.store import run_path
from nvscope.proto import decode, encode
from nvscope.proto.endpoints import rig_socket
from nvscope.proto.messages import Ack, Hello, Pixel, RunEnd, RunStart


@pytest.fixture
def rig_and_host(tmp_path):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    endpoint = rig.getsockopt(zmq.LAST_ENDPOINT).decode()
    host = HostDaemon(endpoint, tmp_path, analyses={}, ctx=ctx)
    peer, *frames = rig.recv_multipart()
    assert isinstance(decode(frames), Hello)
    yield rig, peer, host, tmp_path
    host.close()
    rig.close()
    ctx.term()


def pixel(run_id: str, seq: int) -> Pixel:
    hist = np.full(215, seq, dtype=np.int64)
    return Pixel(run_id=run_id, seq=seq, index=seq - 1, ix=seq - 1, iy=0,
                 position=np.array([seq * 1e-7, 0.0, 0.0]), dwell_s=0.1, n_a=10 * seq, n_b=11 * seq,
                 n_events=215 * seq, hist=hist)


def pump(host: HostDaemon, rig, want_acks: int) -> list[Ack]:
    acks = []
    for _ in range(100):
        host.step(20)
        while rig.poll(0):
            _, *frames = rig.recv_multipart()
            acks.append(decode(frames))
        if len(acks) >= want_acks:
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
    # readable while the run goes on (SWMR)
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["pixels/seq"][()].tolist() == [1, 2]
        assert f.attrs["exit_status"] == "running"
    send(encode(pixel(run, 3)))
    send(encode(RunEnd(run_id=run, seq=4, exit_status="completed", n_pixels=3)))
    acks = pump(host, rig, 1)
    assert acks[-1].seq == 4
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
    peer2, *frames = rig.recv_multipart()
    assert isinstance(decode(frames), Hello)
    for seq in (1, 2):  # replay from the first unacknowledged: seq 1 is a duplicate now
        rig.send_multipart([peer2, *encode(pixel(run, seq))])
    acks = pump(host2, rig, 1)
    assert acks[-1].seq == 2 and host2.stats.duplicates == 1
    host2.close()
    with h5py.File(run_path(out, run), "r", libver="latest", swmr=True) as f:
        assert f["pixels/seq"][()].tolist() == [1, 2]
