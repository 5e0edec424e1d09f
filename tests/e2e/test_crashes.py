"""Crashes with real processes and sockets (issue 11, "No run left hanging"): a host killed -9 three
times during one scan, a host killed during a VQNS loop, a host restarted with the same --run during a
scan, a rig killed -9 and restarted on its journal, a rig restarted with another journal, and a full
disk under the host's --out. Each prints the counts it measured (run with -s to see them)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import h5py
import pytest

from nvscope.host.status_cli import ask_status
from nvscope.rt.spool import journal_pending

_spec = importlib.util.spec_from_file_location("e2e_daemons", Path(__file__).with_name("test_daemons.py"))
_daemons = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_daemons)
stop = _daemons.stop  # SIGTERM, the exit code
wait_for_pixels = _daemons._wait_for_pixels  # a run file with at least n pixels, read as it is written

LINK = "heartbeat_s = 0.2\npeer_timeout_s = 2.0\nwindow = {window}\n"
"""Added to [link]: a dead host's rig is taken over by a new host after 2 s of silence (not 5; the host
heartbeats every 1 s)."""

VQNS_RIG_TOML = """\
seed = 9
[link]
spool_dir = "{spool}"
resend_after_s = 0.5
{link}
[coherence]
repetitions = 10_000_000
[[sim.noise]]
kind = "lorentzian"
a = 6e10
w0 = 0.0
g = 1.2566e6
"""

EXIT_LINE = re.compile(r"host: (\d+) messages stored, (\d+) duplicates dropped, (\d+) malformed dropped")


def srm_config(tmp: Path, nx: int, ny: int, spool: str = "spool", window: int = 2000, dwell: float = 0.05,
               pace: float = 1.0, name: str = "rig.toml") -> Path:
    """A simulated SRM rig's TOML (test_daemons' RIG_TOML) with a fast host takeover and `window`."""
    text = _daemons.RIG_TOML.format(nx=nx, ny=ny, dwell=dwell, pace=pace, spool=(tmp / spool).as_posix())
    text = text.replace("resend_after_s = 0.5\n", "resend_after_s = 0.5\n" + LINK.format(window=window))
    path = tmp / name
    path.write_text(text)
    return path


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}


def start_rig(cfg: Path, endpoint: str = "tcp://127.0.0.1:*") -> tuple[subprocess.Popen, str]:
    """A rig process (its log in <cfg stem>.<ns>.log, path as `rig.log_path`); returns it and its endpoint."""
    log = cfg.with_suffix(f".{time.monotonic_ns()}.log")
    with open(log, "w") as stderr:
        rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", endpoint, "--config",
                                str(cfg)], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env(cfg.parent))
    rig.log_path = log
    line = rig.stdout.readline().strip()
    assert line.startswith("bound "), log.read_text()
    return rig, line.split()[1]


class Host:
    """An `nvscope host` process with its stdout and stderr in files."""

    def __init__(self, tmp: Path, name: str, endpoint: str, out: Path, *args: str):
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        with open(self.out_path, "w") as stdout, open(self.err_path, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "host", "--connect", endpoint,
                                          "--out", str(out), *args], stdout=stdout, stderr=stderr, env=env(tmp))

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"host did not exit within {timeout} s; its log:\n{self.log[-3000:]}") from None

    @property
    def log(self) -> str:
        return self.err_path.read_text()

    def counts(self) -> tuple[int, int, int]:
        """(stored, duplicates, malformed) from the exit line."""
        m = EXIT_LINE.search(self.out_path.read_text())
        assert m, (self.out_path.read_text(), self.log[-2000:])
        return int(m[1]), int(m[2]), int(m[3])


def logged_at(text: str, needle: str) -> float:
    """The time (Unix s) of the first log line containing `needle`."""
    line = next((line for line in text.splitlines() if needle in line), None)
    assert line is not None, f"no line with {needle!r} in:\n{text[-3000:]}"
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def read_run(path: Path) -> dict:
    """What a test asserts of a run file, read as it is written (SWMR) or after."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return {"seq": f["pixels/seq"][()].tolist(), "index": f["pixels/index"][()].tolist(),
                "stored_seq": int(f["stored_seq"][0]), "gaps": f["gaps"][()].tolist(),
                "duplicates": int(f["duplicates"][0]), "status": f.attrs["exit_status"],
                "reason": f.attrs["reason"], "attrs": dict(f.attrs),
                "curves": f["coherence/n_pulses"][()].tolist()}


def runs(out: Path, kind: str = "srm") -> list[Path]:
    return sorted(out.glob(f"{kind}-*.h5"), key=lambda p: p.stat().st_mtime)


def wait_until(cond, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"not within {timeout} s: {what}")


