"""`nvscope rig`: the rig daemon as its own process (started by the CLI; rt never imports host)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import zmq

from nvscope.proto.command_line import EXIT_BAD_INPUT, OneLineParser
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, EndpointError, RigSecurity, close_socket, rig_socket
from nvscope.proto.keys import KeyFileError
from nvscope.proto.logs import setup_logging
from nvscope.proto.version import software_version

from .config import ConfigError, RigConfig, load_rig_config
from .hal import DEVICE_INTERFACES
from .kernels import warm_up
from .link import RtLink
from .retry import Retrying
from .rig import Rig
from .spool import Spool, SpoolInUse

log = logging.getLogger(__name__)

DEVICE_ROLES = tuple(DEVICE_INTERFACES)
"""The rig's device roles (RigDevices fields): scanner, tagger, microwave, counter, pulser, rf."""

DESCRIPTION = """The real-time rig daemon (rt): drives the instruments, runs one run at a time as the
host commands, and streams every result to the host, which stores and acknowledges it.

Binds a ZeroMQ endpoint (loopback by default; beyond this machine only with CurveZMQ keys: [link]
key_file and allowed_hosts, see `nvscope keys init`). Only the host that said hello first controls the
rig; another takes over once that one has been silent for [link] peer_timeout_s.

Every message stays in the rig's journal until the host acknowledges it: by default
$XDG_STATE_HOME/nvscope/rig-<endpoint>/ (~/.local/state/...), or [link] spool_dir. A rig killed and
restarted on the same journal replays it and ends the interrupted run as failed; a host that
reconnects gets everything unacknowledged again and adopts the run in progress. Prints
'bound <endpoint>' on stdout once listening; SIGINT/SIGTERM end it cleanly."""


def journal_name(endpoint: str) -> str:
    """A folder name for the journal of the rig bound at `endpoint` (e.g. rig-tcp-127.0.0.1-5557)."""
    return "rig-" + re.sub(r"[^A-Za-z0-9.]+", "-", endpoint).strip("-")


def default_spool_dir(endpoint: str) -> Path:
    """Where a rig bound at `endpoint` keeps its journal by default: $XDG_STATE_HOME/nvscope/rig-<endpoint>
    (one per rig: two rigs on one journal would break each other's runs)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nvscope" / journal_name(endpoint)


def build_rig(cfg: RigConfig, sim: bool, sock: zmq.Socket, endpoint: str = DEFAULT_RIG_ENDPOINT) -> Rig:
    """Compose the rig: devices (all simulated with `sim`, else from `[devices]`, conformance-checked;
    the real ones retried on timeouts as `[retry]` says), the kernels compiled or loaded from the cache,
    the journal and the link."""
    from .devices import compose_devices  # the one place rt composes devices (and firmware_sim)

    devices = compose_devices(cfg, sim)
    warm_up()
    software_version()  # asks git once (~6 ms), now rather than in the first run's run_start
    directory = cfg.link.spool_dir or default_spool_dir(endpoint)
    try:
        spool = Spool(directory, cfg.link.window)
    except SpoolInUse as exc:
        raise ConfigError(f"link.spool_dir: {exc}") from None
    except OSError as exc:  # a file in its place, no permission, a read-only disk
        raise ConfigError(f"link.spool_dir: cannot keep the journal in {directory} ({exc.strerror or exc})") from None
    rig = Rig(cfg, devices, RtLink(sock, spool, cfg.link))
    for name in DEVICE_ROLES:
        device = getattr(devices, name)
        if device is not None and not sim and getattr(cfg.devices, name).get("kind", "sim") != "sim":
            setattr(devices, name, Retrying(name, device, cfg.retry, rig.report_retry))
    return rig


def main(argv: list[str] | None = None) -> int:
    """Run the rig daemon until SIGINT/SIGTERM; print 'bound <endpoint>' on stdout once listening."""
    p = OneLineParser(prog="nvscope rig", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", action="store_true", help="drive the simulated instrument")
    p.add_argument("--bind", default=DEFAULT_RIG_ENDPOINT,
                   help=f"ZeroMQ endpoint to bind ('*' port: any free; default {DEFAULT_RIG_ENDPOINT})")
    p.add_argument("--config", help="rig configuration (TOML)")
    p.add_argument("--log-file", help="also log to this file (rotated at 10 MB, 5 kept)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging("rig", args.log_file, args.verbose)
    ctx = zmq.Context()
    try:
        cfg = load_rig_config(args.config)
        link = cfg.link
        security = RigSecurity(link.key_file, link.allowed_hosts) if link.key_file else None
        sock = rig_socket(ctx, args.bind, security)
        bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        try:
            rig = build_rig(cfg, args.sim, sock, args.bind if not args.bind.endswith(":*") else bound)
        except ConfigError as exc:  # the devices' and [sim]'s fields, named after the file as load_rig_config does
            close_socket(sock)
            raise ConfigError(f"{Path(args.config).name}.{exc}" if args.config else str(exc)) from None
    except (ConfigError, KeyFileError) as exc:
        print(f"nvscope rig: bad configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EndpointError as exc:
        print(f"nvscope rig: --bind: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except zmq.ZMQError as exc:
        print(f"nvscope rig: cannot bind {args.bind}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rig.install_signal_handlers()
    log.info("bound %s%s; journal %s", bound, " (CurveZMQ)" if security else "", rig.link.spool.directory)
    print(f"bound {bound}", flush=True)
    try:
        rig.serve_forever()
    finally:
        from .devices import close_devices

        close_devices({name: getattr(rig.devices, name) for name in DEVICE_ROLES})  # the instruments' sessions
        rig.link.close()
        close_socket(sock)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
