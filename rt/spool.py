"""Messages sent but not yet acknowledged, kept on disk (one file each) until the host acks them.

A rig that is killed and restarted finds its spool and replays it; the host drops duplicates.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import OrderedDict
from pathlib import Path

import msgpack

log = logging.getLogger(__name__)


class SpoolInUse(OSError):
    """Another rig process holds this spool (two rigs on one spool break each other's runs)."""


class Spool:
    """Ordered store of encoded messages keyed by (run_id, seq), bounded by `capacity` messages.

    One rig at a time: the spool holds an exclusive lock on `spool.lock` in its folder while it is
    open (released by `close()` or when the process ends, however it ends); a second rig on the same
    folder gets `SpoolInUse` naming the holder's pid."""

    def __init__(self, directory: str | Path, capacity: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / "spool.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "unknown"
            self._lock_file.close()
            raise SpoolInUse(f"{self.directory} is in use by another rig (pid {holder}); give each rig its own "
                             "link.spool_dir") from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], list[bytes]] = OrderedDict()
        self._load()

    def _path(self, run_id: str, seq: int) -> Path:
        return self.directory / f"{run_id}.{seq:012d}.msg"

    def _load(self) -> None:
        for path in sorted(self.directory.glob("*.msg"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
            run_id, _, seq = path.name[:-4].rpartition(".")
            try:
                frames = msgpack.unpackb(path.read_bytes())
                self._items[(run_id, int(seq))] = frames
            except (ValueError, msgpack.UnpackException, OSError) as exc:
                log.error("spool: unreadable %s (%s), kept aside as .bad", path, exc)
                path.rename(path.with_suffix(".bad"))
        if self._items:
            log.info("spool: %d unacknowledged messages from an earlier session in %s",
                     len(self._items), self.directory)

    def close(self) -> None:
        """Release the spool for another rig (what it holds stays on disk)."""
        self._lock_file.close()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """True when `capacity` messages wait for acknowledgement."""
        return len(self._items) >= self.capacity

    def put(self, run_id: str, seq: int, frames: list[bytes]) -> None:
        """Keep a message on disk until acknowledged (written atomically: tmp file + rename)."""
        if self.full:
            raise OverflowError(f"spool full: {len(self)} messages unacknowledged in {self.directory}")
        path = self._path(run_id, seq)
        tmp = path.with_suffix(".tmp")
        self.directory.mkdir(parents=True, exist_ok=True)  # someone may have removed it meanwhile
        tmp.write_bytes(msgpack.packb([bytes(f) for f in frames], use_bin_type=True))
        os.replace(tmp, path)
        self._items[(run_id, seq)] = frames

    def ack(self, run_id: str, seq: int) -> int:
        """Forget every message of `run_id` up to and including `seq`; returns how many."""
        done = [key for key in self._items if key[0] == run_id and key[1] <= seq]
        for key in done:
            del self._items[key]
            self._path(*key).unlink(missing_ok=True)
        return len(done)

    def pending(self) -> list[list[bytes]]:
        """Every unacknowledged message, oldest first."""
        return list(self._items.values())

    def last_seq(self, run_id: str) -> int:
        """Highest sequence number kept for `run_id` (-1: none)."""
        return max((s for r, s in self._items if r == run_id), default=-1)
