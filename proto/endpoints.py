"""Socket roles and default endpoints: the one place that says who binds, who connects, where, and with what keys.

The rig (rt) binds a ROUTER; the host connects a DEALER. Data flows rt -> host and commands and
acknowledgements host -> rt over the same connection (DEALER/ROUTER: no message is dropped when the
receiver lags, unlike PUB/SUB; ZeroMQ queues up to the high-water mark and then pushes back).

Security (docs/architecture.md): without keys both sockets stay on this machine (loopback tcp, ipc,
inproc); any other endpoint is refused with `EndpointError`. With keys (`nvscope keys init`), the
rig's socket is a CurveZMQ server: traffic is encrypted, and a ZAP authenticator running in a thread
of the rig's context lets in only hosts whose public key is in `allowed_hosts` (a `.key` file or a
folder of them). That list is read when the socket is made (a bad one is refused at start) and read
again at every new connection, so adding or deleting a host's `.key` takes effect at its next
connection without restarting the rig; connections already made are not cut, and a list that cannot
be read then lets nobody in. Close a rig socket with `close_socket` (or its own `close()`), which
also stops its authenticator. One keyed rig socket per ZeroMQ context (ZAP has one handler per context).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

from .keys import KeyFileError, is_loopback, load_keypair, load_public_keys
from .logs import RateLimitedLog

DEFAULT_RIG_ENDPOINT = "tcp://127.0.0.1:5557"
"""Where `nvscope rig` binds and `nvscope host` connects by default."""
RIG_SOCKET = zmq.ROUTER
HOST_SOCKET = zmq.DEALER
PEER_TIMEOUT_S = 5.0
"""A peer silent this long is reported (both daemons heartbeat every second); a host may then take over
the rig from a silent one (the rig's [link] peer_timeout_s, the host's --peer-timeout)."""
HIGH_WATER_MARK = 10_000
"""Messages ZeroMQ queues per peer before it pushes back."""
ZAP_DOMAIN = b"nvscope"
"""The ZAP domain of the rig's keyed socket (with ZAP_ENFORCE_DOMAIN: no authenticator, no entry)."""

ZAP_RELEASE_WAIT_S = 1.0
"""How long a new keyed rig socket waits for the ZAP endpoint of one just closed in its context (s)."""

log = logging.getLogger(__name__)


class EndpointError(ValueError):
    """An endpoint that may not be used as configured (one line naming it and what to do)."""


@dataclass(frozen=True)
class RigSecurity:
    """The rig's CurveZMQ setup: its own pair and the public keys of the hosts allowed in."""

    secret_key_file: str
    """The rig's `NAME.key_secret` (mode 0600)."""
    allowed_hosts: str
    """A host's `.key` file, or a folder of them: only these hosts connect."""


@dataclass(frozen=True)
class HostSecurity:
    """The host's CurveZMQ setup: its own pair and the rig's public key."""

    secret_key_file: str
    """The host's `NAME.key_secret` (mode 0600)."""
    rig_public_key: str
    """The rig's `NAME.key` (public): the host talks only to the rig holding its secret."""


class RigSocket(zmq.Socket):
    """The rig's ROUTER socket; when keyed, it holds its ZAP authenticator and stops it on close."""

    authenticator: ThreadAuthenticator | None = None

    def close(self, linger: int | None = None) -> None:
        """Close the socket, then stop its authenticator (if any)."""
        super().close(linger)
        auth, self.authenticator = self.authenticator, None
        if auth is not None:
            auth.stop()