def curves_in(out: Path) -> int:
    for p in runs(out, "vqns"):
        try:
            with h5py.File(p, "r", libver="latest", swmr=True) as f:
                return f["coherence/seq"].shape[0]
        except (OSError, KeyError):
            pass
    return 0


def assert_complete(run: dict, n: int) -> None:
    """Every pixel of an n-pixel scan exactly once, in order, no gaps, completed."""
    assert run["status"] == "completed", run["reason"]
    assert run["seq"] == list(range(1, n + 1))
    assert run["index"] == list(range(n))  # each pixel once
    assert run["gaps"] == [] and run["stored_seq"] == n + 1  # run_end


# ---------------------------------------------------------------------------------------------- 1
def test_host_killed_three_times_during_one_scan_leaves_every_pixel_once(tmp_path):
    """Four hosts on one --out, the first three killed -9 at 15, 45 and 75 pixels stored (the rig,
    32 messages ahead at most, is still scanning each time): the run completes with every pixel once."""
    nx, ny = 12, 10
    n, out = nx * ny, tmp_path / "data"
    rig, endpoint = start_rig(srm_config(tmp_path, nx, ny, window=32))
    hosts = [Host(tmp_path, "host0", endpoint, out, "--run", "srm", "--exit-when-done")]
    at_kill = []
    try:
        for i, threshold in enumerate((15, 45, 75)):
            path = wait_for_pixels(lambda: out.glob("srm-*.h5"), threshold, timeout=30)
            hosts[-1].kill()
            run = read_run(path)
            assert run["status"] == "running"  # killed mid-scan
            assert run["seq"] == list(range(1, len(run["seq"]) + 1)) and run["gaps"] == []
            at_kill.append(run["stored_seq"])
            hosts.append(Host(tmp_path, f"host{i + 1}", endpoint, out, "--exit-when-done"))
        assert hosts[-1].wait(40) == 0, hosts[-1].log[-3000:]
        stored, dups, malformed = hosts[-1].counts()
        status = ask_status(endpoint, 3.0)
    finally:
        for h in hosts:
            if h.proc.poll() is None:
                h.kill()
        assert stop(rig) == 0
    (path,) = runs(out)
    run = read_run(path)
    assert_complete(run, n)
    for h in hosts[1:]:
        assert f"adopting run {path.stem}" in h.log, h.log[-2000:]
    # the last host stored exactly what the third had not: nothing twice, nothing missing
    assert stored == (n + 1) - at_kill[-1] and malformed == 0
    assert status["journal"]["unacked"] == 0  # the rig holds nothing more
    print(f"\n[kill host x3] planned {n + 2} messages (run_start, {n} pixels, run_end); killed at stored seq "
          f"{at_kill}; stored {n + 2} in the file once each; the last host stored {stored}, dropped {dups} "
          f"duplicates; the file counts {run['duplicates']} duplicates over all hosts; rig replays "
          f"{status['replays']}")


# ---------------------------------------------------------------------------------------------- 2
@pytest.fixture(scope="module")
def vqns_adopted(tmp_path_factory) -> dict:
    """A host with --run vqns killed -9 during its first fit; a host without --run adopts the run."""
    tmp = tmp_path_factory.mktemp("vqns")
    out = tmp / "data"
    cfg = tmp / "rig.toml"
    cfg.write_text(VQNS_RIG_TOML.format(spool=(tmp / "spool").as_posix(), link=LINK.format(window=2000)))
    rig, endpoint = start_rig(cfg)
    first = Host(tmp, "host0", endpoint, out, "--run", "vqns", "--exit-when-done")
    again = None
    try:
        k = wait_until(lambda: curves_in(out) >= 2 and curves_in(out), 40, "the echo and CPMG-2 stored")
        first.kill()  # it fits for ~2 s before it asks for the third curve
        again = Host(tmp, "host1", endpoint, out, "--exit-when-done")
        rc = again.wait(60)
    finally:
        for h in (first, again):
            if h is not None and h.proc.poll() is None:
                h.kill()
        assert stop(rig) == 0
    (path,) = runs(out, "vqns")
    with h5py.File(path, "r") as f:
        steps = f["vqns/steps/n_curves"][()].tolist() if "vqns/steps/n_curves" in f else []
    return {"rc": rc, "k": k, "run": read_run(path), "path": path, "log": again.log, "first_log": first.log,
            "steps": steps, "counts": again.counts()}


