"""`nvscope status ENDPOINT`: ask a running rig what it and its host are doing (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.command_line import EXIT_BAD_INPUT
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, EndpointError, HostSecurity, close_socket, host_socket
from nvscope.proto.keys import KeyFileError
from nvscope.proto.messages import Status, StatusRequest


def add_status_parser(subparsers) -> argparse.ArgumentParser:
    """Add `status` to an argparse subparsers object."""
    s = subparsers.add_parser(
        "status", help="ask a running rig (and, through it, its host) what they are doing",
        description="Ask the rig at ENDPOINT what it is doing: its state, the run in progress and its progress, "
                    "its journal (messages not yet acknowledged), the last acknowledgement, the host that "
                    "controls it and what that host last reported (messages stored, duplicates, malformed "
                    "frames, its run files). Read-only: it never takes control. Exit 1 if no answer.")
    s.add_argument("endpoint", nargs="?", default=DEFAULT_RIG_ENDPOINT, metavar="ENDPOINT",
                   help=f"the rig's endpoint (default {DEFAULT_RIG_ENDPOINT})")
    s.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    s.add_argument("--json", action="store_true", help="print the answer as JSON")
    s.add_argument("--key", metavar="FILE.key_secret", help="a CurveZMQ secret key the rig allows (with --rig-key)")
    s.add_argument("--rig-key", metavar="FILE.key", help="the rig's CurveZMQ public key (with --key)")
    return s


def ask_status(endpoint: str, timeout_s: float, security: HostSecurity | None = None,
               ctx: zmq.Context | None = None) -> dict | None:
    """The rig's `status` answer at `endpoint` (None: no answer within `timeout_s` s)."""
    ctx = ctx or zmq.Context.instance()
    sock = host_socket(ctx, endpoint, security)
    try:
        deadline = time.monotonic() + timeout_s
        request = encode(StatusRequest(run_id="", seq=0))
        sent = False
        while time.monotonic() < deadline:
            if not sent:
                try:
                    sock.send_multipart(request, flags=zmq.NOBLOCK)
                    sent = True
                except zmq.Again:  # not connected yet
                    time.sleep(0.01)
                    continue
            if sock.poll(int(max(deadline - time.monotonic(), 0) * 1000) + 1):
                try:
                    msg = decode(sock.recv_multipart())
                except ProtocolError:
                    continue
                if isinstance(msg, Status):
                    return dict(msg.info)
        return None
    finally:
        close_socket(sock, linger=0)


def format_status(info: dict) -> str:
    """The status answer in a few lines of words."""
    lines = [f"rig: {info.get('state', '?')} (pid {info.get('pid', '?')}, up {info.get('uptime_s', 0):.0f} s, "
             f"version {info.get('version', '?')})"]
    run = info.get("run")
    if run:
        planned = run.get("planned") or 0
        progress = f"{run['done']} of {planned} steps ({100 * run['done'] / planned:.0f} %)" if planned else \
            f"{run['done']} steps (open-ended)"
        lines.append(f"run: {run['run_id']} ({run['run_kind']}): {progress}; next seq {run['next_seq']}")
    journal = info.get("journal", {})
    lines.append(f"journal: {journal.get('unacked', '?')} unacknowledged of {journal.get('capacity', '?')} in "
                 f"{journal.get('directory', '?')}")
    ack = info.get("last_ack")
    lines.append("last ack: " + (f"run {ack['run_id']} seq {ack['seq']}, {ack['age_s']:.1f} s ago" if ack else "none yet"))
    host = info.get("host", {})
    if host.get("id"):
        heard = host.get("heard_s_ago")
        lines.append(f"host: {host['id']} ({'connected' if host.get('connected') else 'disconnected'}, heard "
                     f"{heard:.1f} s ago{', SILENT' if host.get('silent') else ''})")
        rep = host.get("reported") or {}
        if rep:
            lines.append(f"host reports: {rep.get('stored', '?')} stored, {rep.get('duplicates', '?')} duplicates, "
                         f"{rep.get('malformed', '?')} malformed; files in {rep.get('out', '?')}; runs "
                         + (", ".join(f"{r} {p}" for r, p in (rep.get("runs") or {}).items()) or "none"))
    else:
        lines.append("host: none has said hello")
    lines.append(f"frames: {info.get('malformed', 0)} malformed, {info.get('refused', 0)} refused; "
                 f"{info.get('replays', 0)} replays")
    return "\n".join(lines)


def status_command(args: argparse.Namespace) -> int:
    """Run `nvscope status`; returns the exit code."""
    if bool(args.key) != bool(args.rig_key):
        print(f"nvscope status: {'--rig-key' if args.key else '--key'}: missing (CurveZMQ needs both)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 < args.timeout <= 600:
        print(f"nvscope status: --timeout: must be in (0, 600] s, got {args.timeout}", file=sys.stderr)
        return EXIT_BAD_INPUT
    security = HostSecurity(args.key, args.rig_key) if args.key else None
    try:
        info = ask_status(args.endpoint, args.timeout, security)
    except (EndpointError, KeyFileError, zmq.ZMQError) as exc:
        print(f"nvscope status: {args.endpoint}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if info is None:
        print(f"nvscope status: no answer from a rig at {args.endpoint} within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1, sort_keys=True) if args.json else format_status(info))
    return 0
