"""Socket roles with real sockets on 127.0.0.1: the loopback rule, CurveZMQ with a ZAP allow list,
the authenticated peer identity, and the authenticator's life tied to the rig socket's."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.auth

from nvscope.proto.endpoints import (HIGH_WATER_MARK, EndpointError, HostSecurity, RigSecurity, close_socket,
                                     host_socket, peer_identity, rig_socket)
from nvscope.proto.keys import KeyFileError, init_keys, load_public_keys

NOTHING_WITHIN_MS = 1000
"""How long a refused client is given to get anything through."""


@dataclass
class Keys:
    rig_public: Path
    rig_secret: Path
    allowed: Path  # folder of allowed host keys
    host_public: Path
    host_secret: Path
    stranger_public: Path
    stranger_secret: Path


@pytest.fixture
def keys(tmp_path) -> Keys:
    rig_public, rig_secret = init_keys(tmp_path / "rig", "rig")
    host_public, host_secret = init_keys(tmp_path / "host", "host")
    stranger_public, stranger_secret = init_keys(tmp_path / "stranger", "stranger")
    allowed = tmp_path / "allowed_hosts"
    allowed.mkdir()
    shutil.copy(host_public, allowed / host_public.name)
    return Keys(rig_public, rig_secret, allowed, host_public, host_secret, stranger_public, stranger_secret)


@pytest.fixture
def contexts():
    """A rig context and a host context (a keyed rig socket owns its context's ZAP handler)."""
    rig_ctx, host_ctx = zmq.Context(), zmq.Context()
    yield rig_ctx, host_ctx
    host_ctx.destroy(linger=0)
    rig_ctx.destroy(linger=0)


def _endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def _keyed_rig(ctx: zmq.Context, keys: Keys) -> zmq.Socket:
    return rig_socket(ctx, "tcp://127.0.0.1:*", RigSecurity(str(keys.rig_secret), str(keys.allowed)))


def _raw_dealer(ctx: zmq.Context, endpoint: str, secret_file: Path | None = None,
                server_public: Path | None = None) -> zmq.Socket:
    """A client built by hand, without host_socket's ZMQ_IMMEDIATE: it queues and keeps trying."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if secret_file is not None:
        public, secret = zmq.auth.load_certificate(secret_file)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = load_public_keys(server_public)[0]
    sock.connect(endpoint)
    sock.send_multipart([b"hello", b"from a client"])
    return sock


def _receives_nothing(rig: zmq.Socket, within_ms: int = NOTHING_WITHIN_MS) -> bool:
    return rig.poll(within_ms, zmq.POLLIN) == 0


def _round_trip(rig: zmq.Socket, host: zmq.Socket) -> tuple[str, list[bytes]]:
    """The host sends, the rig answers: returns the identity the rig saw and what it received."""
    host.send_multipart([b"hello", b"rig"])
    assert rig.poll(5000, zmq.POLLIN), "the rig received nothing from an allowed host"
    frames = rig.recv_multipart(copy=False)
    identity = peer_identity(frames[1], frames[0].bytes)
    rig.send_multipart([frames[0].bytes, b"welcome"])
    assert host.poll(5000, zmq.POLLIN), "the host received no answer"
    assert host.recv_multipart() == [b"welcome"]
    return identity, [f.bytes for f in frames[1:]]


# ---------------------------------------------------------------------------- the loopback rule
@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:5557", "tcp://192.168.1.5:5557"])
def test_beyond_loopback_without_keys_is_refused(endpoint):
    ctx = zmq.Context()
    try:
        with pytest.raises(EndpointError) as err:
            rig_socket(ctx, endpoint)
        message = str(err.value)
        assert endpoint in message and "CurveZMQ keys" in message and "key_file" in message
        assert "\n" not in message
        with pytest.raises(EndpointError, match="--rig-key"):
            host_socket(ctx, endpoint)
    finally:
        ctx.term()  # returns: no socket was left open by the refusals


def test_loopback_ipc_and_inproc_need_no_keys(tmp_path):
    ctx = zmq.Context()
    socks = [rig_socket(ctx, "tcp://localhost:*"), rig_socket(ctx, f"ipc://{tmp_path}/rig.sock"),
             rig_socket(ctx, "inproc://nvscope-test-rig"), host_socket(ctx, "tcp://localhost:5557"),
             host_socket(ctx, f"ipc://{tmp_path}/rig.sock"), host_socket(ctx, "inproc://nvscope-test-rig")]
    try:
        assert _endpoint(socks[0]).startswith("tcp://127.0.0.1:")
        assert all(getattr(s, "authenticator", None) is None for s in socks)
        host, rig = socks[-1], socks[2]
        assert _round_trip(rig, host)[1] == [b"hello", b"rig"]  # inproc, unkeyed: works as before
    finally:
        for s in socks:
            close_socket(s)
        ctx.term()


def test_ipv6_loopback(contexts):
    rig_ctx, host_ctx = contexts
    try:
        rig = rig_socket(rig_ctx, "tcp://[::1]:*")
    except zmq.ZMQError as exc:  # a machine without IPv6
        pytest.skip(f"no IPv6 loopback here: {exc}")
    host = host_socket(host_ctx, _endpoint(rig))
    assert _round_trip(rig, host)[1] == [b"hello", b"rig"]
    rig.close()


def test_socket_options_kept_and_host_does_not_queue_for_an_absent_rig(tmp_path):
    ctx = zmq.Context()
    rig = rig_socket(ctx, "tcp://127.0.0.1:*")
    assert (rig.getsockopt(zmq.LINGER), rig.getsockopt(zmq.SNDHWM)) == (0, HIGH_WATER_MARK)
    rig.close()
    host = host_socket(ctx, f"ipc://{tmp_path}/nobody-listens.sock")
    try:
        assert rig.closed
        assert (host.getsockopt(zmq.SNDHWM), host.getsockopt(zmq.RCVHWM)) == (HIGH_WATER_MARK, HIGH_WATER_MARK)
        assert host.getsockopt(zmq.LINGER) == 1000
        assert host.getsockopt(zmq.IMMEDIATE) == 1
        with pytest.raises(zmq.Again):  # ZMQ_IMMEDIATE: nothing queued for a rig that is not connected
            host.send(b"hello", flags=zmq.NOBLOCK)
    finally:
        host.close(0)
        ctx.term()


def test_unkeyed_peer_identity_is_the_routing_id(contexts):
    rig_ctx, host_ctx = contexts
    rig = rig_socket(rig_ctx, "tcp://127.0.0.1:*")
    host = host_ctx.socket(zmq.DEALER)
    host.setsockopt(zmq.ROUTING_ID, b"\x01\xab")
    host.connect(_endpoint(rig))
    identity, _ = _round_trip(rig, host)
    assert identity == "peer-01ab"
    assert peer_identity(b"not a frame", b"\x02") == "peer-02"  # a copied frame carries no metadata
    rig.close()


# ---------------------------------------------------------------------------- CurveZMQ and ZAP
def test_unkeyed_client_gets_nothing_through_a_keyed_rig(contexts, keys):
    rig_ctx, host_ctx = contexts
    open_rig = rig_socket(rig_ctx, "tcp://127.0.0.1:*")
    client = _raw_dealer(host_ctx, _endpoint(open_rig))  # the same client reaches an unkeyed rig
    assert open_rig.poll(5000, zmq.POLLIN) and open_rig.recv_multipart()[1:] == [b"hello", b"from a client"]
    rig = _keyed_rig(rig_ctx, keys)
    client = _raw_dealer(host_ctx, _endpoint(rig))  # NULL security against a CURVE server: handshake refused
    assert _receives_nothing(rig)
    assert not client.closed
    close_socket(rig)
    open_rig.close()


def test_allowed_host_gets_through_and_the_rig_sees_its_public_key(contexts, keys):
    rig_ctx, host_ctx = contexts
    rig = _keyed_rig(rig_ctx, keys)
    host = host_socket(host_ctx, _endpoint(rig), HostSecurity(str(keys.host_secret), str(keys.rig_public)))
    identity, body = _round_trip(rig, host)
    assert body == [b"hello", b"rig"]
    assert identity == load_public_keys(keys.host_public)[0].decode()  # the host's z85 public key
    assert rig.getsockopt(zmq.MECHANISM) == zmq.CURVE and host.getsockopt(zmq.MECHANISM) == zmq.CURVE
    # a second connection of the same host (new routing id) is the same peer
    host2 = host_socket(host_ctx, _endpoint(rig), HostSecurity(str(keys.host_secret), str(keys.rig_public)))
    assert _round_trip(rig, host2)[0] == identity
    close_socket(rig)


def test_keyed_host_not_listed_gets_nothing(contexts, keys, caplog):
    rig_ctx, host_ctx = contexts
    rig = _keyed_rig(rig_ctx, keys)
    with caplog.at_level("ERROR", logger="nvscope.proto.endpoints"):
        client = _raw_dealer(host_ctx, _endpoint(rig), keys.stranger_secret, keys.rig_public)
        assert _receives_nothing(rig)
        close_socket(rig)
    stranger = load_public_keys(keys.stranger_public)[0].decode()
    refusals = [r.getMessage() for r in caplog.records if "refused connections" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, refusals  # it retries every 0.1 s: counted, not one line each
    assert stranger in refusals[0] and "not in allowed_hosts" in refusals[0]


def test_host_talking_to_a_rig_with_another_key_gets_nothing(contexts, keys):
    rig_ctx, host_ctx = contexts
    rig = _keyed_rig(rig_ctx, keys)
    # the host holds an allowed key but expects another rig (its --rig-key is the stranger's)
    client = _raw_dealer(host_ctx, _endpoint(rig), keys.host_secret, keys.stranger_public)
    assert _receives_nothing(rig)
    close_socket(rig)


def test_allow_list_is_read_again_at_each_connection(contexts, keys):
    rig_ctx, host_ctx = contexts
    rig = _keyed_rig(rig_ctx, keys)
    endpoint = _endpoint(rig)
    shutil.copy(keys.stranger_public, keys.allowed / keys.stranger_public.name)  # added while the rig runs
    stranger = host_socket(host_ctx, endpoint, HostSecurity(str(keys.stranger_secret), str(keys.rig_public)))
    assert _round_trip(rig, stranger)[0] == load_public_keys(keys.stranger_public)[0].decode()
    allowed = _raw_dealer(host_ctx, endpoint, keys.host_secret, keys.rig_public)  # the hand-built client, allowed
    assert rig.poll(5000, zmq.POLLIN)
    assert rig.recv_multipart()[1:] == [b"hello", b"from a client"]
    (keys.allowed / keys.host_public.name).unlink()  # revoked: its next connection is refused
    client = _raw_dealer(host_ctx, endpoint, keys.host_secret, keys.rig_public)
    assert _receives_nothing(rig)
    close_socket(rig)


def test_no_authenticator_no_entry(contexts, keys):
    rig_ctx, host_ctx = contexts
    rig = _keyed_rig(rig_ctx, keys)
    rig.authenticator.stop()  # e.g. its thread died: CURVE alone would let any key in; ZAP domain enforced
    client = _raw_dealer(host_ctx, _endpoint(rig), keys.host_secret, keys.rig_public)
    assert _receives_nothing(rig)
    close_socket(rig)


def test_closing_the_rig_socket_stops_its_authenticator(contexts, keys):
    rig_ctx, _ = contexts
    rig = _keyed_rig(rig_ctx, keys)
    auth = rig.authenticator
    assert auth.is_alive()
    with pytest.raises(EndpointError, match="its own ZeroMQ context"):
        _keyed_rig(rig_ctx, keys)  # one ZAP handler per context
    assert auth.is_alive()  # the refused second socket did not stop the first one's
    close_socket(rig)
    assert not auth.is_alive() and rig.closed
    rig = _keyed_rig(rig_ctx, keys)  # the context's ZAP endpoint was released
    auth = rig.authenticator
    rig.close()  # a plain close() does the same
    assert not auth.is_alive()
    close_socket(rig)  # closing twice is harmless
    t0 = time.monotonic()
    rig_ctx.term()
    assert time.monotonic() - t0 < 2.0  # nothing left open in the context


def test_bad_key_files_are_refused_before_any_socket(contexts, keys, tmp_path):
    rig_ctx, _ = contexts
    keys.rig_secret.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        _keyed_rig(rig_ctx, keys)
    keys.rig_secret.chmod(0o600)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match="holds no .key public key files"):
        rig_socket(rig_ctx, "tcp://127.0.0.1:*", RigSecurity(str(keys.rig_secret), str(tmp_path / "empty")))
    (tmp_path / "two").mkdir()
    shutil.copy(keys.rig_public, tmp_path / "two" / "a.key")
    shutil.copy(keys.host_public, tmp_path / "two" / "b.key")
    with pytest.raises(KeyFileError, match="holds 2 public keys"):
        host_socket(rig_ctx, "tcp://127.0.0.1:5557", HostSecurity(str(keys.host_secret), str(tmp_path / "two")))
    rig = _keyed_rig(rig_ctx, keys)  # none of the refusals left a socket or a ZAP handler behind
    close_socket(rig)


def test_keyed_rig_may_bind_beyond_loopback(contexts, keys):
    rig_ctx, host_ctx = contexts
    rig = rig_socket(rig_ctx, "tcp://0.0.0.0:*", RigSecurity(str(keys.rig_secret), str(keys.allowed)))
    port = _endpoint(rig).rsplit(":", 1)[1]
    host = host_socket(host_ctx, f"tcp://127.0.0.1:{port}",
                       HostSecurity(str(keys.host_secret), str(keys.rig_public)))
    assert _round_trip(rig, host)[1] == [b"hello", b"rig"]
    close_socket(rig)