def test_a_host_killed_during_a_vqns_loop_is_replaced_by_one_that_adopts_and_finishes_it(vqns_adopted):
    r = vqns_adopted
    run, k, log = r["run"], r["k"], r["log"]
    assert f"adopting run {r['path'].stem} (vqns)" in log, log[-2000:]
    assert f"VQNS run {r['path'].stem} adopted with {k} curves" in log
    # the dead host had asked for at most one more curve; the new one fitted every curve and ended the run
    assert len(run["curves"]) >= k + 1, (run["curves"], log[-2000:])
    assert run["curves"][:2] == [1, 2]  # echo and CPMG-2 first
    assert r["steps"] and r["steps"][0] == k and r["steps"][-1] == len(run["curves"])  # fitted from the file on
    assert run["attrs"]["vqns_adopted"] == f"{k} curves from the file"
    assert run["status"] == "completed", run["reason"]  # ended by the loop's own rule
    assert run["attrs"]["stop_reason"].startswith(("no candidate is worth its time", "budget of")), run["reason"]
    assert run["gaps"] == [] and "vqns/S_lo" in h5py.File(r["path"], "r")
    assert "Traceback" not in log
    print(f"\n[kill host mid-VQNS] killed with {k} curves stored; the new host fitted at {r['steps']} curves, "
          f"measured {run['curves']} in all; stored {r['counts'][0]} messages, {r['counts'][1]} duplicates "
          f"dropped; its exit code {r['rc']}")


def test_exit_when_done_exits_0_after_an_adopted_vqns_run_that_met_its_stopping_rule(vqns_adopted):
    assert vqns_adopted["run"]["attrs"]["stop_reason"].startswith(("no candidate is worth its time", "budget of"))
    assert vqns_adopted["rc"] == 0


# ---------------------------------------------------------------------------------------------- 3
def test_a_host_restarted_with_the_same_run_during_a_scan_finishes_that_run_then_its_own(tmp_path):
    nx, ny = 8, 6
    n, out = nx * ny, tmp_path / "data"
    rig, endpoint = start_rig(srm_config(tmp_path, nx, ny, window=16))
    first = Host(tmp_path, "host0", endpoint, out, "--run", "srm", "--exit-when-done")
    again = None
    try:
        path = wait_for_pixels(lambda: out.glob("srm-*.h5"), 10, timeout=30)
        first.kill()
        assert read_run(path)["status"] == "running"
        again = Host(tmp_path, "host1", endpoint, out, "--run", "srm", "--exit-when-done")
        rc = again.wait(40)
    finally:
        for h in (first, again):
            if h is not None and h.proc.poll() is None:
                h.kill()
        assert stop(rig) == 0
    log = again.log
    assert rc == 0, log[-3000:]
    files = runs(out)
    assert len(files) == 2 and files[0] == path, files
    mine = files[1].stem
    assert f"adopting run {path.stem}" in log
    assert f"rig refused start of run {mine}: cannot 'start' while running" in log, log[-3000:]  # said why
    assert re.search(rf"run {mine} waits: .*the rig is running srm run {path.stem}", log), log[-3000:]
    for p in files:
        assert_complete(read_run(p), n)
    stored, dups, _ = again.counts()
    print(f"\n[host restarted with --run srm] its start refused ({log.count(f'refused start of run {mine}')} "
          f"busy refusals logged); it finished {path.stem} and then its own {mine}: both completed, {n} pixels "
          f"each; stored {stored} messages, {dups} duplicates dropped")


# ---------------------------------------------------------------------------------------------- 4
def test_a_rig_killed_mid_scan_and_restarted_on_its_journal_ends_the_run_failed_keeping_every_pixel(tmp_path):
    """The host is held (SIGSTOP) so that the rig has pixels only in its journal when it is killed."""
    nx, ny = 8, 6
    n, out = nx * ny, tmp_path / "data"
    cfg = srm_config(tmp_path, nx, ny)
    rig, endpoint = start_rig(cfg)
    host = Host(tmp_path, "host", endpoint, out, "--run", "srm", "--run", "srm", "--exit-when-done")
    try:
        path = wait_for_pixels(lambda: out.glob("srm-*.h5"), 10, timeout=30)
        os.kill(host.proc.pid, signal.SIGSTOP)
        time.sleep(0.6)  # the rig scans on into its journal, unacknowledged
        os.kill(rig.pid, signal.SIGKILL)
        rig.wait()
        os.kill(host.proc.pid, signal.SIGCONT)
        pending = [seq for run_id, seq in journal_pending(tmp_path / "spool") if run_id == path.stem]
        stored_at_kill = read_run(path)["stored_seq"]
        assert pending and max(pending) > stored_at_kill and max(pending) < n, (pending, stored_at_kill)
        put = max(pending)  # the last message the rig put before it died
        rig, _ = start_rig(cfg, endpoint)  # same journal: it replays, then ends the interrupted run
        rc = host.wait(40)
    finally:
        if host.proc.poll() is None:
            host.kill()
        assert stop(rig) == 0
    log = host.log
    assert rc == 1 and f"runs that did not complete: {path.stem} failed" in log, log[-3000:]
    run = read_run(path)
    assert run["status"] == "failed" and "rig process ended during the run" in run["reason"], run["reason"]
    assert run["seq"] == list(range(1, put + 1)) and run["gaps"] == []  # every pixel put, before and after the ack
    assert run["stored_seq"] == put + 1  # its run_end, numbered after the last pixel put
    assert run["attrs"]["n_pixels_done"] == put
    files = runs(out)
    assert len(files) == 2 and files[0] == path
    assert_complete(read_run(files[1]), n)  # the next run, on the restarted rig
    stored, dups, _ = host.counts()
    print(f"\n[kill rig] pixels put before the kill: {put} ({stored_at_kill} stored, {len(pending)} only in the "
          f"journal); after the restart the file holds {len(run['seq'])} pixels, run_end seq {run['stored_seq']}; "
          f"the next run completed with {n}; the host stored {stored}, dropped {dups} duplicates")