class _AllowedHosts:
    """The ZAP callback: a client key is let in if it is in `allowed_hosts` as read now."""

    def __init__(self, allowed_hosts: str):
        self.allowed_hosts = allowed_hosts
        self.refused = RateLimitedLog(log, "refused connections", interval_s=10.0)

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether the z85 client `key` may connect (called by the authenticator's thread)."""
        try:
            allowed = key in load_public_keys(self.allowed_hosts)
        except KeyFileError as exc:
            self.refused.event(key.decode("ascii", "replace"), f"allowed_hosts unreadable, nobody let in: {exc}")
            return False
        if not allowed:
            self.refused.event(key.decode("ascii", "replace"),
                               f"public key not in allowed_hosts ({self.allowed_hosts})")
        return allowed


def _refuse_beyond_loopback(endpoint: str, action: str, keys_hint: str) -> None:
    if not is_loopback(endpoint):
        raise EndpointError(f"{endpoint} refused: {action} {endpoint} beyond this machine needs CurveZMQ keys "
                            f"({keys_hint}; see nvscope keys init)")


def rig_socket(ctx: zmq.Context, endpoint: str, security: RigSecurity | None = None) -> zmq.Socket:
    """The rig's bound ROUTER socket (unroutable sends raise instead of silently dropping). Without
    `security` only a loopback endpoint is allowed; with it, a CurveZMQ server letting in only the
    allowed hosts. Close it with `close_socket` (or its `close()`): that also stops the authenticator."""
    if security is None:
        _refuse_beyond_loopback(endpoint, "binding", "[link] key_file and allowed_hosts")
    else:  # read and checked before anything starts: a bad key file is one line at start
        public, secret = load_keypair(security.secret_key_file)
        load_public_keys(security.allowed_hosts)
    sock = ctx.socket(RIG_SOCKET, socket_class=RigSocket)
    try:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, int("[" in endpoint))  # tcp://[::1]:port needs it
        if security is not None:
            sock.authenticator = _start_authenticator(ctx, security.allowed_hosts)
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.zap_domain = ZAP_DOMAIN
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no authenticator answering: nobody in
        sock.bind(endpoint)
    except BaseException:
        sock.close()
        raise
    return sock


def _start_authenticator(ctx: zmq.Context, allowed_hosts: str) -> ThreadAuthenticator:
    deadline = time.monotonic() + ZAP_RELEASE_WAIT_S
    while True:
        auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
        try:
            auth.start()
            break
        except zmq.ZMQError as exc:
            auth.stop()
            if exc.errno != zmq.EADDRINUSE:
                raise
            if time.monotonic() > deadline:  # not one just closed (ZeroMQ unbinds it a moment later)
                raise EndpointError("a keyed rig socket needs its own ZeroMQ context: this one already has a "
                                    "ZAP authenticator") from None
            time.sleep(0.01)
    auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=_AllowedHosts(allowed_hosts))
    return auth


def close_socket(sock: zmq.Socket, linger: int | None = None) -> None:
    """Close a socket made here; a keyed rig socket's authenticator thread is stopped with it."""
    sock.close(linger)


def host_socket(ctx: zmq.Context, endpoint: str, security: HostSecurity | None = None) -> zmq.Socket:
    """The host's DEALER socket, connected to the rig. Without `security` only a loopback endpoint is
    allowed; with it, a CurveZMQ client that talks only to the rig holding `rig_public_key`'s secret.
    Messages are queued only for a connected rig (ZMQ_IMMEDIATE): a send with no rig there blocks or,
    with NOBLOCK, raises zmq.Again."""
    if security is None:
        _refuse_beyond_loopback(endpoint, "connecting to", "--key and --rig-key")
    else:
        public, secret = load_keypair(security.secret_key_file)
        rig_keys = load_public_keys(security.rig_public_key)
        if len(rig_keys) != 1:
            raise KeyFileError(f"{security.rig_public_key}: holds {len(rig_keys)} public keys; the rig's key is one "
                               f".key file")
    sock = ctx.socket(HOST_SOCKET)
    try:
        sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.IPV6, int("[" in endpoint))
        if security is not None:
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = rig_keys[0]
        sock.connect(endpoint)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_identity(frame: zmq.Frame, routing_id: bytes) -> str:
    """Who sent a message received on the rig socket (`frame`: any of its frames, received with
    copy=False): the host's z85 public key when CurveZMQ authenticated it, else 'peer-' + routing id hex."""
    try:
        user_id = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError, TypeError):  # no ZAP on this connection; or not a zmq.Frame
        user_id = ""
    if user_id and user_id != "anonymous":
        return user_id
    return "peer-" + routing_id.hex()
