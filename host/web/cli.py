"""`nvscope web`: serve a live, read-only view of a rig and its run files (docs/web.md)."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from nvscope.proto.command_line import InputError
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, HostSecurity
from nvscope.proto.keys import KeyFileError, is_loopback, load_keypair, load_public_keys

from . import TAIL_INTERVAL_S

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1"


def add_web_parser(subparsers) -> argparse.ArgumentParser:
    """Add `web` to an argparse subparsers object."""
    w = subparsers.add_parser("web", help="a live web view of the rig and its run files",
                              description="Serve a page that shows, live, the runs stored under --data and "
                                          "the health of the rig at --connect. Read-only: it starts and stops "
                                          "nothing, opens the run files read-only (HDF5 SWMR) and only asks the "
                                          "rig for its status. Binds loopback unless --bind says otherwise, which "
                                          "needs --key and --rig-key. See docs/web.md.")
    w.add_argument("--connect", default=DEFAULT_RIG_ENDPOINT, help=f"rig endpoint (default {DEFAULT_RIG_ENDPOINT})")
    w.add_argument("--data", default="nvscope-data", help="the host's folder of run files (its --out)")
    w.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    w.add_argument("--bind", default=DEFAULT_BIND,
                   help=f"HTTP address to listen on (default {DEFAULT_BIND}); an address beyond loopback is "
                        "refused unless --key and --rig-key are given")
    w.add_argument("--key", metavar="FILE.key_secret", help="a CurveZMQ secret key the rig allows (with --rig-key)")
    w.add_argument("--rig-key", metavar="FILE.key", help="the rig's CurveZMQ public key (with --key)")
    w.add_argument("--tail-interval", type=float, default=TAIL_INTERVAL_S, metavar="S",
                   help=f"how often running files are read for new rows (default {TAIL_INTERVAL_S:g} s)")
    return w


def _http_endpoint(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    return f"tcp://{host}:{port}"


def check_web_args(args: argparse.Namespace) -> HostSecurity | None:
    """The CurveZMQ setup for the status requests (None: none); InputError for a bad option, such as a
    --bind beyond loopback without keys."""
    if bool(args.key) != bool(args.rig_key):
        raise InputError(f"{'--rig-key' if args.key else '--key'}: missing (CurveZMQ needs this side's secret key "
                         "and the rig's public key)")
    if not 0 < args.port < 65536:
        raise InputError(f"--port: must be in 1-65535, got {args.port}")
    if not (math.isfinite(args.tail_interval) and 0.005 <= args.tail_interval <= 10):
        raise InputError(f"--tail-interval: must be in [0.005, 10] s, got {args.tail_interval}")
    if not is_loopback(_http_endpoint(args.bind, args.port)) and not args.key:
        raise InputError(f"--bind {args.bind}: beyond loopback the view needs keys (--key, --rig-key; see nvscope "
                         "keys init); it is read-only but shows everything the rig and its files hold")
    if not args.key:
        return None
    try:
        load_keypair(args.key)
        load_public_keys(args.rig_key)
    except (KeyFileError, OSError) as exc:
        raise InputError(str(exc)) from None
    return HostSecurity(args.key, args.rig_key)


def web_command(args: argparse.Namespace) -> int:
    """Run the web view until interrupted (SIGINT/SIGTERM end it cleanly)."""
    import uvicorn

    from .app import WebConfig, WebServer, WebView, create_app

    security = check_web_args(args)
    view = WebView(WebConfig(Path(args.data), args.connect, security, tail_interval_s=args.tail_interval))
    app = create_app(view)
    print(f"nvscope web: http://{args.bind}:{args.port}/ (data {Path(args.data).resolve()}, rig {args.connect})",
          flush=True)
    server = WebServer(uvicorn.Config(app, host=args.bind, port=args.port, log_level="warning",
                                      timeout_graceful_shutdown=2))
    server.run()
    return 0 if server.started else 1

