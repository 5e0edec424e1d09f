"""The rt side of the rt <-> host connection: one controlling host, send, keep until acknowledged,
replay once per reconnection, push back, heartbeat both ways (docs/architecture.md section 6).

Who may do what:
- The host that controls the rig (its *owner*) is the first one to say hello; another host takes
  over only by saying hello once the owner has been silent for `link.peer_timeout_s`. With CurveZMQ
  keys a host is its public key (a restarted host with the same key is the same owner); without,
  it is its connection. Commands, acknowledgements and partial answers from anyone else are refused
  with a `refused` message saying why, and applied to nothing.
- Any peer that can connect (with keys: any allowed key) may ask `status_request`.
- An ack beyond what was sent is a protocol error (counted, refused), never a licence to delete.
Replays: everything unacknowledged is sent again when the owner says hello on a new connection (a
burst of queued hellos replays once), and when the owner is heard but acknowledges nothing for
`resend_after_s` (backing off to 30 s); a silent host gets no replays, so a stopped host does not
come back to a storm of duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.endpoints import peer_identity
from nvscope.proto.logs import RateLimitedLog
from nvscope.proto.messages import Ack, Heartbeat, Hello, Message, Refused, Status, StatusRequest

from .config import LinkConfig
from .spool import Spool

log = logging.getLogger(__name__)

MAX_RESEND_S = 30.0
"""The longest wait between two replays to a host that is heard but acknowledges nothing."""


class RtLink:
    """Sends data messages to the controlling host, keeps them in the journal (`spool`) until
    acknowledged, replays them as the module says, and blocks (back-pressure) while `window` messages
    are unacknowledged. `describe()` gives the rig's part of a `status` answer."""

    def __init__(self, sock: zmq.Socket, spool: Spool, cfg: LinkConfig, clock: Callable[[], float] = time.monotonic):
        self.sock = sock
        self.spool = spool
        self.cfg = cfg
        self.clock = clock
        self.owner: str | None = None
        """Identity of the host that controls the rig (`proto.endpoints.peer_identity`)."""
        self.peer: bytes | None = None
        """Routing id of the owner's connection (None: no host to send to)."""
        self.heard = clock()
        """When the owner was last heard (monotonic s)."""
        self.host_info: dict = {}
        """What the owner last reported of itself in its heartbeat."""
        self.silent = False
        """The owner has been silent for longer than `peer_timeout_s` (reported once, and when back)."""
        self.describe: Callable[[], dict] = dict
        """The rig's state for a `status` answer (set by the rig)."""
        self.run_start: Message | None = None
        """The run in progress's run_start, sent first in every replay: a host that takes over a run
        whose run_start the previous host acknowledged can still open its file."""
        self.sent: dict[str, int] = {}  # highest sequence number sent, per run
        self.last_ack: tuple[str, int, float] | None = None  # (run, seq, monotonic s)
        self.malformed = RateLimitedLog(log, "malformed frames")
        self.refusals = RateLimitedLog(log, "refused messages")
        self.hellos_ignored = 0
        self.replays = 0
        self._last_progress = clock()
        self._last_replay = -1e9
        self._resend_s = cfg.resend_after_s
        self._last_heartbeat = -1e9
        self._waiting_since: float | None = None

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message, serve) -> None:
        """Send a durable message; while the window is full, wait serving commands with `serve`."""
        while self.spool.full:
            if self._waiting_since is None:
                self._waiting_since = self.clock()
                self.spool.sync()
                log.warning("host is not acknowledging: %d messages wait in %s; acquisition paused",
                            len(self.spool), self.spool.directory)
            serve(self.poll(200))
        if self._waiting_since is not None:
            log.info("host acknowledging again: acquisition resumed after %.1f s paused",
                     self.clock() - self._waiting_since)
            self._waiting_since = None
        frames = encode(msg)
        self.spool.put(msg.run_id, msg.seq, frames)
        self.sent[msg.run_id] = max(self.sent.get(msg.run_id, -1), msg.seq)
        self._transmit(frames)

    def send_now(self, msg: Message) -> bool:
        """Send a message that is not kept (not journaled, not acknowledged, never replayed); returns
        False when no host took it (none connected, or its queue is full)."""
        if msg.durable:
            raise ValueError(f"{msg.kind} is durable: send it with send(), which keeps it until acknowledged")
        return self._transmit(encode(msg))

    def _transmit(self, frames: list, to: bytes | None = None) -> bool:
        to = self.peer if to is None else to
        if to is None:
            return False
        try:
            self.sock.send_multipart([to, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # the host's queue is full: the journal keeps it, a replay resends it
            return False
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            if to == self.peer:
                log.warning("host disconnected; keeping %d unacknowledged messages until it is back",
                            len(self.spool))
                self.peer = None  # until the next hello
            return False

    def replay(self) -> None:
        """Resend every unacknowledged message, oldest first."""
        self.spool.sync()
        self.replays += 1
        if self.run_start is not None:
            self._transmit(encode(self.run_start))
        for frames in self.spool.pending():
            if not self._transmit(frames):
                break
        self._last_progress = self._last_replay = self.clock()

    def refuse(self, cmd: Message, reason: str, busy_run: str = "", busy_kind: str = "", to: bytes | None = None,
               later: bool = False, peer: str | None = None) -> None:
        """Answer a command of `peer` (default: the host in control; `to`: its connection) that is not
        applied with its reason (logged at most once per interval); `later`: it may be accepted later
        (busy, or another host in control for now)."""
        self.refusals.event(peer or self.owner or "?", f"{cmd.kind} of run {cmd.run_id or '-'}: {reason}")
        self._transmit(encode(Refused(run_id=cmd.run_id, seq=cmd.seq, command=cmd.kind, reason=reason[:500],
                                      busy_run=busy_run, busy_kind=busy_kind, later=later or bool(busy_run))), to)

    def heartbeat(self, run_id: str, state: str, run_kind: str = "", done: int = 0, planned: int = 0) -> None:
        """Send a heartbeat if one is due (not stored, not acknowledged); fsync the journal's tail;
        report a host silent for longer than `peer_timeout_s`."""
        now = self.clock()
        if now - self._last_heartbeat < self.cfg.heartbeat_s:
            return
        self._last_heartbeat = now
        self.spool.sync()
        self._transmit(encode(Heartbeat(run_id=run_id, seq=self.sent.get(run_id, -1), state=state,
                                        unacked=len(self.spool), run_kind=run_kind, done=done, planned=planned)))
        if self.owner is not None and not self.silent and now - self.heard > self.cfg.peer_timeout_s:
            self.silent = True
            log.warning("host %s silent for %.1f s: %s", self.owner, now - self.heard,
                        f"run {run_id} waits for it ({len(self.spool)} messages unacknowledged; acquisition goes on "
                        f"until {self.spool.capacity} are)" if run_id else "no run in progress")

    # ------------------------------------------------------------------ receiving
    def poll(self, timeout_ms: int) -> list[Message]:
        """Receive what arrived within `timeout_ms`: hellos, acks, heartbeats and status requests are
        handled here, the owner's other commands returned; malformed frames are counted and dropped,
        anyone else's commands refused."""
        commands: list[Message] = []
        if timeout_ms > 0:
            self.spool.sync()  # before waiting: what is journaled reaches the disk (nothing to do if it has)
        if self.sock.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                routing_id, body = frames[0].bytes, frames[1:]
                who = peer_identity(body[0] if body else frames[0], routing_id)
                try:
                    msg = decode(body)
                except ProtocolError as exc:
                    self.malformed.event(who, str(exc))
                    continue
                cmd = self._take(msg, who, routing_id)
                if cmd is not None:
                    commands.append(cmd)
        self.malformed.tick()
        self.refusals.tick()
        now = self.clock()
        if (len(self.spool) and self.peer is not None and self.heard > self._last_replay
                and now - max(self._last_progress, self._last_replay) > self._resend_s):
            self.replay()
            self._resend_s = min(2 * self._resend_s, MAX_RESEND_S)
        return commands

    def _take(self, msg: Message, who: str, routing_id: bytes) -> Message | None:
        """Handle one decoded message from peer `who`; returns a command for the rig to apply."""
        if isinstance(msg, StatusRequest):
            self._transmit(encode(Status(run_id=msg.run_id, seq=msg.seq, info=self.status())), routing_id)
            return None
        if isinstance(msg, Hello):
            return self._hello(msg, who, routing_id)
        if who != self.owner:
            if not isinstance(msg, Heartbeat):  # a waiting host's heartbeats need no answer
                self.refuse(msg, f"{who} does not control this rig ({self.owner or 'no host'} does; say hello first)",
                            to=routing_id, later=True, peer=who)
            return None
        self._heard_from_owner(routing_id)
        if isinstance(msg, Heartbeat):
            self.host_info = dict(msg.info)
        elif isinstance(msg, Ack):
            self._ack(msg)
        else:
            return msg
        return None

    def _hello(self, msg: Hello, who: str, routing_id: bytes) -> None:
        """A host says hello: the owner (or a host taking over from a silent owner) gets the replay,
        once per connection; anyone else is refused."""
        now = self.clock()
        if self.owner is not None and who != self.owner and now - self.heard <= self.cfg.peer_timeout_s:
            self.refuse(msg, f"another host ({self.owner}) controls this rig, heard {now - self.heard:.1f} s ago; "
                             f"a host takes over once it has been silent for {self.cfg.peer_timeout_s:g} s",
                        to=routing_id, later=True, peer=who)
            return None
        if who != self.owner:
            log.info("host %s (%s) now controls the rig%s", who, msg.version,
                     f" (taking over from {self.owner}, silent for {now - self.heard:.1f} s)" if self.owner else "")
            self.owner, self.peer = who, None
        new_connection = routing_id != self.peer
        self._heard_from_owner(routing_id)
        if new_connection or now - self._last_replay > self.cfg.resend_after_s:
            log.info("host %s said hello: replaying %d unacknowledged messages", who, len(self.spool))
            self.replay()
        else:
            self.hellos_ignored += 1  # queued hellos of one reconnection: replayed once
        return None

    def _heard_from_owner(self, routing_id: bytes) -> None:
        now = self.clock()
        if self.silent:
            log.info("host %s back after %.1f s of silence", self.owner, now - self.heard)
            self.silent = False
        self.heard, self.peer = now, routing_id

    def _ack(self, msg: Ack) -> None:
        """Forget what the owner has stored; an ack of what was never sent is refused and deletes nothing."""
        sent = max(self.sent.get(msg.run_id, -1), self.spool.last_seq(msg.run_id))
        if msg.seq > sent:
            self.refuse(msg, f"acknowledges seq {msg.seq} of run {msg.run_id}, but only up to {sent} was sent "
                             "(nothing deleted from the journal)")
            return
        if self.spool.ack(msg.run_id, msg.seq):
            self._last_progress = self.clock()
            self._resend_s = self.cfg.resend_after_s
        self.last_ack = (msg.run_id, msg.seq, self.clock())

    def close(self) -> None:
        """Write the pending summaries of the rate-limited logs and release the journal (what it holds
        stays on disk for the next rig)."""
        self.malformed.flush()
        self.refusals.flush()
        self.spool.close()

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """The rig's `status` answer: its own state (`describe`) and the link's."""
        now = self.clock()
        ack = None if self.last_ack is None else {"run_id": self.last_ack[0], "seq": self.last_ack[1],
                                                    "age_s": round(now - self.last_ack[2], 3)}
        return {**self.describe(),
                "journal": {"directory": str(self.spool.directory), "unacked": len(self.spool),
                            "capacity": self.spool.capacity},
                "last_ack": ack,
                "host": {"id": self.owner, "connected": self.peer is not None,
                         "heard_s_ago": round(now - self.heard, 3) if self.owner else None,
                         "silent": self.silent, "reported": self.host_info},
                "malformed": self.malformed.count, "refused": self.refusals.count, "replays": self.replays,
                "hellos_ignored": self.hellos_ignored}
