"""The `nvscope` command line: demo, rig, host, status, keys, and the analyses of saved data (docs/cli.md)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, OneLineParser, writable_folder
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, PEER_TIMEOUT_S, EndpointError, HostSecurity
from nvscope.proto.keys import KeyFileError
from nvscope.proto.logs import setup_logging

from .keys_cli import add_keys_parser, keys_command
from .mri.cli import add_mri_parser
from .reanalyze_cli import add_reanalyze_parser
from .srm.g2_cli import add_g2_parser
from .status_cli import add_status_parser, status_command
from .vqns.cli import add_vqns_parser
from .web.cli import add_web_parser

log = logging.getLogger(__name__)

RUN_KINDS = ("srm", "vqns", "mri")
"""The run kinds `nvscope host --run` can start."""


HOST_DESCRIPTION = """The host daemon: connects to the rig, stores every message of every run in one HDF5 file
per run under --out (acknowledging only what is on disk), analyses each run at its end and starts the runs
asked for with --run, one after another.

Only one host controls a rig: the first to say hello; another is refused until that one has been silent for
the rig's [link] peer_timeout_s. A host that (re)connects in the middle of a run adopts it: the rig replays
everything not yet acknowledged from its journal, the run's file is reopened (or created, with gaps recorded
for what another host stored elsewhere) and the run is finished and analysed here, VQNS loops included.
Beyond loopback the link needs CurveZMQ keys (--key, --rig-key; see nvscope keys init).
With --exit-when-done the exit code is 0 only if every run it started or adopted completed."""


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nvscope", description="Run a scanning NV-center sensing rig headless.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulated rig + host on loopback: scan, store, analyse, plot")
    d.add_argument("--out", default="nvscope-demo", help="output folder (HDF5 files, PNG figures)")
    d.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")

    sub.add_parser("rig", add_help=False, help="the real-time rig daemon (rt), in its own process "
                                               "(nvscope rig --help for its options)")

    h = sub.add_parser("host", help="the host daemon: store, analyse, command the rig", description=HOST_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("--connect", default=DEFAULT_RIG_ENDPOINT, help=f"rig endpoint (default {DEFAULT_RIG_ENDPOINT})")
    h.add_argument("--out", default="nvscope-data", help="folder for the run files")
    h.add_argument("--run", action="append", default=[], metavar="KIND", choices=RUN_KINDS,
                   help="start a run of this kind (srm: antibunching scan, vqns: adaptive noise "
                        "spectroscopy, mri: NV-MRI tip scan with DEER maps and localization) once "
                        "connected; runs go one after another; repeatable")
    h.add_argument("--g2-model", metavar="FILE.onnx", help="the g2 CNN to use instead of the shipped one")
    h.add_argument("--exit-when-done", action="store_true",
                   help="exit once every run started with --run (or adopted) has ended and been stored; "
                        "exit code 1 if one of them did not complete")
    h.add_argument("--key", metavar="FILE.key_secret", help="this host's CurveZMQ secret key (with --rig-key)")
    h.add_argument("--rig-key", metavar="FILE.key", help="the rig's CurveZMQ public key (with --key)")
    h.add_argument("--peer-timeout", type=float, default=PEER_TIMEOUT_S, metavar="S",
                   help=f"report a rig silent this long, its runs waiting (default {PEER_TIMEOUT_S:g} s)")
    h.add_argument("--log-file", help="also log to this file (rotated at 10 MB, 5 kept)")
    add_status_parser(sub)
    add_keys_parser(sub)
    add_vqns_parser(sub)
    add_g2_parser(sub)
    add_mri_parser(sub)
    add_web_parser(sub)
    add_reanalyze_parser(sub)
    return p


def _host_security(args: argparse.Namespace) -> HostSecurity | None:
    if bool(args.key) != bool(args.rig_key):
        raise InputError(f"{'--rig-key' if args.key else '--key'}: missing (CurveZMQ needs this host's secret key "
                         "and the rig's public key)")
    return HostSecurity(args.key, args.rig_key) if args.key else None


def _host(args: argparse.Namespace) -> int:
    from .daemon import HostDaemon
    from .run_kinds import default_g2_estimator, host_analyses, new_run_id
    from .vqns.loop import VqnsController

    if not (math.isfinite(args.peer_timeout) and 1.5 <= args.peer_timeout <= 3600):
        raise InputError(f"--peer-timeout: must be in [1.5, 3600] s, got {args.peer_timeout}")
    estimator = default_g2_estimator(args.g2_model)  # checked before anything connects
    out = writable_folder(args.out, "--out", "run files")  # found before a run starts, not after
    try:
        daemon = HostDaemon(args.connect, out, host_analyses(estimator), g2_estimator=estimator,
                            security=_host_security(args), peer_timeout_s=args.peer_timeout)
    except (zmq.ZMQError, EndpointError, KeyFileError) as exc:
        raise InputError(f"--connect {args.connect}: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    queue = [(new_run_id(kind), kind) for kind in args.run]  # the rig runs one run at a time
    mine: list[str] = []  # the runs this host started or adopted, in order
    controllers = []  # the VQNS loops this host drives, closed when it ends

    def adopt(session) -> None:
        """(I/O thread) A run in progress that this host did not start: finish it here."""
        mine.append(session.run_id)
        if session.kind == "vqns":
            try:
                controller = VqnsController.adopt(daemon, session.run_id, session.store)
            except ValueError as exc:
                log.error("run %s: cannot drive its VQNS loop on: %s", session.run_id, exc)
                return
            controllers.append(controller)
            daemon.analyses["vqns"] = controller.analysis

    daemon.on_adopt = adopt
    current: tuple[str, str] | None = None  # (run id, kind) of the run this host started last
    retry: tuple[str, float] | None = None  # its start was refused for now: (the busy run, earliest retry)
    seen, idle_since = 0, None
    try:
        while not stop.is_set():
            done = {r for r, _ in daemon.stats.finished}
            for refusal in daemon.stats.refused[seen:]:
                if current is not None and refusal.command == "start" and refusal.run_id == current[0]:
                    for controller in [c for c in controllers if c.run_id == current[0]]:
                        controller.close()  # its first requests were refused too: a fresh loop if it starts
                        controllers.remove(controller)
                    if refusal.later:  # the rig is busy with a run (adopted meanwhile) or not ours yet
                        log.warning("run %s waits: %s", current[0], refusal.reason)
                        retry = (refusal.busy_run, time.monotonic() + 2.0)
                    else:
                        log.error("run %s not started: %s", current[0], refusal.reason)
                        current = None
            seen = len(daemon.stats.refused)
            adopted_running = any(r in daemon.stats.adopted and r not in done for r in mine)
            if retry is not None:
                busy_run, at = retry
                if (not busy_run or busy_run in done) and time.monotonic() >= at:
                    retry = None
                    _start(daemon, current, controllers, VqnsController)
            elif (current is None or current[0] in done) and queue and not adopted_running:
                current = queue.pop(0)
                mine.append(current[0])
                _start(daemon, current, controllers, VqnsController)
            elif (args.exit_when_done and not queue and mine and not adopted_running
                  and (current is None or current[0] in done)
                  and all(r in done for r in mine if r in daemon.sessions)):  # (a start refused has no session)
                break
            idle_since = _check_lost_run(daemon, mine, done, idle_since)
            daemon.step(200)
    finally:
        daemon.close()  # waits for run-end analyses, which may wait for a VQNS fit in flight
        for controller in controllers:
            controller.close()
    print(f"host: {daemon.stats.stored} messages stored, {daemon.stats.duplicates} duplicates dropped, "
          f"{daemon.stats.malformed} malformed dropped; files in {Path(args.out).resolve()}")
    status = dict(daemon.stats.finished)
    stopped_by_rule = {c.run_id for c in controllers if c.done and not c.stop_reason.startswith("failed")}
    incomplete = [f"{r} {status.get(r, 'not finished')}" for r in mine if status.get(r) != "completed"
                  and not (status.get(r) == "stopped" and r in stopped_by_rule)]  # a VQNS loop ends by stopping
    if args.exit_when_done and incomplete:
        print(f"host: runs that did not complete: {', '.join(incomplete)}", file=sys.stderr)
        return 1
    return 0


def _start(daemon, run: tuple[str, str], controllers: list, controller_cls) -> None:
    """Ask the rig to start `run` (run id, kind); a VQNS run gets its loop (requests, fits, proposals)."""
    run_id, kind = run
    if kind == "vqns":  # the host drives it: curves requested, fitted, proposed
        controller = controller_cls(daemon, run_id)
        controllers.append(controller)
        daemon.analyses["vqns"] = controller.analysis
        daemon.start_run(run_id, kind, controller.run_attributes())
        controller.begin()
    else:
        daemon.start_run(run_id, kind)


def _adopted_running(daemon, mine: list[str], done: set[str]) -> bool:
    """An adopted run is still going: this host's own runs wait for it."""
    return any(r in daemon.stats.adopted and r not in done for r in mine)


