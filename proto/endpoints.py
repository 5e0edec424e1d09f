"""Socket roles and default endpoints: the one place that says who binds, who connects, and where.

The rig (rt) binds a ROUTER; the host connects a DEALER. Data flows rt -> host and commands and
acknowledgements host -> rt over the same connection (DEALER/ROUTER: no message is dropped when the
receiver lags, unlike PUB/SUB; ZeroMQ queues up to the high-water mark and then pushes back).
"""

from __future__ import annotations

import zmq

DEFAULT_RIG_ENDPOINT = "tcp://127.0.0.1:5557"
"""Where `nvscope rig` binds and `nvscope host` connects by default."""
RIG_SOCKET = zmq.ROUTER
HOST_SOCKET = zmq.DEALER
HIGH_WATER_MARK = 10_000
"""Messages ZeroMQ queues per peer before it pushes back."""


def rig_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """The rig's bound ROUTER socket (unroutable sends raise instead of silently dropping)."""
    sock = ctx.socket(RIG_SOCKET)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    return sock


def host_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """The host's DEALER socket, connected to the rig."""
    sock = ctx.socket(HOST_SOCKET)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    return sock
