"""Hostile and broken peers against the real daemons (separate processes, TCP loopback): an intruder
that is not the controlling host, CurveZMQ keys, 10,000 random and mutated frames at each daemon, a
host stopped (SIGSTOP) for longer than the peer timeout, and two rigs side by side (issue 11)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import msgpack
import numpy as np
import pytest
import zmq

from nvscope.host.status_cli import ask_status
from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.endpoints import HostSecurity, host_socket, rig_socket
from nvscope.proto.keys import load_public_keys
from nvscope.proto.messages import (MESSAGE_TYPES, Ack, Coherence, Heartbeat, Hello, MeasureCoherence, PartialG2,
                                    PartialPixel, Pixel, Refused, RunEnd, RunStart, Start, Status, StatusRequest,
                                    Stop)

PY = sys.executable
CLI = [PY, "-m", "nvscope.host.cli"]

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
resend_after_s = 0.5
{link}
[sim]
pace = {pace}
[sim.sample]
background_rate = 2000.0
emitters = [{{ x = 0.0, y = 0.0 }}]
"""


def toml_value(v) -> str:
    return json.dumps(v) if isinstance(v, str) else repr(v)


def write_rig_config(path: Path, nx=6, ny=5, dwell=0.05, pace=1.0, **link) -> Path:
    """A small simulated scan's rig.toml; `link`: extra [link] fields (no spool_dir: the default journal)."""
    path.write_text(RIG_TOML.format(nx=nx, ny=ny, dwell=dwell, pace=pace,
                                    link="\n".join(f"{k} = {toml_value(v)}" for k, v in link.items())))
    return path


