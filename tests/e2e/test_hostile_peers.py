"""Hostile and broken peers against the real daemons (separate processes, TCP loopback): an intruder
that is not the controlling host, CurveZMQ keys, 10,000 random and mutated frames at each daemon, a
host stopped (SIGSTOP) for longer than the peer timeout, and two rigs side by side (issue 11)."""

from __future__ import annotations

import argparse
import importlib.util
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

from nvscope.host.keys_cli import keys_command
from nvscope.host.status_cli import ask_status
from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.endpoints import HostSecurity, host_socket, rig_socket
from nvscope.proto.keys import load_public_keys
from nvscope.proto.messages import (MESSAGE_TYPES, Ack, Coherence, Heartbeat, Hello, MeasureCoherence, PartialG2,
                                    PartialPixel, Pixel, Refused, RunEnd, RunStart, Start, Status, StatusRequest,
                                    Stop)

PY = sys.executable
CLI = [PY, "-m", "nvscope.host.cli"]

_spec = importlib.util.spec_from_file_location("e2e_daemons", Path(__file__).with_name("test_daemons.py"))
_daemons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_daemons)
RIG_TOML = _daemons.RIG_TOML.replace('spool_dir = "{spool}"\nresend_after_s = 0.5\n', 'resend_after_s = 0.5\n{link}\n')
"""test_daemons' small simulated scan, with extra [link] fields in place of its spool_dir (the default journal)."""


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


