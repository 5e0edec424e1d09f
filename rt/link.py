"""The rt side of the rt <-> host connection: send, keep until acknowledged, replay, push back."""

from __future__ import annotations

import logging
import time

import zmq

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.messages import Ack, Heartbeat, Hello, Message

from .config import LinkConfig
from .spool import Spool

log = logging.getLogger(__name__)


class RtLink:
    """Sends data messages to the host that said hello, keeps them in the spool until acknowledged,
    replays them on hello or when no ack came for `resend_after_s`, and blocks (back-pressure)
    while `window` messages are unacknowledged."""

    def __init__(self, sock: zmq.Socket, spool: Spool, cfg: LinkConfig):
        self.sock = sock
        self.spool = spool
        self.cfg = cfg
        self.peer: bytes | None = None
        self.malformed = 0
        self.sent: dict[str, int] = {}  # highest sequence number sent, per run
        self._last_progress = time.monotonic()
        self._last_heartbeat = 0.0
        self._waiting_logged = False

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message, serve) -> None:
        """Send a durable message; while the window is full, wait serving commands with `serve`."""
        while self.spool.full:
            if not self._waiting_logged:
                log.warning("host is not acknowledging: %d messages wait in %s; acquisition paused",
                            len(self.spool), self.spool.directory)
                self._waiting_logged = True
            serve(self.poll(200))
        self._waiting_logged = False
        frames = encode(msg)
        self.spool.put(msg.run_id, msg.seq, frames)
        self.sent[msg.run_id] = max(self.sent.get(msg.run_id, -1), msg.seq)
        self._transmit(frames)

    def send_now(self, msg: Message) -> bool:
        """Send a message that is not kept (not spooled, not acknowledged, never replayed); returns
        False when no host took it (none connected, or its queue is full)."""
        if msg.durable:
            raise ValueError(f"{msg.kind} is durable: send it with send(), which keeps it until acknowledged")
        return self._transmit(encode(msg))

    def _transmit(self, frames: list) -> bool:
        if self.peer is None:
            return False
        try:
            self.sock.send_multipart([self.peer, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # the host's queue is full: the spool keeps it, the resend timer retries
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            log.warning("host disconnected; keeping %d unacknowledged messages until it is back",
                        len(self.spool))
            self.peer = None  # until the next hello
            return False

    def replay(self) -> None:
        """Resend every unacknowledged message, oldest first."""
        for frames in self.spool.pending():
            if not self._transmit(frames):
                break
        self._last_progress = time.monotonic()

    def heartbeat(self, run_id: str, state: str) -> None:
        """Send a heartbeat if one is due (not stored, not acknowledged)."""
        now = time.monotonic()
        if now - self._last_heartbeat >= self.cfg.heartbeat_s:
            self._last_heartbeat = now
            self._transmit(encode(Heartbeat(run_id=run_id, seq=self.spool.last_seq(run_id),
                                            state=state, unacked=len(self.spool))))

    # ------------------------------------------------------------------ receiving
    def poll(self, timeout_ms: int) -> list[Message]:
        """Receive what the host sent within `timeout_ms`: acks and hellos are handled here, the
        other commands are returned; malformed frames are logged, counted and dropped."""
        commands: list[Message] = []
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                peer, body = frames[0].bytes, frames[1:]
                try:
                    msg = decode(body)
                except ProtocolError as exc:
                    self.malformed += 1
                    log.error("dropped a malformed message from the host: %s", exc)
                    continue
                if isinstance(msg, Ack):
                    sent = max(self.sent.get(msg.run_id, -1), self.spool.last_seq(msg.run_id))
                    if msg.seq > sent >= 0:  # acknowledges what was never sent: forged or foreign
                        self.malformed += 1
                        log.error("refused an ack of run %s up to seq %d: only up to %d was sent (nothing "
                                  "deleted from the spool)", msg.run_id, msg.seq, sent)
                        continue
                    if self.spool.ack(msg.run_id, msg.seq):
                        self._last_progress = time.monotonic()
                elif isinstance(msg, Hello):
                    log.info("host connected (%s); replaying %d unacknowledged messages",
                             msg.version, len(self.spool))
                    self.peer = peer
                    self.replay()
                else:
                    self.peer = peer
                    commands.append(msg)
        if len(self.spool) and time.monotonic() - self._last_progress > self.cfg.resend_after_s:
            self.replay()
        return commands