def _check_lost_run(daemon, mine: list[str], done: set[str], idle_since: float | None) -> float | None:
    """A run of ours is streaming but the rig says it is idle with an empty journal for longer than
    the peer timeout: the rig lost it (restarted without its journal); end it as failed, saying so."""
    hb = daemon.last_heartbeat
    streaming = [r for r in mine if r not in done and r in daemon.sessions
                 and daemon.sessions[r].phase.value == "streaming"]
    if not streaming or hb is None or hb.state != "idle" or hb.unacked:
        return None
    now = time.monotonic()
    if idle_since is None:
        return now
    if now - idle_since > daemon.peer_timeout_s:
        for run_id in streaming:
            daemon.end_lost_run(run_id, "the rig no longer knows this run (it restarted without its journal?); "
                                        "its run_end will never come")
        return None
    return idle_since


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nvscope` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = argv[:1] in (["-v"], ["--verbose"])
    if argv[verbose:verbose + 1] == ["rig"]:
        # The rig runs the real-time code (rt); the host never imports it: hand over the process, with
        # every argument (rt/rig_main.py defines them, and its --help).
        rest = argv[verbose + 1:]
        os.execv(sys.executable, [sys.executable, "-m", "nvscope.rt.rig_main", *rest,
                                  *(["--verbose"] if verbose and "--verbose" not in rest else [])])
    args = _parser().parse_args(argv)
    setup_logging(args.command, getattr(args, "log_file", None), args.verbose)
    try:
        if args.command == "host":
            return _host(args)
        if args.command == "status":
            return status_command(args)
        if args.command == "keys":
            return keys_command(args)
        if args.command == "g2":
            from .srm.g2_cli import g2_command
            return g2_command(args)
        if args.command == "vqns":
            from .vqns.cli import vqns_command
            return vqns_command(args)
        if args.command == "mri":
            from .mri.cli import mri_command
            return mri_command(args)
        if args.command == "web":
            from .web.cli import web_command
            return web_command(args)
        if args.command == "reanalyze":
            from .reanalyze_cli import reanalyze_command
            return reanalyze_command(args)
        if args.command == "demo":
            from .demo import run_demo
            return run_demo(Path(args.out), timeout_s=args.timeout)
    except InputError as exc:  # e.g. the g2 model (ModelFileError), checked when the host starts
        print(f"nvscope {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"nvscope {args.command}: {exc}", file=sys.stderr)
        return 1
    return EXIT_BAD_INPUT  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