def start_rig(tmp: Path, cfg: Path, name: str = "rig", bind: str = "tcp://127.0.0.1:*",
              env: dict | None = None) -> tuple[subprocess.Popen, str, Path]:
    """A rig process on `bind`; returns it, its bound endpoint and its stderr file."""
    err = tmp / f"{name}.err"
    proc = subprocess.Popen([PY, "-m", "nvscope.rt.rig_main", "--sim", "--bind", bind, "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=env)
    line = proc.stdout.readline().strip()
    assert line.startswith("bound tcp://"), err.read_text()
    return proc, line.split()[1], err


def start_host(tmp: Path, endpoint: str, out: Path, *args: str, name: str = "host",
               env: dict | None = None) -> tuple[subprocess.Popen, Path, Path]:
    """A host process; returns it and its stdout and stderr files."""
    o, e = tmp / f"{name}.out", tmp / f"{name}.err"
    proc = subprocess.Popen([*CLI, "host", "--connect", endpoint, "--out", str(out), *args],
                            stdout=o.open("w"), stderr=e.open("w"), text=True, env=env)
    return proc, o, e


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def kill(*procs: subprocess.Popen) -> None:
    """Cleanup after a failure: nothing of ours left running."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()


def wait_status(endpoint: str, ok, timeout: float = 30.0, security: HostSecurity | None = None) -> dict:
    """The rig's status once `ok(status)` holds."""
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = ask_status(endpoint, 1.0, security)
        if info is not None and ok(info):
            return info
        time.sleep(0.1)
    raise AssertionError(f"rig status never as expected within {timeout} s; last {info}")


def check_complete_run(path: Path, n_pixels: int) -> dict:
    """The run file holds every pixel once, in order, no gaps, completed; returns a few of its numbers."""
    with h5py.File(path, "r") as f:
        assert f.attrs["exit_status"] == "completed", f.attrs.get("reason")
        assert f["pixels/seq"][()].tolist() == list(range(1, n_pixels + 1))
        assert f["pixels/index"][()].tolist() == list(range(n_pixels))
        assert f["gaps"].shape[0] == 0
        return {"duplicates": int(f["duplicates"][0])}


def one_run_file(out: Path) -> Path:
    files = sorted(out.glob("*.h5"))
    assert len(files) == 1, files
    return files[0]


def recv_all(sock: zmq.Socket, want: int, timeout: float) -> list:
    """Decoded messages received on `sock` until `want` of them or `timeout` s."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if sock.poll(50):
            got.append(decode(sock.recv_multipart()))
    return got


# ---------------------------------------------------------------------------------------- 1. intruder


def test_an_intruder_is_refused_and_the_run_completes_with_every_pixel(tmp_path):
    cfg = write_rig_config(tmp_path / "rig.toml", nx=6, ny=5, dwell=0.1, spool_dir=str(tmp_path / "journal"))
    rig, endpoint, rig_err = start_rig(tmp_path, cfg)
    out = tmp_path / "data"
    host = ctx = None
    try:
        host, host_out, host_err = start_host(tmp_path, endpoint, out, "--run", "srm", "--exit-when-done")
        info = wait_status(endpoint, lambda i: (i.get("run") or {}).get("done", 0) >= 3)
        run_id, owner, planned = info["run"]["run_id"], info["host"]["id"], info["run"]["planned"]
        assert planned == 30 and owner
        ctx = zmq.Context()
        intruder = host_socket(ctx, endpoint)
        sent = [Hello(run_id="", seq=0, version="intruder"), Stop(run_id=run_id, seq=1, reason="intruder says stop"),
                Ack(run_id=run_id, seq=10**9), Start(run_id="srm-intruder", seq=2, run_kind="srm")]
        for msg in sent:
            intruder.send_multipart(encode(msg))
        got = recv_all(intruder, len(sent), timeout=5.0)
        assert all(isinstance(m, Refused) for m in got), got  # no pixel, no heartbeat, no replay to it
        assert [(m.command, m.run_id) for m in got] == [(m.kind, m.run_id) for m in sent]
        hello, stop_, ack, start = got
        assert f"another host ({owner}) controls this rig" in hello.reason and hello.later
        for m in (stop_, ack, start):
            assert "does not control this rig" in m.reason and f"({owner} does" in m.reason, m.reason
        assert host.poll() is None  # the host is alive and in control meanwhile
        assert host.wait(timeout=60) == 0, host_err.read_text()
        intruder.close(0)
    finally:
        if ctx is not None:
            ctx.term()
        kill(host)
        assert stop(rig) == 0
    path = one_run_file(out)
    assert path.stem == run_id
    check_complete_run(path, planned)
    with h5py.File(path, "r") as f:
        assert "intruder" not in f.attrs["reason"]
    assert re.findall(r"run (\S+) completed", rig_err.read_text()) == [run_id]  # the intruder's start: no run


# ---------------------------------------------------------------------------------------- 2. keys


def keys_init(folder: Path, name: str) -> tuple[Path, Path]:
    proc = subprocess.run([*CLI, "keys", "init", str(folder), "--name", name], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return folder / f"{name}.key", folder / f"{name}.key_secret"


def test_keyed_rig_lets_in_only_allowed_hosts_and_loopback_is_required_without_keys(tmp_path):
    rig_pub, rig_secret = keys_init(tmp_path / "rig-keys", "rig")
    host_pub, host_secret = keys_init(tmp_path / "host-keys", "host")
    stranger_pub, stranger_secret = keys_init(tmp_path / "stranger-keys", "stranger")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / host_pub.name).write_bytes(host_pub.read_bytes())
    cfg = write_rig_config(tmp_path / "rig.toml", nx=4, ny=3, dwell=0.05, spool_dir=str(tmp_path / "journal"),
                           key_file=str(rig_secret), allowed_hosts=str(allowed))
    rig, endpoint, rig_err = start_rig(tmp_path, cfg)
    keyed = HostSecurity(str(host_secret), str(rig_pub))
    procs = []
    try:
        # an unkeyed host and a host whose key is not allowed: nothing gets through
        for name, args in (("unkeyed", ()), ("stranger", ("--key", str(stranger_secret), "--rig-key", str(rig_pub)))):
            procs.append((name, *start_host(tmp_path, endpoint, tmp_path / name, "--run", "srm", *args, name=name)))
        assert ask_status(endpoint, 1.0) is None
        assert ask_status(endpoint, 1.0, HostSecurity(str(stranger_secret), str(rig_pub))) is None
        time.sleep(1.0)
        info = ask_status(endpoint, 3.0, keyed)
        assert info is not None and info["state"] == "idle" and info["host"]["id"] is None, info
        for name, proc, _, err in procs:
            assert proc.poll() is None, err.read_text()  # still waiting for a rig that never answers
            assert stop(proc) == 0, err.read_text()
            assert not list((tmp_path / name).glob("*.h5")), name
        # the keyed host completes its run, and is known to the rig by its public key
        out = tmp_path / "data"
        host = subprocess.run([*CLI, "host", "--connect", endpoint, "--out", str(out), "--run", "srm",
                               "--exit-when-done", "--key", str(host_secret), "--rig-key", str(rig_pub)],
                              capture_output=True, text=True, timeout=60)
        assert host.returncode == 0, host.stderr
        check_complete_run(one_run_file(out), 12)
        status = subprocess.run([*CLI, "status", endpoint, "--json", "--key", str(host_secret),
                                 "--rig-key", str(rig_pub)], capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["host"]["id"] == load_public_keys(host_pub)[0].decode()
        assert info["journal"]["unacked"] == 0
    finally:
        kill(*(p for _, p, _, _ in procs))
        assert stop(rig) == 0
    assert "refused connections" in rig_err.read_text()  # the stranger's key, logged by the authenticator
    # beyond loopback without keys: one line, exit 2 (rig and host alike)
    plain = write_rig_config(tmp_path / "plain.toml", spool_dir=str(tmp_path / "journal2"))
    wide = subprocess.run([PY, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://0.0.0.0:*", "--config",
                           str(plain)], capture_output=True, text=True, timeout=60)
    assert wide.returncode == 2 and wide.stdout == ""
    lines = wide.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://0.0.0.0:*" in lines[0] and "CurveZMQ keys" in lines[0], wide.stderr
    far = subprocess.run([*CLI, "host", "--connect", "tcp://192.0.2.1:5557", "--out", str(tmp_path / "far")],
                         capture_output=True, text=True, timeout=60)
    assert far.returncode == 2
    lines = far.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://192.0.2.1:5557" in lines[0] and "CurveZMQ keys" in lines[0], far.stderr
