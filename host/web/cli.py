"""`nvscope web`: serve a live, read-only view of a rig and its run files (docs/web.md)."""

from __future__ import annotations

import argparse

from nvscope.proto.endpoints import DEFAULT_RIG_ENDPOINT


def add_web_parser(subparsers) -> argparse.ArgumentParser:
    """Add `web` to an argparse subparsers object."""
    w = subparsers.add_parser("web", help="a live web view of the rig and its run files",
                              description="Serve a page that shows, live, the runs stored under --data and "
                                          "the health of the rig at --connect.")
    w.add_argument("--connect", default=DEFAULT_RIG_ENDPOINT, help=f"rig endpoint (default {DEFAULT_RIG_ENDPOINT})")
    w.add_argument("--data", default="nvscope-data", help="the host's folder of run files (its --out)")
    w.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    return w


def web_command(args: argparse.Namespace) -> int:
    """Run the web view until interrupted."""
    raise NotImplementedError("nvscope web: being built (issue 15)")