def wait_handles_sigterm(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Wait until the process has its SIGTERM handler (its daemon is set up): a SIGTERM before that is
    Python's default (exit -15), not the daemon's clean stop (Linux: SigCgt in /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {proc.pid} has no SIGTERM handler after {timeout} s (exit {proc.poll()})")


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


def test_a_forged_ack_from_the_controlling_host_deletes_nothing(tmp_path):
    """The issue's scenario: an ack of seq 10^9 made the rig delete its journal (the file then had gaps and
    said completed). Now it is refused and every message stays until really acknowledged."""
    cfg = write_rig_config(tmp_path / "rig.toml", nx=4, ny=3, dwell=0.1, spool_dir=str(tmp_path / "journal"))
    rig, endpoint, _ = start_rig(tmp_path, cfg)
    ctx = zmq.Context()
    run_id = "srm-forged-ack"
    try:
        host = host_socket(ctx, endpoint)  # a hand-driven host: it controls the rig (first hello)
        host.send_multipart(encode(Hello(run_id="", seq=0, version="hand")))
        host.send_multipart(encode(Start(run_id=run_id, seq=1, run_kind="srm")))
        data: dict[int, object] = {}
        refusals = []

        def receive(timeout_ms: int) -> None:
            if host.poll(timeout_ms):
                msg = decode(host.recv_multipart())
                if isinstance(msg, Refused):
                    refusals.append(msg)
                elif msg.durable:
                    data[msg.seq] = msg  # replays: kept once

        deadline = time.monotonic() + 30
        while len(data) < 4 and time.monotonic() < deadline:
            receive(100)
        host.send_multipart(encode(Ack(run_id=run_id, seq=10**9)))
        while not refusals and time.monotonic() < deadline:
            receive(100)
        info = ask_status(endpoint, 3.0)
        assert info["journal"]["unacked"] >= len(data) >= 4, info  # nothing deleted
        while not any(isinstance(m, RunEnd) for m in data.values()) and time.monotonic() < deadline:
            receive(100)
        end = max(data)
        assert sorted(data) == list(range(end + 1)) and isinstance(data[end], RunEnd)
        assert data[end].exit_status == "completed" and data[end].n_pixels == 12
        assert len(refusals) == 1 and refusals[0].command == "ack", refusals
        assert f"acknowledges seq {10**9} of run {run_id}, but only up to" in refusals[0].reason
        assert "nothing deleted" in refusals[0].reason
        assert ask_status(endpoint, 3.0)["journal"]["unacked"] == end + 1  # all still kept
        host.send_multipart(encode(Ack(run_id=run_id, seq=end)))  # a true ack deletes them
        info = wait_status(endpoint, lambda i: i["journal"]["unacked"] == 0, timeout=10)
        assert info["refused"] == 1 and info["last_ack"]["seq"] == end
        host.close(0)
    finally:
        ctx.destroy(0)
        assert stop(rig) == 0


# ---------------------------------------------------------------------------------------- 2. keys


def keys_init(folder: Path, name: str, cli: bool = False) -> tuple[Path, Path]:
    """`nvscope keys init FOLDER --name NAME`, as a process (`cli`) or through host.keys_cli in this one."""
    if cli:
        proc = subprocess.run([*CLI, "keys", "init", str(folder), "--name", name], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and "key_file" in proc.stdout, proc.stderr
    else:
        assert keys_command(argparse.Namespace(keys_action="init", dir=str(folder), name=name)) == 0
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    assert (secret.stat().st_mode & 0o777) == 0o600 and (folder.stat().st_mode & 0o777) == 0o700
    return public, secret


def test_keyed_rig_lets_in_only_allowed_hosts_and_loopback_is_required_without_keys(tmp_path):
    rig_pub, rig_secret = keys_init(tmp_path / "rig-keys", "rig", cli=True)
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
        for _, proc, _, _ in procs:
            wait_handles_sigterm(proc)  # connected, saying hello, asking for its run: in vain
        time.sleep(0.5)
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


# ---------------------------------------------------------------------------------------- 3. fuzz

FUZZ_FRAMES = 10_000
HOSTILE_RUN_IDS = ["../x", "/abs", "../../escaped", "a/b", ".hidden", "..", "x" * 200, "run\x00id", "-lead"]


def real_messages(run_id: str = "srm-fuzz") -> list:
    """One of each message kind, as the daemons send them (the seeds of the mutations)."""
    hist = np.arange(215, dtype=np.int64)
    t = np.linspace(1e-6, 1e-4, 8)
    return [Hello(run_id="", seq=0, version="0.1"), Start(run_id=run_id, seq=1, run_kind="srm"),
            Stop(run_id=run_id, seq=2, reason="why"), Ack(run_id=run_id, seq=3),
            MeasureCoherence(run_id=run_id, seq=4, n_pulses=2, t=t),
            PartialG2(run_id=run_id, seq=5, index=1, dwell_s=0.1, g2=0.3, g2_std=0.1),
            StatusRequest(run_id="", seq=0), Heartbeat(run_id="", seq=0, state="host", info={"stored": 3}),
            RunStart(run_id=run_id, seq=0, config={"scan": {"nx": 2}}, n_pixels=4, grid_shape=np.array([2, 2])),
            Pixel(run_id=run_id, seq=1, dwell_s=0.1, n_a=5, n_b=6, n_events=int(hist.sum()), hist=hist),
            PartialPixel(run_id=run_id, seq=1, dwell_s=0.05, n_events=int(hist.sum()), hist=hist),
            Coherence(run_id=run_id, seq=2, t=t, coherence=np.ones(8), sigma=np.ones(8) * 0.1, repetitions=3),
            RunEnd(run_id=run_id, seq=9, n_pixels=4), Refused(run_id=run_id, seq=1, command="start", reason="busy"),
            Status(run_id="", seq=0, info={"state": "idle"})]


def _body(msg) -> list:
    return msgpack.unpackb(encode(msg)[0], raw=False)


def _random_object(rng: random.Random, depth: int = 0):
    r = rng.randrange(8 if depth < 3 else 5)
    return [lambda: rng.randrange(-2**63, 2**64), lambda: rng.random(), lambda: "".join(rng.choice("nvscope/._x\u00e9")
            for _ in range(rng.randrange(12))), lambda: rng.randbytes(rng.randrange(20)), lambda: None,
            lambda: [_random_object(rng, depth + 1) for _ in range(rng.randrange(5))],
            lambda: {str(rng.randrange(9)): _random_object(rng, depth + 1) for _ in range(rng.randrange(4))},
            lambda: ["nvscope", _random_object(rng, depth + 1)]][r]()


def _mutant(rng: random.Random, seeds: list, abs_id: str) -> list[bytes]:
    """One hostile multipart message (list of frames)."""
    seed = rng.choice(seeds)
    frames = [bytes(f) for f in encode(seed)]
    what = rng.randrange(9)
    if what == 0:  # random bytes, 1-3 frames; some msgpack bombs (huge declared lengths, deep nesting)
        bombs = [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\x91" * 5000,
                 b"\xc6\x7f\xff\xff\xff"]
        first = rng.choice(bombs) if rng.random() < 0.1 else rng.randbytes(rng.randrange(300))
        return [first, *(rng.randbytes(rng.randrange(50)) for _ in range(rng.randrange(3)))]
    if what == 1:  # a real message truncated
        return [frames[0][:rng.randrange(len(frames[0]))], *frames[1:]]
    if what == 2:  # a real message with bits flipped
        raw = bytearray(frames[0])
        for _ in range(rng.randrange(1, 9)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return [bytes(raw), *frames[1:]]
    if what == 3:  # valid msgpack of the wrong shape
        head = _body(seed)
        shapes = [_random_object(rng), head[:rng.randrange(4)], [*head, 1], ["other", *head[1:]],
                  [head[0], head[1], head[2], list(head[3].items())],
                  [*head[:3], {k: v for k, v in head[3].items() if rng.random() < 0.7}],
                  [*head[:3], {**head[3], "extra": 1}],
                  [*head[:3], {k: _random_object(rng) if rng.random() < 0.3 else v for k, v in head[3].items()}]]
        return [msgpack.packb(rng.choice(shapes), use_bin_type=True)]
    if what == 4:  # an unknown kind
        head = _body(seed)
        head[1] = rng.choice(["", "pixel2", "PIXEL", "shutdown", "exec", "ack ", 7, None, ["ack"]])
        return [msgpack.packb(head, use_bin_type=True)]
    if what == 5:  # huge ints (beyond int64, or array shapes of 2^40)
        head = _body(seed)
        ints = [k for k, v in head[3].items() if type(v) is int]
        big = rng.choice([2**63, 2**64 - 1])  # beyond int64 (msgpack packs up to 2^64 - 1)
        if ints and rng.random() < 0.7:
            head[3][rng.choice(ints)] = big
        else:
            head = ["nvscope", "measure_coherence", 1, {"run_id": "r", "seq": 1, "n_pulses": 1,
                                                         "t": {"nd": ["<f8", [2**40]], "b": b"\0" * 8}}]
        return [msgpack.packb(head, use_bin_type=True)]
    if what == 6:  # wrong schema version
        head = _body(seed)
        head[2] = rng.choice([0, head[2] + 1, 99, -1, "1", None, 1.0 if head[2] != 1 else 2.0])
        return [msgpack.packb(head, use_bin_type=True)]
    if what == 7:  # hostile run ids (paths)
        head = _body(seed)
        head[3]["run_id"] = rng.choice([*HOSTILE_RUN_IDS, abs_id])
        return [msgpack.packb(head, use_bin_type=True), *frames[1:]]
    return [*frames, rng.randbytes(rng.randrange(1, 40))]  # a real message with a frame too many


def hostile_frames(seed: int, n: int, abs_id: str, allowed_valid: tuple = ()) -> tuple[list[list[bytes]], list]:
    """`n` hostile messages from a seeded generator, and the message each decodes to (None: malformed).
    A mutant that happens to decode to a kind not in `allowed_valid` is drawn again."""
    rng = random.Random(seed)
    seeds = real_messages()
    out, decoded = [], []
    while len(out) < n:
        frames = _mutant(rng, seeds, abs_id)
        try:
            msg = decode(frames)
        except ProtocolError:
            msg = None
        if msg is not None and not isinstance(msg, allowed_valid):
            continue
        out.append(frames)
        decoded.append(msg)
    return out, decoded


def test_the_rig_survives_10000_hostile_frames_during_a_scan(tmp_path):
    cfg = write_rig_config(tmp_path / "rig.toml", nx=8, ny=6, dwell=0.1, spool_dir=str(tmp_path / "journal"))
    rig, endpoint, rig_err = start_rig(tmp_path, cfg)
    out = tmp_path / "data"
    # any valid message but the two a stranger may send unanswered/answered (heartbeat, status_request)
    refusable = tuple(c for c in MESSAGE_TYPES.values() if c not in (Heartbeat, StatusRequest))
    garbage, decoded = hostile_frames(11, FUZZ_FRAMES, str(tmp_path / "abs-escaped"), refusable)
    n_valid = sum(m is not None for m in decoded)
    host = ctx = None
    try:
        host, _, host_err = start_host(tmp_path, endpoint, out, "--run", "srm", "--exit-when-done")
        before = wait_status(endpoint, lambda i: (i.get("run") or {}).get("done", 0) >= 2)
        planned = before["run"]["planned"]
        ctx = zmq.Context()
        fuzz = ctx.socket(zmq.DEALER)
        fuzz.setsockopt(zmq.ROUTING_ID, b"fuzzer")
        fuzz.setsockopt(zmq.LINGER, 0)
        fuzz.connect(endpoint)
        replies = []
        t0 = time.monotonic()
        for frames in garbage:
            fuzz.send_multipart(frames)
            while fuzz.poll(0):
                replies.append(decode(fuzz.recv_multipart()))
        t_sent = time.monotonic() - t0
        replies += recv_all(fuzz, n_valid - len(replies), timeout=20.0)
        t_answered = time.monotonic() - t0
        assert host.poll() is None or host.returncode == 0  # the scan goes on meanwhile
        assert host.wait(timeout=60) == 0, host_err.read_text()
        assert rig.poll() is None  # no crash
        status = subprocess.run([*CLI, "status", endpoint, "--json"], capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        after = json.loads(status.stdout)
    finally:
        if ctx is not None:
            ctx.destroy(0)
        kill(host)
        assert stop(rig) == 0
    check_complete_run(one_run_file(out), planned)
    # every frame counted: the malformed ones as malformed, the ones that decode (to anything but a heartbeat
    # or status request) as refused; the fuzzer gets one `refused` answer for each of the latter
    assert after["malformed"] - before["malformed"] == FUZZ_FRAMES - n_valid
    assert after["refused"] - before["refused"] == n_valid
    assert len(replies) == n_valid and all(isinstance(r, Refused) and r.later for r in replies)
    assert after["host"]["id"] == before["host"]["id"]  # still the host in control
    errors = [line for line in rig_err.read_text().splitlines() if " ERROR: " in line]
    fuzz_errors = [line for line in errors if "malformed frames" in line]
    assert 1 <= len(fuzz_errors) <= 5 and all("peer-" + b"fuzzer".hex() in line for line in fuzz_errors), errors
    assert len(errors) <= 10, errors
    assert not (tmp_path / "abs-escaped").exists() and not (tmp_path / "x").exists()
    print(f"\nrig fuzz: {FUZZ_FRAMES} frames ({FUZZ_FRAMES - n_valid} malformed, {n_valid} valid but refused) "
          f"sent in {t_sent:.2f} s, all answered/counted in {t_answered:.2f} s; {len(errors)} ERROR lines")


def test_the_rigs_refusal_log_names_the_refused_peer(tmp_path, caplog):
    from nvscope.rt.config import LinkConfig
    from nvscope.rt.link import RtLink
    from nvscope.rt.spool import Spool

    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    spool = Spool(tmp_path / "journal", 100)
    link = RtLink(sock, spool, LinkConfig())
    owner, intruder = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    try:
        for s, name in ((owner, b"owner"), (intruder, b"intruder")):
            s.setsockopt(zmq.ROUTING_ID, name)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
        owner.send_multipart(encode(Hello(run_id="", seq=0, version="t")))
        deadline = time.monotonic() + 5
        while link.owner is None and time.monotonic() < deadline:
            link.poll(50)
        intruder.send_multipart(encode(Stop(run_id="srm-x", seq=1, reason="intruder")))
        with caplog.at_level("ERROR", logger="nvscope.rt.link"):
            while not link.refusals.count and time.monotonic() < deadline:
                link.poll(50)
        assert link.owner == "peer-" + b"owner".hex() and link.refusals.count == 1
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert lines and lines[0].startswith("refused messages from peer-" + b"intruder".hex()), lines
    finally:
        owner.close()
        intruder.close()
        spool.close()
        sock.close()
        ctx.term()


def test_the_host_survives_10000_hostile_frames_around_a_valid_run(tmp_path):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")  # a hand-driven rig
    rig.setsockopt(zmq.SNDTIMEO, 20_000)
    endpoint = rig.getsockopt(zmq.LAST_ENDPOINT).decode()
    out = tmp_path / "deep" / "out"
    abs_id = str(tmp_path / "abs-escaped")
    garbage, decoded = hostile_frames(12, FUZZ_FRAMES, abs_id)  # every one of them malformed
    assert not any(decoded)
    run_id, nx, ny = "srm-fuzzed-1", 5, 4
    hist = np.arange(215, dtype=np.int64) % 7
    run = [RunStart(run_id=run_id, seq=0, run_kind="srm", config={"scan": {"nx": nx, "ny": ny}}, version="v-test",
                    seed=3, n_pixels=nx * ny, grid_shape=np.array([ny, nx]))]
    run += [Pixel(run_id=run_id, seq=i + 1, index=i, ix=i % nx, iy=i // nx, position=np.array([i * 1e-7, 0, 0]),
                  dwell_s=0.05, n_a=1000 + i, n_b=1100 + i, n_events=int(hist.sum()), hist=hist)
            for i in range(nx * ny)]
    run.append(RunEnd(run_id=run_id, seq=nx * ny + 1, exit_status="completed", n_pixels=nx * ny))
    host = None
    try:
        host, host_out, host_err = start_host(tmp_path, endpoint, out, "--exit-when-done")
        assert rig.poll(30_000), host_err.read_text()
        while True:
            peer, *frames = rig.recv_multipart()
            if isinstance(decode(frames), Hello):
                break
        t0 = time.monotonic()
        chunks = np.array_split(np.arange(FUZZ_FRAMES), len(run) + 1)
        for msg, chunk in zip([*run, None], chunks):
            for i in chunk:
                rig.send_multipart([peer, *garbage[i]])
            if msg is not None:
                rig.send_multipart([peer, *encode(msg)])
        t_sent = time.monotonic() - t0
        acks = []
        deadline = time.monotonic() + 60
        while host.poll() is None and time.monotonic() < deadline:
            if rig.poll(100):
                msg = decode(rig.recv_multipart()[1:])
                if isinstance(msg, Ack):
                    acks.append(msg.seq)
        assert host.wait(timeout=30) == 0, host_err.read_text()
        t_done = time.monotonic() - t0
    finally:
        kill(host)
        rig.close()
        ctx.term()
    assert max(acks) == nx * ny + 1  # the run_end, acknowledged once its file was final
    summary = host_out.read_text()
    assert f"host: {len(run)} messages stored, 0 duplicates dropped, {FUZZ_FRAMES} malformed dropped" in summary
    path = one_run_file(out)
    assert path == out / f"{run_id}.h5"
    check_complete_run(path, nx * ny)
    with h5py.File(path, "r") as f:
        assert f["pixels/n_a"][()].tolist() == [1000 + i for i in range(nx * ny)]
        assert f["stored_seq"][0] == nx * ny + 1
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents) == sorted(
        tmp_path / n for n in ("host.out", "host.err"))  # nothing written outside --out (hostile run ids)
    assert not Path("/abs.h5").exists() and not Path("/abs").exists()
    log_lines = [line for line in host_err.read_text().splitlines() if "malformed" in line]
    assert 1 <= len(log_lines) <= 4, log_lines
    print(f"\nhost fuzz: {FUZZ_FRAMES} malformed frames around a {len(run)}-message run sent in {t_sent:.2f} s; "
          f"run stored and host exited after {t_done:.2f} s; {len(log_lines)} log lines for them")


# ---------------------------------------------------------------------------------------- 4. a stopped host


def test_a_host_stopped_longer_than_the_peer_timeout_is_reported_and_the_run_completes(tmp_path):
    window = 2000
    cfg = write_rig_config(tmp_path / "rig.toml", nx=10, ny=8, dwell=0.1, spool_dir=str(tmp_path / "journal"),
                           peer_timeout_s=2, heartbeat_s=0.5, window=window)
    rig, endpoint, rig_err = start_rig(tmp_path, cfg)
    out = tmp_path / "data"
    host = None
    try:
        host, host_out, host_err = start_host(tmp_path, endpoint, out, "--run", "srm", "--exit-when-done",
                                              "--peer-timeout", "2")
        info = wait_status(endpoint, lambda i: (i.get("run") or {}).get("done", 0) >= 10)
        planned = info["run"]["planned"]
        os.kill(host.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        reported = None
        while time.monotonic() - t_stop < 8:
            if reported is None and "silent for" in rig_err.read_text():
                reported = time.monotonic() - t_stop
            if reported is not None and time.monotonic() - t_stop > 4.0:  # stopped twice the peer timeout
                break
            time.sleep(0.05)
        during = ask_status(endpoint, 2.0)
        os.kill(host.pid, signal.SIGCONT)
        t_cont = time.monotonic()
        assert reported is not None and reported <= 2 + 0.5 + 2.0, (reported, rig_err.read_text())
        assert during["host"]["silent"] and during["state"] == "running", during  # acquisition went on
        assert host.wait(timeout=60) == 0, host_err.read_text()
        t_done = time.monotonic() - t_cont
        after = ask_status(endpoint, 3.0)
    finally:
        if host is not None and host.poll() is None:
            os.kill(host.pid, signal.SIGCONT)
        kill(host)
        assert stop(rig) == 0
    log = rig_err.read_text()
    silent = [line for line in log.splitlines() if "silent for" in line]
    assert len(silent) == 1 and "waits for it" in silent[0], silent  # reported once, naming the waiting run
    assert "back after" in log
    numbers = check_complete_run(one_run_file(out), planned)
    dup = numbers["duplicates"]
    dup_host = int(re.search(r"(\d+) duplicates dropped", host_out.read_text())[1])
    # the file counts those of the run while it streams; the host also those after its end (a replayed run_end)
    assert dup <= dup_host
    # a stopped host gets no replays while silent; once back, at most one replay of what is unacknowledged,
    # which is at most the run's messages (run_start, pixels, run_end), well under the window
    assert dup_host <= planned + 2 <= window, (dup, dup_host)
    print(f"\nSIGSTOP: silence reported {reported:.2f} s after the stop (peer timeout 2 s); run done "
          f"{t_done:.2f} s after SIGCONT; {dup} duplicates in the file ({dup_host} dropped by "
          f"the host) for {planned + 2} messages; "
          f"rig replays {after['replays']}")


# ---------------------------------------------------------------------------------------- 5. two rigs


def test_two_rigs_side_by_side_have_their_own_journals_and_a_third_on_a_journal_in_use_is_refused(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    cfg = write_rig_config(tmp_path / "rig.toml", nx=4, ny=3, dwell=0.1)  # no spool_dir: the default journal
    rigs, hosts = [], []
    try:
        for name in ("a", "b"):
            rigs.append(start_rig(tmp_path, cfg, name=f"rig-{name}", env=env))
        for (_, endpoint, _), name in zip(rigs, ("a", "b")):
            hosts.append(start_host(tmp_path, endpoint, tmp_path / f"data-{name}", "--run", "srm", "--exit-when-done",
                                    name=f"host-{name}"))
        journals = []
        for _, endpoint, _ in rigs:
            journal = Path(ask_status(endpoint, 5.0)["journal"]["directory"])
            port = endpoint.rpartition(":")[2]
            assert journal == tmp_path / "state" / "nvscope" / f"rig-tcp-127.0.0.1-{port}"
            journals.append(journal)
        assert sorted(p.name for p in (tmp_path / "state" / "nvscope").iterdir()) == sorted(j.name for j in journals)
        # a third rig on the journal of a running one: one line naming it, exit 2, the running one untouched
        third_cfg = write_rig_config(tmp_path / "third.toml", spool_dir=str(journals[0]))
        third = subprocess.run([PY, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://127.0.0.1:*",
                                "--config", str(third_cfg)], capture_output=True, text=True, timeout=60, env=env)
        assert third.returncode == 2 and third.stdout == ""
        lines = third.stderr.strip().splitlines()
        assert len(lines) == 1 and str(journals[0]) in lines[0] and f"pid {rigs[0][0].pid}" in lines[0], third.stderr
        for proc, _, err in hosts:
            assert proc.wait(timeout=60) == 0, err.read_text()
        for _, endpoint, _ in rigs:
            assert ask_status(endpoint, 3.0)["journal"]["unacked"] == 0
    finally:
        kill(*(h[0] for h in hosts))
        codes = [stop(r[0]) for r in rigs]
    assert codes == [0, 0]
    for name in ("a", "b"):
        check_complete_run(one_run_file(tmp_path / f"data-{name}"), 12)
    for _, _, err in rigs:
        assert "Traceback" not in err.read_text()
    print(f"\ntwo rigs: journals {[j.name for j in journals]}; third rig: {lines[0]}")
