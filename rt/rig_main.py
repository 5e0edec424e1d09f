"""`nvscope rig`: the rig daemon as its own process (started by the CLI; rt never imports host)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import zmq

from nvscope.proto.command_line import EXIT_BAD_INPUT, OneLineParser
from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT, rig_socket
from nvscope.proto.version import software_version

from .config import ConfigError, RigConfig, load_rig_config
from .kernels import warm_up
from .link import RtLink
from .rig import Rig
from .spool import Spool, SpoolInUse


def default_spool_dir() -> Path:
    """Where unacknowledged messages wait by default: $XDG_STATE_HOME/nvscope/spool."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nvscope" / "spool"


def build_rig(cfg: RigConfig, sim: bool, sock: zmq.Socket) -> Rig:
    """Compose the rig: devices (all simulated with `sim`, else from `[devices]`, conformance-checked),
    the kernels compiled or loaded from the cache, the spool and the link."""
    from .devices import compose_devices  # the one place rt composes devices (and firmware_sim)

    devices = compose_devices(cfg, sim)
    warm_up()
    software_version()  # asks git once (~6 ms), now rather than in the first run's run_start
    directory = cfg.link.spool_dir or default_spool_dir()
    try:
        spool = Spool(directory, cfg.link.window)
    except SpoolInUse as exc:
        raise ConfigError(f"link.spool_dir: {exc}") from None
    except OSError as exc:  # a file in its place, no permission, a read-only disk
        raise ConfigError(f"link.spool_dir: cannot keep the spool in {directory} ({exc.strerror or exc})") from None
    return Rig(cfg, devices, RtLink(sock, spool, cfg.link))


def main(argv: list[str] | None = None) -> int:
    """Run the rig daemon until SIGINT/SIGTERM; print 'bound <endpoint>' on stdout once listening."""
    p = OneLineParser(prog="nvscope rig", description="The real-time rig daemon (rt).")
    p.add_argument("--sim", action="store_true", help="drive the simulated instrument")
    p.add_argument("--bind", default=DEFAULT_RIG_ENDPOINT, help="ZeroMQ endpoint to bind ('*' port: any free)")
    p.add_argument("--config", help="rig configuration (TOML)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s rig %(levelname)s: %(message)s", stream=sys.stderr)
    ctx = zmq.Context()
    try:
        cfg = load_rig_config(args.config)
        sock = rig_socket(ctx, args.bind)
        try:
            rig = build_rig(cfg, args.sim, sock)
        except ConfigError as exc:  # the devices' and [sim]'s fields, named after the file as load_rig_config does
            raise ConfigError(f"{Path(args.config).name}.{exc}" if args.config else str(exc)) from None
    except ConfigError as exc:
        print(f"nvscope rig: bad configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except zmq.ZMQError as exc:
        print(f"nvscope rig: cannot bind {args.bind}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rig.install_signal_handlers()
    print(f"bound {sock.getsockopt(zmq.LAST_ENDPOINT).decode()}", flush=True)
    try:
        rig.serve_forever()
    finally:
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
