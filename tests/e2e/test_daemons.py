"""The two daemons in separate processes over TCP loopback: every pixel stored, in order; a daemon
killed mid-scan loses nothing already acknowledged and the run completes after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from nvscope.host.daemon import HostDaemon
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.host.run_kinds import host_analyses

RIG_TOML = """\
seed = 5
[scan]
nx = {nx}
ny = {ny}
x0 = -0.3e-6
y0 = -0.3e-6
step = 150e-9
dwell_s = {dwell}
slice_s = 0.02
[link]
spool_dir = "{spool}"
resend_after_s = 0.5
[sim]
pace = {pace}
[sim.sample]
background_rate = 2000.0
emitters = [{{ x = 0.0, y = 0.0 }}]
"""


def start_rig(tmp: Path, nx=4, ny=3, dwell=0.03, pace=0.0, spool="spool") -> tuple[subprocess.Popen, str]:
    cfg = tmp / "rig.toml"
    cfg.write_text(RIG_TOML.format(nx=nx, ny=ny, dwell=dwell, pace=pace, spool=(tmp / spool).as_posix()))
    proc = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "rig", "--sim", "--bind",
                             "tcp://127.0.0.1:*", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("bound tcp://127.0.0.1:"), proc.stderr.read()
    return proc, line.split()[1]


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=20)
    if code != 0:
        print(proc.stderr.read())
    return code


def run_file(out: Path) -> Path:
    files = sorted(out.glob("srm-*.h5"))
    assert len(files) == 1, files
    return files[0]


@pytest.mark.slow  # faster: tests/host/test_daemon.py::test_pixels_stored_in_order_with_duplicates_and_junk_dropped
def test_every_pixel_reaches_the_file_in_order(tmp_path):
    rig, endpoint = start_rig(tmp_path)
    try:
        host = subprocess.run([sys.executable, "-m", "nvscope.host.cli", "host", "--connect", endpoint,
                               "--out", str(tmp_path / "data"), "--run", "srm", "--exit-when-done"],
                              capture_output=True, text=True, timeout=120)
        assert host.returncode == 0, host.stderr
        assert ", 0 malformed dropped" in host.stdout, host.stdout  # every rig message decodes
    finally:
        assert stop(rig) == 0
    with h5py.File(run_file(tmp_path / "data"), "r") as f:
        assert f.attrs["exit_status"] == "completed"
        assert f["pixels/seq"][()].tolist() == list(range(1, 13))
        assert f["pixels/index"][()].tolist() == list(range(12))
        assert f["stored_seq"][0] == 13  # run_end
        assert f["gaps"].shape[0] == 0
        assert f["maps/g2"].shape == (3, 4)
        assert (f["pixels/n_a"][()] > 0).all()
        assert f.attrs["seed"] == 5 and "dwell_s" in f.attrs["config"]
        assert f["pixels/g2"].shape == (12,) and f["pixels/g2_latency_s"][()].min() > 0  # on-line g2
    assert not list((tmp_path / "spool").glob("*.msg"))  # everything acknowledged


def _wait_for_pixels(path_glob, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in path_glob():
            try:
                with h5py.File(p, "r", libver="latest", swmr=True) as f:
                    if f["pixels/seq"].shape[0] >= n:
                        return p
            except (OSError, KeyError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} pixels after {timeout} s")


@pytest.mark.slow  # faster: tests/host/test_daemon.py::test_host_restart_resumes_the_file
def test_host_killed_mid_scan_then_restarted_loses_nothing(tmp_path):
    out = tmp_path / "data"
    rig, endpoint = start_rig(tmp_path, nx=6, ny=5, dwell=0.05, pace=1.0)  # a 1.5 s scan in real time
    try:
        host = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "host", "--connect", endpoint,
                                 "--out", str(out), "--run", "srm"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = _wait_for_pixels(lambda: out.glob("srm-*.h5"), 5)
        os.kill(host.pid, signal.SIGKILL)
        host.wait()
        with h5py.File(path, "r", libver="latest", swmr=True) as f:  # what was stored is readable
            stored = f["pixels/seq"][()].tolist()
        assert stored == list(range(1, len(stored) + 1))
        time.sleep(0.5)  # the rig goes on scanning into its spool meanwhile
        again = HostDaemon(endpoint, out, host_analyses(MleEstimator()))
        deadline = time.monotonic() + 90
        while not again.stats.finished and time.monotonic() < deadline:
            again.step(100)
        again.close()
        assert again.stats.finished == [(path.stem, "completed")], again.stats
    finally:
        assert stop(rig) == 0
    with h5py.File(path, "r") as f:
        assert f["pixels/seq"][()].tolist() == list(range(1, 31))
        assert f["gaps"].shape[0] == 0 and f.attrs["exit_status"] == "completed"
        assert f["pixels/g2_reason"].shape == (30,)  # every pixel's on-line g2, across the kill


@pytest.mark.slow  # faster: tests/rt/test_run_loop.py::test_a_rig_restarted_after_dying_mid_run_ends_that_run_as_failed_once
def test_rig_killed_mid_scan_then_restarted_ends_the_run_as_failed_losing_nothing(tmp_path):
    out = tmp_path / "data"
    rig, endpoint = start_rig(tmp_path, nx=6, ny=5, dwell=0.05, pace=1.0)
    host = HostDaemon(endpoint, out, host_analyses(MleEstimator()))
    run_id = "srm-killed-rig"
    try:
        from nvscope.proto.messages import Start
        host.command(Start, run_id, run_kind="srm")
        deadline = time.monotonic() + 60
        while host.stats.stored < 6 and time.monotonic() < deadline:
            host.step(50)
        os.kill(rig.pid, signal.SIGKILL)
        rig.wait()
        for _ in range(10):
            host.step(20)
        with h5py.File(out / f"{run_id}.h5", "r", libver="latest", swmr=True) as f:
            stored = f["pixels/seq"][()].tolist()
            assert f.attrs["exit_status"] == "running"
        assert len(stored) >= 5 and stored == list(range(1, len(stored) + 1))
        spooled = sorted(int(p.name.split(".")[-2]) for p in (tmp_path / "spool").glob("*.msg"))
        # the rig comes back on the same endpoint and spool: it replays, then closes the run
        rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", endpoint,
                                "--config", str(tmp_path / "rig.toml")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert rig.stdout.readline().startswith("bound ")
        deadline = time.monotonic() + 30
        while not host.stats.finished and time.monotonic() < deadline:
            host.step(100)
        assert host.stats.finished == [(run_id, "failed")]
    finally:
        host.close()
        assert stop(rig) == 0
    with h5py.File(out / f"{run_id}.h5", "r") as f:
        seqs = f["pixels/seq"][()].tolist()
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= len(stored)
        assert set(spooled) - {0} <= set(seqs)  # every spooled pixel arrived after the restart
        assert "rig process ended" in f.attrs["reason"]


def test_bad_rig_config_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[scan]\ndwell_s = 0\n")
    proc = subprocess.run([sys.executable, "-m", "nvscope.host.cli", "rig", "--sim", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "scan.dwell_s" in lines[0], proc.stderr
