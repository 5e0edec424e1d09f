"""The rig's journal: messages sent and not yet acknowledged by the host, and the run in progress.

One append-only file, `journal.bin`, in the spool folder. Every change is one record appended to it:
  put    (run_id, seq, frames)  a data message, kept until the host acknowledges it
  ack    (run_id, seq)          the host stored everything of run_id up to seq: forget it
  begin  (run_id, next_seq)     a run started (a restarted rig ends it as failed unless it ended)
  end    (run_id)               that run ended
A record is `u32 length | u32 crc32 | payload` (little-endian), the payload one kind byte and a msgpack
body, the CRC (zlib.crc32) over the payload; the file starts with the 8 bytes MAGIC. The index of what
is pending lives in memory, so put, ack, pending and last_seq never read the file again.

Durability, said plainly:
- A killed process (kill -9, a crash, out of memory) loses nothing: put(), ack(), begin_run() and
  end_run() have written their record to the file (the kernel's page cache) when they return.
- A power cut (or a kernel crash) loses at most what came after the last fsync. The journal is
  fsynced once `sync_every_n` records (default 64) wait, at the first record written when the oldest
  waiting one is `sync_every_s` old (default 0.05 s), and on sync() and close(); the link calls
  sync() before it waits for the host, so a rig that is not streaming holds nothing unsynced. What
  survives is always a prefix of the history: a lost ack means the host receives those messages
  again (it drops duplicates); a lost put that the host had not stored yet is a gap the host
  records in the run's file.
- A torn or corrupt tail (a power cut in the middle of a write, a bad sector): on load the records
  are read up to the first one whose length or CRC does not check; the rest is cut (its bytes are
  appended to `journal.cut` first) with one log line, and everything before it is loaded.
- A write that fails (disk full) is undone (the file is cut back to its last whole record) and
  raises OSError; nothing already in the journal is touched.
- Compaction: when the file is over `compact_bytes` (4 MB) and less than `compact_live` (25 %) of it
  is live, the live records are written to `journal.tmp`, fsynced, renamed over `journal.bin` and the
  folder fsynced; a crash at any point leaves one whole journal, the old or the new.
- The spool of earlier versions (one `*.msg` file per message, and `run_in_progress.json` when the
  journal is new) is imported once on load, fsynced, then deleted.
One rig at a time: the spool holds an exclusive flock on `spool.lock` while it is open.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import msgpack

log = logging.getLogger(__name__)

MAGIC = b"NVJRNL\x01\n"
"""The first bytes of a journal of this format (version 1)."""
HEAD = struct.Struct("<II")  # payload length, crc32 of the payload
PUT, ACK, BEGIN, END = 1, 2, 3, 4
JOURNAL = "journal.bin"
_fdatasync = getattr(os, "fdatasync", os.fsync)


class SpoolInUse(OSError):
    """Another rig process holds this spool (two rigs on one spool break each other's runs)."""


class SpoolError(OSError):
    """The journal file is not one this version can read (one line naming the file)."""


def _record(kind: int, body: object) -> bytes:
    payload = bytes((kind,)) + msgpack.packb(body, use_bin_type=True)
    return HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Index:
    """What the journal's records add up to: the pending messages in put order, per-run heaps of
    their sequence numbers (acks pop from the bottom), and the runs begun and not ended."""

    def __init__(self):
        self.items: dict[tuple[str, int], tuple[list[bytes], int]] = {}  # (run, seq) -> (frames, record size)
        self.heaps: dict[str, list[int]] = {}  # pending seqs per run
        self.top: dict[str, int] = {}  # highest pending seq per run
        self.high: dict[str, int] = {}  # highest seq ever put per run (until its end)
        self.open: dict[str, int] = {}  # runs begun and not ended -> next_seq recorded at begin
        self.live_bytes = 0

    def put(self, run_id: str, seq: int, frames: list[bytes], size: int) -> None:
        key = (run_id, seq)
        old = self.items.get(key)
        if old is None:
            heapq.heappush(self.heaps.setdefault(run_id, []), seq)
            self.top[run_id] = max(self.top.get(run_id, -1), seq)
        else:
            self.live_bytes -= old[1]
        self.items[key] = (frames, size)
        self.live_bytes += size
        self.high[run_id] = max(self.high.get(run_id, -1), seq)

    def ack(self, run_id: str, seq: int) -> int:
        heap = self.heaps.get(run_id)
        n = 0
        while heap and heap[0] <= seq:
            self.live_bytes -= self.items.pop((run_id, heapq.heappop(heap)))[1]
            n += 1
        if heap is not None and not heap:  # acks go from the bottom: an empty heap means the top went too
            del self.heaps[run_id], self.top[run_id]
        return n

    def begin(self, run_id: str, next_seq: int) -> None:
        self.open[run_id] = max(self.open.get(run_id, 0), next_seq)

    def end(self, run_id: str) -> None:
        self.open.pop(run_id, None)
        self.high.pop(run_id, None)

    def next_seq(self, run_id: str) -> int:
        """One past the highest seq put for an open run (acked or not), or its begin's next_seq."""
        return max(self.open.get(run_id, 0), self.high.get(run_id, -1) + 1)

    def apply(self, kind: int, body: object, size: int) -> None:
        """Replay one decoded record; ValueError/TypeError (nothing changed) when it is malformed."""
        if kind == PUT:
            run_id, seq, frames = body
            if not (isinstance(run_id, str) and type(seq) is int and isinstance(frames, list)
                    and all(isinstance(f, bytes) for f in frames)):
                raise ValueError("malformed put")
            self.put(run_id, seq, frames, size)
        elif kind in (ACK, BEGIN):
            run_id, seq = body
            if not (isinstance(run_id, str) and type(seq) is int):
                raise ValueError("malformed ack/begin")
            self.ack(run_id, seq) if kind == ACK else self.begin(run_id, seq)
        elif kind == END:
            (run_id,) = body
            if not isinstance(run_id, str):
                raise ValueError("malformed end")
            self.end(run_id)
        else:
            raise ValueError(f"unknown record kind {kind}")


def _replay(data: bytes, index: _Index) -> int:
    """Apply the whole records of a journal's bytes (after MAGIC) to `index`; returns where they end."""
    view = memoryview(data)
    pos = len(MAGIC)
    while pos + HEAD.size <= len(data):
        length, crc = HEAD.unpack_from(data, pos)
        end = pos + HEAD.size + length
        if length == 0 or end > len(data):
            break
        payload = view[pos + HEAD.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            index.apply(payload[0], msgpack.unpackb(payload[1:], raw=False), end - pos)
        except (ValueError, TypeError, msgpack.UnpackException):
            break
        pos = end
    return pos


def journal_pending(directory: str | Path) -> list[tuple[str, int]]:
    """The (run_id, seq) of every message pending in a spool folder, oldest first, read without the
    lock and without changing anything (for tests and status)."""
    path = Path(directory) / JOURNAL
    data = path.read_bytes() if path.exists() else b""
    index = _Index()
    if data.startswith(MAGIC):
        _replay(data, index)
    return list(index.items)


class Spool:
    """Ordered store of encoded messages keyed by (run_id, seq), bounded by `capacity` messages, kept
    in the folder's journal (see the module docstring for what survives what).

    One rig at a time: the spool holds an exclusive lock on `spool.lock` in its folder while it is
    open (released by `close()` or when the process ends, however it ends); a second rig on the same
    folder gets `SpoolInUse` naming the holder's pid."""

    def __init__(self, directory: str | Path, capacity: int, sync_every_s: float = 0.05, sync_every_n: int = 64,
                 compact_bytes: int = 4 << 20, compact_live: float = 0.25):
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
        self.sync_every_s = sync_every_s
        self.sync_every_n = sync_every_n
        self.compact_bytes = compact_bytes
        self.compact_live = compact_live
        self.path = self.directory / JOURNAL
        self.synced_bytes = 0
        """Length of the journal as of the last fsync: what a power cut now would leave."""
        self._index = _Index()
        self._unsynced = 0
        self._oldest_unsynced = 0.0
        self._size = 0
        self._fd = -1
        try:
            fresh = not self.path.exists()
            self._load()
            self._import_old(fresh)
        except BaseException:
            self.close()
            raise
        self._earlier = set(self._index.open)  # runs begun in an earlier process and not ended
        if self._index.items:
            log.info("spool: %d unacknowledged messages from an earlier session in %s",
                     len(self._index.items), self.directory)

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        with open(self.path, "rb") as f:
            data = f.read()
        if len(data) < len(MAGIC) and MAGIC.startswith(data):  # new, or torn while it was being created
            os.ftruncate(self._fd, 0)
            self._write(MAGIC)
            _fdatasync(self._fd)
            _fsync_dir(self.directory)
            data = MAGIC
        if not data.startswith(MAGIC):
            raise SpoolError(f"{self.path} is not an nvscope journal (it starts with {data[:8]!r}); move it "
                             "away to start an empty spool")
        end = _replay(data, self._index)
        if end < len(data):
            cut = self.directory / "journal.cut"
            with open(cut, "ab") as f:
                f.write(data[end:])
                f.flush()
                os.fsync(f.fileno())
            os.ftruncate(self._fd, end)
            _fdatasync(self._fd)
            log.error("spool: %s had a torn or corrupt tail (a power cut or crash during a write): cut %d bytes "
                      "at byte %d (appended to %s); the %d pending messages before it are loaded",
                      self.path, len(data) - end, end, cut, len(self._index.items))
        self._size = self.synced_bytes = end

    def _import_old(self, fresh: bool) -> None:
        """Import the one-file-per-message spool of earlier versions (and their run marker, into a new journal)."""
        olds = sorted(self.directory.glob("*.msg"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        marker = self.directory / "run_in_progress.json"
        marker_too = fresh and marker.exists()
        if not olds and not marker_too:
            return
        done = []
        for path in olds:
            run_id, _, seq = path.name[:-4].rpartition(".")
            try:
                frames = msgpack.unpackb(path.read_bytes())
                if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
                    raise ValueError("not a list of frames")
                if (run_id, int(seq)) not in self._index.items:  # already imported by a load that died
                    self._put(run_id, int(seq), frames)
                done.append(path)
            except (ValueError, msgpack.UnpackException, OSError) as exc:
                log.error("spool: unreadable %s (%s), kept aside as .bad", path, exc)
                path.rename(path.with_suffix(".bad"))
        if marker_too:
            try:
                info = json.loads(marker.read_text())
                self.begin_run(str(info["run_id"]), int(info["next_seq"]))
            except (ValueError, KeyError, TypeError, OSError) as exc:
                log.error("spool: cannot tell which run was interrupted (%s unreadable: %s)", marker, exc)
            done.append(marker)
        self.sync()
        for path in done:
            path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        log.info("spool: imported %d messages of the earlier one-file-per-message spool into %s",
                 len(olds), self.path)

    # ------------------------------------------------------------------ writing
    def _write(self, record: bytes) -> None:
        """Append one record whole, or cut the file back and raise (a torn record would hide the ones after)."""
        try:
            n = os.write(self._fd, record)
            while n < len(record):
                n += os.write(self._fd, record[n:])
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise

    def _append(self, kind: int, body: object) -> int:
        record = _record(kind, body)
        self._write(record)
        self._size += len(record)
        now = time.monotonic()
        if not self._unsynced:
            self._oldest_unsynced = now
        self._unsynced += 1
        if self._unsynced >= self.sync_every_n or now - self._oldest_unsynced >= self.sync_every_s:
            self.sync()
        return len(record)

    def _put(self, run_id: str, seq: int, frames: list) -> None:
        frames = [f if type(f) is bytes else bytes(f) for f in frames]
        self._index.put(run_id, seq, frames, self._append(PUT, [run_id, seq, frames]))

    def sync(self) -> None:
        """fsync what is written: it then survives a power cut."""
        if self._unsynced:
            _fdatasync(self._fd)
            self._unsynced = 0
        self.synced_bytes = self._size

    def close(self) -> None:
        """fsync and release the spool for another rig (what it holds stays on disk)."""
        try:
            if self._fd >= 0:
                self.sync()
                os.close(self._fd)
                self._fd = -1
        finally:
            self._lock_file.close()

    # ------------------------------------------------------------------ the spool
    def __len__(self) -> int:
        return len(self._index.items)

    @property
    def full(self) -> bool:
        """True when `capacity` messages wait for acknowledgement."""
        return len(self._index.items) >= self.capacity

    def put(self, run_id: str, seq: int, frames: list[bytes]) -> None:
        """Keep a message until acknowledged (in the file when this returns; fsynced in batches); the
        same (run_id, seq) again replaces it in place. OverflowError when `capacity` messages wait."""
        if self.full and (run_id, seq) not in self._index.items:
            raise OverflowError(f"spool full: {len(self)} messages unacknowledged in {self.directory}")
        self._put(run_id, seq, frames)

    def ack(self, run_id: str, seq: int) -> int:
        """Forget every message of `run_id` up to and including `seq`; returns how many."""
        heap = self._index.heaps.get(run_id)
        if not heap or heap[0] > seq:
            return 0  # acks nothing: not written
        self._append(ACK, [run_id, seq])
        n = self._index.ack(run_id, seq)
        if self._size > self.compact_bytes and self._index.live_bytes < self.compact_live * self._size:
            self._compact()
        return n

    def pending(self) -> list[list[bytes]]:
        """Every unacknowledged message, oldest first."""
        return [frames for frames, _ in self._index.items.values()]

    def last_seq(self, run_id: str) -> int:
        """Highest sequence number kept for `run_id` (-1: none)."""
        return self._index.top.get(run_id, -1)

    # ------------------------------------------------------------------ the run in progress
    def begin_run(self, run_id: str, next_seq: int = 0) -> None:
        """Record that run `run_id` started (its data messages follow from `next_seq`)."""
        self._append(BEGIN, [run_id, next_seq])
        self._index.begin(run_id, next_seq)

    def end_run(self, run_id: str) -> None:
        """Record that run `run_id` ended (its run_end is put): a restarted rig leaves it alone."""
        self._append(END, [run_id])
        self._index.end(run_id)
        self._earlier.discard(run_id)

    def interrupted_run(self) -> tuple[str, int] | None:
        """(run_id, next_seq) of the last run begun and not ended by an earlier process, or None;
        next_seq is one past the highest seq ever put for it (acknowledged or not)."""
        runs = [r for r in self._index.open if r in self._earlier]
        return (runs[-1], self._index.next_seq(runs[-1])) if runs else None

    # ------------------------------------------------------------------ compaction
    def _compact(self) -> None:
        """Rewrite only the live records (tmp file, fsync, rename, fsync the folder)."""
        tmp = self.directory / "journal.tmp"
        before = self._size
        sizes = {}
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC)
                for run_id in self._index.open:
                    f.write(_record(BEGIN, [run_id, self._index.next_seq(run_id)]))
                for key, (frames, _) in self._index.items.items():
                    record = _record(PUT, [key[0], key[1], frames])
                    f.write(record)
                    sizes[key] = len(record)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        except OSError as exc:
            log.warning("spool: could not compact %s (%s); it stays as it is", self.path, exc)
            tmp.unlink(missing_ok=True)
            return
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        for key, n in sizes.items():
            self._index.items[key] = (self._index.items[key][0], n)
        self._index.live_bytes = sum(sizes.values())
        self._size = self.synced_bytes = size
        self._unsynced = 0
        log.info("spool: compacted %s from %d to %d bytes (%d messages pending)", self.path, before, size,
                 len(self._index.items))
