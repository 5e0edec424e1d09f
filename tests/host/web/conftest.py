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
from nvscope.proto.messages import Coherence, Deer, Lock, Pixel, RunEnd, RunStart
path, nx, ny, kind = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
start = RunStart(run_id=path.stem, run_kind=kind, seq=0, n_pixels=nx * ny, grid_shape=np.array([ny, nx]))
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
    elif cmd == "lock":  # tip position i: scan 0 (retracted) first, then the psf scan's plane 0 with a DEER row
        for _ in range(int(arg[0])):
            seq += 1
            i = globals().get("n_lock", 0)
            globals()["n_lock"] = i + 1
            scan, j = (0, 0) if i == 0 else (1, i - 1)
            store.add(Lock(run_id=path.stem, seq=seq, index=i, scan=scan, plane=0, ix=j % nx, iy=j // nx,
                           f_lock_hz=2.87e9 + 1e3 * i, f_sigma_hz=10.0, state=i % 3, cycles=4, photons=1000 + i))
            seq += 1
            store.add(Deer(run_id=path.stem, seq=seq, index=i, scan=2, plane=0, ix=j % nx, iy=j // nx, f_rf_hz=1e8,
                           tau_s=1e-6, shots=100, n_rf=80 + i, n_ref=100))
        store.flush()
    elif cmd == "curve":  # one coherence curve: n_pulses and its number of points
        n, T = (int(v) for v in arg[0].split())
        seq += 1
        t = np.linspace(1e-6, 1e-5, T)
        store.add(Coherence(run_id=path.stem, seq=seq, n_pulses=n, t=t, coherence=np.exp(-t / 5e-6), sigma=0.01 + 0 * t,
                            repetitions=10, signal_counts=10 + 0 * t, bright_counts=20 + 0 * t, dark_counts=5 + 0 * t))
        store.flush()
    elif cmd == "step":  # one step of the VQNS loop after k curves
        k = int(arg[0])
        w = np.geomspace(1e4, 1e8, 6)
        store.add_vqns_step({"n_curves": k, "lorentzians": 2, "best_rate": 1e-3 / k, "omega": w, "S_fit": w * k,
                             "S_lo": w * k / 2, "S_hi": w * k * 2, "ranked": [16, 8, 4][:k]})
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
    the host does: `pixels(n)`, `g2()` (for every pixel without one), `lock(n)`, `curve(n_pulses, points)`,
    `end(status, reason)`; each returns once the rows are flushed. Synthetic pixels: row i at
    (i % nx, i // nx)."""

    def __init__(self, path, nx: int = 3, ny: int = 2, kind: str = "srm"):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(nx), str(ny), kind],
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

    def lock(self, n: int) -> None:
        """n NV-MRI tip positions: a lock row and a DEER row each (the first: the retracted tip)."""
        assert self._ask(f"lock {n}") == "ok"

    def curve(self, n_pulses: int, points: int) -> None:
        """One VQNS coherence curve."""
        assert self._ask(f"curve {n_pulses} {points}") == "ok"

    def step(self, n_curves: int) -> None:
        """One step of the VQNS loop (spectrum, band, ranking) after `n_curves` curves."""
        assert self._ask(f"step {n_curves}") == "ok"

    def end(self, status: str = "completed", reason: str = "") -> None:
        assert self._ask(f"end {status} {reason}") == "ended"
        assert self.proc.wait(timeout=10) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def swmr_writer():
    """swmr_writer(path, nx, ny, kind) -> SwmrWriter; killed after the test if still running."""
    writers: list[SwmrWriter] = []

    def make(path, nx: int = 3, ny: int = 2, kind: str = "srm") -> SwmrWriter:
        writers.append(SwmrWriter(path, nx, ny, kind))
        return writers[-1]

    yield make
    for w in writers:
        w.close()
