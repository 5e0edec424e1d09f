"""The rig's journal (rt/spool.py): what survives a killed process, a power cut, a torn tail; compaction;
capacity; the run in progress; the old one-file-per-message spool imported once."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest

from nvscope.rt.spool import JOURNAL, MAGIC, Spool, SpoolError, journal_pending


def frames_of(seq: int, size: int = 300) -> list[bytes]:
    """Two frames whose bytes depend on seq (checked after reload)."""
    return [f"head {seq}".encode(), bytes((seq * 7 + i) % 251 for i in range(size))]


def seqs(spool: Spool) -> list[int]:
    return [int(f[0].split()[1]) for f in spool.pending()]


def copy_prefix(src, dst, n: int) -> None:
    """What a power cut leaves: the journal's first n bytes."""
    dst.mkdir()
    (dst / JOURNAL).write_bytes((src / JOURNAL).read_bytes()[:n])


WRITER = textwrap.dedent("""
    import sys
    from nvscope.rt.spool import Spool
    sys.path.insert(0, {tests!r})
    from test_journal import frames_of
    spool = Spool({spool!r}, capacity=10**6, sync_every_s=1e9, sync_every_n=64)
    spool.begin_run("r")
    seq = 0
    while True:
        spool.put("r", seq, frames_of(seq))
        if seq % 10 == 9:
            spool.ack("r", seq - 5)
        print(seq, spool.synced_bytes, flush=True)
        seq += 1
""")


