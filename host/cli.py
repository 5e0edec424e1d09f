"""The `nvscope` command line: demo, rig, host (docs/cli.md sections 1-3)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import zmq

from nvscope.proto.command_line import EXIT_BAD_INPUT, InputError, OneLineParser
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT

from .mri.cli import add_mri_parser
from .srm.g2_cli import add_g2_parser
from .vqns.cli import add_vqns_parser

RUN_KINDS = ("srm", "vqns", "mri")
"""The run kinds `nvscope host --run` can start."""


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nvscope", description="Run a scanning NV-center sensing rig headless.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulated rig + host on loopback: scan, store, analyse, plot")
    d.add_argument("--out", default="nvscope-demo", help="output folder (HDF5 files, PNG figures)")
    d.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")

    r = sub.add_parser("rig", help="the real-time rig daemon (rt), in its own process")
    r.add_argument("--sim", action="store_true", help="drive the simulated instrument (firmware_sim)")
    r.add_argument("--bind", default=DEFAULT_RIG_ENDPOINT, help=f"ZeroMQ endpoint to bind (default {DEFAULT_RIG_ENDPOINT})")
    r.add_argument("--config", help="rig configuration (TOML): scan, link, seed, sim")

    h = sub.add_parser("host", help="the host daemon: store, analyse, command the rig")
    h.add_argument("--connect", default=DEFAULT_RIG_ENDPOINT, help=f"rig endpoint (default {DEFAULT_RIG_ENDPOINT})")
    h.add_argument("--out", default="nvscope-data", help="folder for the run files")
    h.add_argument("--run", action="append", default=[], metavar="KIND", choices=RUN_KINDS,
                   help="start a run of this kind (srm: antibunching scan, vqns: adaptive noise "
                        "spectroscopy, mri: NV-MRI tip scan with DEER maps and localization) once "
                        "connected; runs go one after another; repeatable")
    add_vqns_parser(sub)
    add_g2_parser(sub)
    add_mri_parser(sub)
    h.add_argument("--g2-model", metavar="FILE.onnx", help="the g2 CNN to use instead of the shipped one")
    h.add_argument("--exit-when-done", action="store_true",
                   help="exit once every run started with --run has ended and been stored")
    return p


def _host(args: argparse.Namespace) -> int:
    from .daemon import HostDaemon
    from .run_kinds import default_g2_estimator, host_analyses, new_run_id
    from .vqns.loop import VqnsController

    estimator = default_g2_estimator(args.g2_model)  # checked before anything connects
    out = Path(args.out)
    try:  # a folder the runs cannot be written to is found before a run starts, not after
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".nvscope-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {args.out}: cannot write run files there ({exc.strerror or exc})") from None
    try:
        daemon = HostDaemon(args.connect, out, host_analyses(estimator), g2_estimator=estimator)
    except zmq.ZMQError as exc:
        raise InputError(f"--connect {args.connect}: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    queue = [(new_run_id(kind), kind) for kind in args.run]  # the rig runs one run at a time
    current = None
    controllers = []  # the VQNS loops this host drives, closed when it ends
    try:
        while not stop.is_set():
            done = {r for r, _ in daemon.stats.finished}
            if (current is None or current in done) and queue:
                current, kind = queue.pop(0)
                if kind == "vqns":  # the host drives it: curves requested, fitted, proposed
                    controller = VqnsController(daemon, current)
                    controllers.append(controller)
                    daemon.analyses["vqns"] = controller.analysis
                    daemon.start_run(current, kind, controller.run_attributes())
                    controller.begin()
                else:
                    daemon.start_run(current, kind)
            elif args.exit_when_done and current in done and not queue:
                break
            daemon.step(200)
    finally:
        daemon.close()  # waits for run-end analyses, which may wait for a VQNS fit in flight
        for controller in controllers:
            controller.close()
    print(f"host: {daemon.stats.stored} messages stored, {daemon.stats.duplicates} duplicates dropped, "
          f"{daemon.stats.malformed} malformed dropped; files in {Path(args.out).resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nvscope` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    if args.command == "rig":
        # The rig runs the real-time code (rt); the host never imports it: hand over the process.
        rig_argv = [sys.executable, "-m", "nvscope.rt.rig_main", "--bind", args.bind]
        rig_argv += ["--sim"] if args.sim else []
        rig_argv += ["--config", args.config] if args.config else []
        rig_argv += ["--verbose"] if args.verbose else []
        os.execv(sys.executable, rig_argv)
    try:
        if args.command == "host":
            return _host(args)
        if args.command == "g2":
            from .srm.g2_cli import g2_command
            return g2_command(args)
        if args.command == "vqns":
            from .vqns.cli import vqns_command
            return vqns_command(args)
        if args.command == "mri":
            from .mri.cli import mri_command
            return mri_command(args)
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
