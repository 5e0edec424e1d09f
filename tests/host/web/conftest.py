"""Fixtures of the web view's tests: the app served by uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn


class Served:
    """An ASGI app served on 127.0.0.1 in a thread; `url` is its base address."""

    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve():
    """serve(app) -> Served; every server is stopped after the test."""
    served: list[Served] = []

    def start(app) -> Served:
        served.append(Served(app))
        return served[-1]

    yield start
    for s in served:
        s.close()


WRITER = r'''
import sys, numpy as np
from pathlib import Path
from nvscope.host.store import RunStore
from nvscope.proto.messages import Pixel, RunEnd, RunStart
path, nx, ny = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = RunStart(run_id=path.stem, seq=0, n_pixels=nx * ny, grid_shape=np.array([ny, nx]))
store = RunStore.create(path, start)
store.add(start)
store.flush()
print("ready", flush=True)
seq = n_g2 = 0
for line in sys.stdin:
    cmd, *arg = line.split(maxsplit=1)
    if cmd == "pixels":
        for _ in range(int(arg[0])):
            seq += 1
            i = seq - 1
            hist = np.zeros(215, dtype=np.int64)
            store.add(Pixel(run_id=path.stem, seq=seq, index=i, ix=i % nx, iy=i // nx, dwell_s=0.01 * (1 + i),
                            n_a=100 + i, n_b=50 + 2 * i, n_events=0, hist=hist))
        store.flush()
    elif cmd == "g2":
        k = store.n_pixels - n_g2
        g2 = 0.1 + 0.01 * np.arange(n_g2, n_g2 + k)
        store.add_g2(g2, 0.05 * np.ones(k), np.zeros(k, dtype=np.int8), 0.001 * np.ones(k))
        n_g2 += k
        store.flush()
    elif cmd == "end":
        status, _, reason = arg[0].strip().partition(" ")
        seq += 1
        maps = {"maps/pl_cps": np.arange(nx * ny, dtype=float).reshape(ny, nx) * 10.5,
                "maps/g2": np.full((ny, nx), 0.25), "maps/g2_std": np.full((ny, nx), np.nan),
                "maps/G2": np.ones((ny, nx))}
        maps["maps/g2"][0, 0] = np.nan
        store.finalize(RunEnd(run_id=path.stem, seq=seq, exit_status=status, reason=reason, n_pixels=seq - 1),
                       maps, {})
        store.close()
        print("ended", flush=True)
        break
    print("ok", flush=True)
'''


class SwmrWriter:
    """A run file written by the host's own writer (host/store.py RunStore, SWMR) in another process, as
    the host does: `pixels(n)`, `g2()` (for every pixel without one), `end(status, reason)`; each
    returns once the rows are flushed. Synthetic pixels: row i at (i % nx, i // nx)."""

    def __init__(self, path, nx: int = 3, ny: int = 2):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(nx), str(ny)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def pixels(self, n: int) -> None:
        assert self._ask(f"pixels {n}") == "ok"

    def g2(self) -> None:
        assert self._ask("g2") == "ok"

    def end(self, status: str = "completed", reason: str = "") -> None:
        assert self._ask(f"end {status} {reason}") == "ended"
        assert self.proc.wait(timeout=10) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def swmr_writer():
    """swmr_writer(path, nx, ny) -> SwmrWriter; killed after the test if still running."""
    writers: list[SwmrWriter] = []

    def make(path, nx: int = 3, ny: int = 2) -> SwmrWriter:
        writers.append(SwmrWriter(path, nx, ny))
        return writers[-1]

    yield make
    for w in writers:
        w.close()
