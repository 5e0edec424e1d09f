"""Puts per second into the rig's journal (rt/spool.py), in one run, with the host acking every 64:
(a) fsync in batches (the defaults: every 64 records or 0.05 s),
(b) fsync after every put (what a power cut would lose: nothing put),
(c) no fsync at all (what the page cache allows; survives a killed process, not a power cut).
Messages are srm pixels as the rig sends them (a 215-bin histogram). Prints ratios to (c)."""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from nvscope.proto import encode
from nvscope.proto.messages import Pixel
from nvscope.rt.spool import Spool

SECONDS = 2.0
ACK_EVERY = 64


def puts_per_s(directory: str, frames: list, **sync) -> float:
    """Put the same pixel as fast as possible for SECONDS, acking every ACK_EVERY; returns puts/s."""
    spool = Spool(directory, capacity=10**6, **sync)
    seq = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        for _ in range(ACK_EVERY):
            spool.put("bench", seq, frames)
            seq += 1
        spool.ack("bench", seq - 1)
    spool.sync()
    dt = time.perf_counter() - t0
    spool.close()
    return seq / dt


def main() -> None:
    frames = encode(Pixel(run_id="bench", seq=1, dwell_s=0.1, n_events=10**5, hist=np.arange(215)))
    size = sum(len(bytes(f)) for f in frames)
    modes = {
        "batched fsync (64 / 0.05 s)": {},
        "fsync every put": {"sync_every_n": 1},
        "no fsync": {"sync_every_n": 10**12, "sync_every_s": float("inf")},
    }
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        rates = {name: puts_per_s(f"{tmp}/{i}", frames, **kw) for i, (name, kw) in enumerate(modes.items())}
    base = rates["no fsync"]
    print(f"journal puts of a {size}-byte pixel, acked every {ACK_EVERY}, {SECONDS:.0f} s each ({tmp}):")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:10.0f} puts/s  {rate / base:6.3f}x no fsync")


if __name__ == "__main__":
    main()