# ---------------------------------------------------------------------------------------------- 5
def test_a_rig_restarted_with_another_journal_ends_the_lost_run_failed_within_seconds(tmp_path):
    nx, ny = 12, 10
    out = tmp_path / "data"
    rig, endpoint = start_rig(srm_config(tmp_path, nx, ny))
    host = Host(tmp_path, "host", endpoint, out, "--run", "srm", "--exit-when-done", "--peer-timeout", "1.5")
    try:
        path = wait_for_pixels(lambda: out.glob("srm-*.h5"), 10, timeout=30)
        os.kill(rig.pid, signal.SIGKILL)
        rig.wait()
        rig, _ = start_rig(srm_config(tmp_path, nx, ny, spool="other-spool", name="rig2.toml"), endpoint)
        t0 = time.monotonic()
        rc = host.wait(30)
        exited = time.monotonic() - t0
    finally:
        if host.proc.poll() is None:
            host.kill()
        assert stop(rig) == 0
    log = host.log
    assert rc == 1, log[-3000:]
    assert "the rig no longer knows this run" in log and f"{path.stem} failed" in log, log[-3000:]
    run = read_run(path)
    assert run["status"] == "failed" and "no longer knows this run" in run["reason"], run["reason"]
    assert run["seq"] == list(range(1, len(run["seq"]) + 1))
    # the host says hello after 3 s of silence, then the rig's idle heartbeats for its 1.5 s peer timeout
    bound = logged_at(rig.log_path.read_text(), "INFO: bound ")
    took = logged_at(log, "the rig no longer knows this run") - bound
    assert 1.5 < took < 8, took
    print(f"\n[rig with another journal] the run ended as failed {took:.1f} s after the new rig was bound "
          f"(host peer timeout 1.5 s), the host exited {exited:.1f} s after (analysis done); "
          f"{len(run['seq'])} pixels kept")


# ---------------------------------------------------------------------------------------------- 6
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True,
                         text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {got.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte with one file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 65536
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_disk_under_the_host_loses_nothing_once_space_is_back(tmp_path, small_disk):
    nx, ny = 20, 15  # 300 pixels of ~2 kB: more than fits beside the filler
    n, out = nx * ny, small_disk / "data"
    rig, endpoint = start_rig(srm_config(tmp_path, nx, ny, dwell=0.03))
    host = Host(tmp_path, "host", endpoint, out, "--run", "srm", "--exit-when-done")
    try:
        path = wait_for_pixels(lambda: out.glob("srm-*.h5"), 20, timeout=30)
        filler = fill(small_disk)
        time.sleep(3.0)  # the scan goes on into the rig's journal
        assert host.proc.poll() is None, host.log[-3000:]  # the host did not crash
        status = ask_status(endpoint, 3.0)
        log_full = host.log
        stored_full = read_run(path)["stored_seq"]
        assert status["journal"]["unacked"] > 0, status  # the rig keeps what the host could not store
        assert status["run"] is not None and status["run"]["done"] > stored_full, (status, stored_full)
        filler.unlink()
        rc = host.wait(40)
    finally:
        if host.proc.poll() is None:
            host.kill()
        assert stop(rig) == 0
    lines = [line for line in log_full.splitlines() if "ERROR" in line or "Traceback" in line]
    assert "Traceback" not in log_full, log_full[-3000:]
    assert 1 <= len(lines) <= 2 and any("No space left" in line for line in lines), "\n".join(lines[:20])
    run = read_run(path)
    assert run["gaps"] == [], (run["gaps"], host.log[-3000:])  # nothing the rig kept was lost
    assert_complete(run, n)
    assert rc == 0, host.log[-3000:]
    print(f"\n[full disk] the disk filled at stored seq ~{stored_full}; the rig kept "
          f"{status['journal']['unacked']} messages meanwhile; {len(lines)} error line(s) logged: {lines[0][:200]}; "
          f"once space was back the run completed with {n} pixels, no gaps")
