"""`nvscope keys init DIR [--name NAME]`: write a CurveZMQ key pair for a rig or a host (docs/cli.md)."""

from __future__ import annotations

import argparse
import re
import socket
import sys

from nvscope.proto.command_line import EXIT_BAD_INPUT
from nvscope.proto.keys import KeyFileError, init_keys


def _default_name() -> str:
    """This machine's short host name, as a key name ('nvscope' if it has none usable)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0]).strip(".-")
    return name or "nvscope"


def add_keys_parser(subparsers) -> argparse.ArgumentParser:
    """Add `keys` with its `init` subcommand to an argparse subparsers object."""
    k = subparsers.add_parser("keys", help="CurveZMQ keys for a rig and host on different machines")
    ksub = k.add_subparsers(dest="keys_action", required=True)
    i = ksub.add_parser(
        "init", help="write a key pair: NAME.key (public) and NAME.key_secret (private, mode 0600)",
        description="Write a new CurveZMQ key pair into DIR (created with mode 0700): NAME.key is the public "
                    "key, to give to the other side; NAME.key_secret never leaves this machine. Run it once "
                    "on the rig and once on each host. An existing pair is never overwritten.")
    i.add_argument("dir", metavar="DIR", help="folder for the two files")
    i.add_argument("--name", default=_default_name(),
                   help="file name of the pair (default: this machine's host name)")
    return k


def keys_command(args: argparse.Namespace) -> int:
    """Run `nvscope keys <action>`; returns the exit code."""
    if args.keys_action != "init":  # pragma: no cover (argparse allows only init)
        print(f"nvscope keys: unknown action {args.keys_action!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        public, secret = init_keys(args.dir, args.name)
    except KeyFileError as exc:
        print(f"nvscope keys init: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"public key: {public}\n"
          f"secret key: {secret}  (mode 0600: keep it on this machine)\n"
          f"On the rig:  [link] key_file = \"{secret}\" and allowed_hosts = a folder holding each host's .key\n"
          f"On a host:   nvscope host --key {secret} --rig-key RIG.key (the rig's public key)\n"
          f"Copy {public.name} to the other side: into the rig's allowed_hosts folder (a host's key), "
          f"or beside the host as its --rig-key (the rig's key).")
    return 0