def test_kill_9_mid_stream_loses_nothing_put(tmp_path):
    """A writer killed with SIGKILL mid-stream: every put it returned from is there after reload, the
    acked ones are gone, the run is found interrupted with the next unused seq."""
    spool_dir = tmp_path / "spool"
    code = WRITER.format(tests=os.path.dirname(__file__), spool=str(spool_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            last, synced = map(int, line.split())
            if last >= 400:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert last >= 400 and synced > len(MAGIC)  # it did fsync in batches while it wrote
    spool = Spool(spool_dir, capacity=5)
    got = seqs(spool)
    top = got[-1]
    assert top >= last  # every put returned is there (the writer may have gone a little further)
    acked = max(s - 5 for s in range(top + 1) if s % 10 == 9)  # the last ack it wrote before `top`'s put
    assert got[0] in (acked + 1, acked - 9) and got == list(range(got[0], top + 1))
    for frames in spool.pending():
        s = int(frames[0].split()[1])
        assert frames == frames_of(s)
    assert spool.interrupted_run() == ("r", top + 1)
    assert spool.last_seq("r") == top and len(spool) == len(got) and spool.full
    spool.close()


def test_a_power_cut_loses_only_what_came_after_the_last_fsync(tmp_path, caplog):
    spool = Spool(tmp_path / "a", capacity=100, sync_every_s=1e9, sync_every_n=10)
    sizes = []
    for seq in range(25):
        spool.put("r", seq, frames_of(seq))
        sizes.append((tmp_path / "a" / JOURNAL).stat().st_size)
    assert spool.synced_bytes == sizes[19] < sizes[24]  # fsynced after the 10th and 20th record
    copy_prefix(tmp_path / "a", tmp_path / "cut", spool.synced_bytes)
    after = Spool(tmp_path / "cut", capacity=100)
    assert seqs(after) == list(range(20)) and after.pending()[19] == frames_of(19)
    after.close()
    with caplog.at_level(logging.ERROR):  # the cut came in the middle of the 21st record: torn tail
        copy_prefix(tmp_path / "a", tmp_path / "torn", spool.synced_bytes + 37)
        torn = Spool(tmp_path / "torn", capacity=100)
    assert seqs(torn) == list(range(20))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "torn or corrupt tail" in caplog.text and "cut 37 bytes" in caplog.text
    assert (tmp_path / "torn" / JOURNAL).stat().st_size == spool.synced_bytes
    assert len((tmp_path / "torn" / "journal.cut").read_bytes()) == 37
    torn.put("r", 20, frames_of(20))  # appended after the cut: loads again
    torn.close()
    assert [s for _, s in journal_pending(tmp_path / "torn")] == list(range(21))
    spool.sync()
    assert spool.synced_bytes == sizes[24]
    spool.close()


def test_sync_every_s_and_n(tmp_path):
    """sync_every_s = 0: every record is fsynced; a large n and s: only sync() and close() fsync."""
    each = Spool(tmp_path / "each", capacity=10, sync_every_s=0.0)
    each.put("r", 0, frames_of(0))
    assert each.synced_bytes == (tmp_path / "each" / JOURNAL).stat().st_size
    lazy = Spool(tmp_path / "lazy", capacity=100, sync_every_s=1e9, sync_every_n=10**9)
    start = lazy.synced_bytes
    for seq in range(50):
        lazy.put("r", seq, frames_of(seq))
    assert lazy.synced_bytes == start
    lazy.close()
    timed = Spool(tmp_path / "lazy", capacity=100, sync_every_s=0.05, sync_every_n=10**9)
    timed.put("r", 50, frames_of(50))
    first = timed.synced_bytes
    time.sleep(0.06)
    timed.put("r", 51, frames_of(51))  # the oldest unsynced record is older than 0.05 s
    assert timed.synced_bytes == (tmp_path / "lazy" / JOURNAL).stat().st_size > first
    each.close(), timed.close()


@pytest.mark.parametrize("damage", ["flip_crc", "flip_body", "huge_length", "garbage"])
def test_a_corrupt_record_cuts_the_rest_and_loads_what_came_before(tmp_path, caplog, damage):
    spool = Spool(tmp_path / "s", capacity=100)
    ends = []
    for seq in range(10):
        spool.put("r", seq, frames_of(seq))
        ends.append(spool._size)
    spool.close()
    path = tmp_path / "s" / JOURNAL
    data = bytearray(path.read_bytes())
    at = ends[5]  # the 7th record starts here
    if damage == "flip_crc":
        data[at + 5] ^= 0x40
    elif damage == "flip_body":
        data[at + 60] ^= 0x01
    elif damage == "huge_length":
        data[at:at + 4] = (10**9).to_bytes(4, "little")
    else:
        data = data[:ends[-1]] + os.urandom(100)
        at = ends[-1]
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        again = Spool(tmp_path / "s", capacity=100)
    assert seqs(again) == list(range(ends.index(at) + 1))
    assert caplog.text.count("torn or corrupt tail") == 1 and path.stat().st_size == at
    again.close()


def test_not_a_journal_is_one_line(tmp_path):
    (tmp_path / JOURNAL).write_bytes(b"something else entirely")
    with pytest.raises(SpoolError, match=r"journal.bin is not an nvscope journal .*move it away") as exc:
        Spool(tmp_path, capacity=3)
    assert "\n" not in str(exc.value)
    with pytest.raises(SpoolError):  # not SpoolInUse: the refused one released its lock
        Spool(tmp_path, capacity=3)


def test_compaction_keeps_exactly_the_unacked_set_in_order(tmp_path, caplog):
    spool = Spool(tmp_path, capacity=10_000, compact_bytes=40_000)
    spool.begin_run("b")
    expected = []
    with caplog.at_level(logging.INFO):
        for seq in range(300):
            for run in ("a", "b"):
                spool.put(run, seq, frames_of(seq))
                expected.append((run, seq))
            if seq % 20 == 19:
                spool.ack("a", seq - 3)
                spool.ack("b", seq - 11)
                expected = [(r, s) for r, s in expected if s > (seq - 3 if r == "a" else seq - 11)]
        spool.ack("b", 299)  # every b acked: its run is still open, its next seq kept
    expected = [(r, s) for r, s in expected if r == "a"]
    assert caplog.text.count("compacted") >= 2
    assert (tmp_path / JOURNAL).stat().st_size < 40_000  # 600 puts of ~330 bytes: ~200 kB without compaction
    pending = list(spool._index.items)
    assert pending == expected == [("a", s) for s in range(297, 300)]
    assert spool.last_seq("a") == 299 and spool.last_seq("b") == -1
    assert not (tmp_path / "journal.tmp").exists()
    spool.put("a", 300, frames_of(300))
    spool.close()
    again = Spool(tmp_path, capacity=10_000)
    assert list(again._index.items) == expected + [("a", 300)] and again.pending()[-1] == frames_of(300)
    assert again.interrupted_run() == ("b", 300)
    again.close()


def test_a_crash_during_compaction_leaves_the_old_journal(tmp_path, monkeypatch):
    spool = Spool(tmp_path, capacity=1000, compact_bytes=5_000)
    for seq in range(30):
        spool.put("r", seq, frames_of(seq))
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    spool.ack("r", 27)  # compaction fails: logged, the journal stays whole
    monkeypatch.undo()
    assert seqs(spool) == [28, 29] and not (tmp_path / "journal.tmp").exists()
    (tmp_path / "journal.tmp").write_bytes(b"half a compaction")  # a rig killed mid-compaction
    spool.close()
    again = Spool(tmp_path, capacity=1000)
    assert seqs(again) == [28, 29]
    again.close()


def test_capacity_and_full(tmp_path):
    spool = Spool(tmp_path, capacity=3)
    for seq in range(3):
        spool.put("r", seq, frames_of(seq))
    assert spool.full
    with pytest.raises(OverflowError, match="spool full: 3 messages"):
        spool.put("r", 3, frames_of(3))
    spool.put("r", 1, frames_of(1))  # the same key again: replaced in place, counted once
    assert len(spool) == 3 and seqs(spool) == [0, 1, 2]
    assert spool.ack("r", 0) == 1 and not spool.full and spool.ack("r", 0) == 0
    spool.put("r", 3, frames_of(3))
    spool.close()
    smaller = Spool(tmp_path, capacity=2)  # capacity lowered in the config: nothing dropped
    assert seqs(smaller) == [1, 2, 3] and smaller.full
    smaller.close()


INTERRUPTED = textwrap.dedent("""
    from nvscope.rt.spool import Spool
    spool = Spool({spool!r}, capacity=100, sync_every_s=1e9, sync_every_n=10**6)
    spool.begin_run("a")
    for seq in range(5):
        spool.put("a", seq, [b"x"])
    spool.end_run("a")
    spool.begin_run("b")
    for seq in range(7):
        spool.put("b", seq, [b"y"])
    spool.ack("b", 6)
    print("ready", flush=True)
    import time; time.sleep(60)
""")


def test_interrupted_run_after_kill_9(tmp_path):
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED.format(spool=str(spool_dir))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    spool = Spool(spool_dir, capacity=100)
    assert spool.interrupted_run() == ("b", 7)  # acked or not, seqs up to 6 were used
    assert seqs_raw(spool) == [b"x"] * 5
    spool.begin_run("c")  # begun in this process: not an interrupted one
    assert spool.interrupted_run() == ("b", 7)
    spool.end_run("b")
    assert spool.interrupted_run() is None
    spool.put("c", 0, [b"z"])
    spool.close()
    again = Spool(spool_dir, capacity=100)
    assert again.interrupted_run() == ("c", 1)
    again.close()


def seqs_raw(spool: Spool) -> list[bytes]:
    return [f[0] for f in spool.pending()]


def test_the_old_one_file_per_message_spool_is_imported_once(tmp_path, caplog):
    for seq in (1, 2, 3):
        (tmp_path / f"run.{seq:012d}.msg").write_bytes(msgpack.packb(frames_of(seq), use_bin_type=True))
        os.utime(tmp_path / f"run.{seq:012d}.msg", ns=(seq * 10**9, seq * 10**9))
    (tmp_path / "run.000000000009.msg").write_bytes(b"\xc1 not msgpack")
    (tmp_path / "run_in_progress.json").write_text(json.dumps({"run_id": "run", "next_seq": 5}))
    with caplog.at_level(logging.INFO):
        spool = Spool(tmp_path, capacity=10)
    assert seqs(spool) == [1, 2, 3] and spool.pending()[2] == frames_of(3)
    assert spool.interrupted_run() == ("run", 5)
    assert not list(tmp_path.glob("*.msg")) and not (tmp_path / "run_in_progress.json").exists()
    assert (tmp_path / "run.000000000009.bad").exists() and "unreadable" in caplog.text
    spool.close()
    (tmp_path / "run_in_progress.json").write_text(json.dumps({"run_id": "other", "next_seq": 1}))
    again = Spool(tmp_path, capacity=10)  # a journal exists: a marker is the new rig's business, not imported
    assert seqs(again) == [1, 2, 3] and again.interrupted_run() == ("run", 5)
    again.close()


def test_a_failed_write_is_undone(tmp_path, monkeypatch):
    """Disk full in the middle of a record: the file is cut back, the put raises, nothing is half there."""
    spool = Spool(tmp_path, capacity=100)
    spool.put("r", 0, frames_of(0))
    size = (tmp_path / JOURNAL).stat().st_size
    real = os.write

    def half(fd, data):
        real(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(OSError, match="No space left"):
        spool.put("r", 1, frames_of(1))
    monkeypatch.undo()
    assert (tmp_path / JOURNAL).stat().st_size == size and seqs(spool) == [0]
    spool.put("r", 2, frames_of(2))  # space is back
    spool.close()
    assert [s for _, s in journal_pending(tmp_path)] == [0, 2]


def test_ack_and_pending_stay_fast_with_thousands_pending(tmp_path):
    """An index, not rescans: 20,000 pending messages acked in batches of 7 and listed 200 times."""
    spool = Spool(tmp_path, capacity=10**6, sync_every_n=10**6, sync_every_s=1e9)
    for seq in range(20_000):
        spool.put("r", seq, [b"p"])
    t0 = time.perf_counter()
    for i in range(200):
        assert len(spool.pending()) == 20_000 - 7 * i
        assert spool.ack("r", 7 * (i + 1) - 1) == 7
    for seq in range(1400, 20_000, 7):
        spool.ack("r", seq)
    dt = time.perf_counter() - t0
    assert len(spool) == 0 and spool.last_seq("r") == -1
    assert dt < 3.0, f"{dt:.2f} s"  # measured ~0.1 s; a rescan per ack would take minutes
    spool.close()
