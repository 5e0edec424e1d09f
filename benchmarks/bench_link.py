"""Pixel messages per second over TCP loopback (DEALER/ROUTER), in one run:
(a) the full nvscope codec (dataclass -> msgpack with raw-byte arrays -> validated dataclass),
(b) the bare transport with the histogram as raw bytes (no dataclass, no validation),
(c) the baseline: the bare transport with the histogram as a msgpack list of ints."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import zmq

from nvscope.proto import decode, encode
from nvscope.proto.endpoints import host_socket, rig_socket
from nvscope.proto.messages import Hello, Pixel

N = 50_000


def _pump(encode_fn, decode_fn, msgs) -> float:
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    host = host_socket(ctx, rig.getsockopt(zmq.LAST_ENDPOINT).decode())
    host.send_multipart(encode(Hello(run_id="", seq=0)))
    peer = rig.recv_multipart()[0]
    received = []

    def receive():
        for _ in range(len(msgs)):
            received.append(decode_fn(host.recv_multipart(copy=False)))

    t = threading.Thread(target=receive)
    t0 = time.perf_counter()
    t.start()
    for m in msgs:
        rig.send_multipart([peer, *encode_fn(m)])
    t.join()
    dt = time.perf_counter() - t0
    assert len(received) == len(msgs)
    rig.close(); host.close(); ctx.term()
    return len(msgs) / dt


def _encode_list(m: Pixel):
    return [msgpack.packb([m.run_id, m.seq, m.index, m.position.tolist(), m.hist.tolist()])]


def _decode_list(frames):
    run_id, seq, index, pos, hist = msgpack.unpackb(frames[0].bytes)
    return Pixel(run_id=run_id, seq=seq, index=index, position=np.array(pos), hist=np.array(hist))


def _encode_raw(m: Pixel):
    return [msgpack.packb([m.run_id, m.seq, m.index, m.position.tobytes(), m.hist.tobytes()])]


def _decode_raw(frames):
    run_id, seq, index, pos, hist = msgpack.unpackb(frames[0].bytes)
    return Pixel(run_id=run_id, seq=seq, index=index, position=np.frombuffer(pos),
                 hist=np.frombuffer(hist, dtype=np.int64))


def main() -> None:
    rng = np.random.default_rng(0)
    hists = rng.poisson(2000, (N, 215)).astype(np.int64)
    msgs = [Pixel(run_id="bench", seq=i, index=i, position=rng.random(3), dwell_s=0.1,
                  n_events=int(h.sum()), hist=h) for i, h in enumerate(hists)]
    print(f"pixel message: {len(encode(msgs[0])[0])} bytes")
    ours = _pump(encode, decode, msgs)
    raw = _pump(_encode_raw, _decode_raw, msgs)
    base = _pump(_encode_list, _decode_list, msgs)
    print(f"(a) nvscope codec, validated:           {ours:10.0f} msg/s  ({ours / base:.2f}x baseline)")
    print(f"(b) bare transport, raw-byte histogram: {raw:10.0f} msg/s  ({raw / base:.2f}x baseline)")
    print(f"(c) baseline, histogram as int list:    {base:10.0f} msg/s")


if __name__ == "__main__":
    main()
