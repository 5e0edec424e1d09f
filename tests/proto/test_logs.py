"""Daemon logs: one line per event, a rotating file, and repeated errors counted instead of repeated."""

from __future__ import annotations

import logging
import logging.handlers

import pytest

from nvscope.proto.logs import LOG_FILE_BACKUPS, LOG_FILE_BYTES, RateLimitedLog, setup_logging


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def logger():
    log = logging.getLogger("nvscope.test.ratelimited")
    log.setLevel(logging.DEBUG)
    return log


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nvscope.test.ratelimited"]


def test_4000_events_within_the_interval_make_one_line_then_one_summary(logger, caplog):
    limited = RateLimitedLog(logger, "malformed frames", interval_s=10.0)  # the real clock
    with caplog.at_level(logging.ERROR):
        for i in range(4000):
            limited.event("peer-0a1b", f"frame {i}: bad magic")
        limited.tick()  # well under 10 s since the first line: nothing due
        assert _lines(caplog) == ["malformed frames from peer-0a1b: frame 0: bad magic "
                                  "(more are counted, summarised every 10 s)"]
        limited.flush()
        limited.flush()  # nothing pending: no second summary
    lines = _lines(caplog)
    assert len(lines) == 2
    assert lines[1].startswith("3999 malformed frames from peer-0a1b in the last ")
    assert lines[1].endswith("s (4000 in all); last: frame 3999: bad magic")
    assert limited.count == 4000
    assert all(r.levelno == logging.ERROR for r in caplog.records)


def test_a_summary_per_interval_while_events_go_on(logger, caplog):
    clock = FakeClock()
    limited = RateLimitedLog(logger, "malformed frames", interval_s=10.0, clock=clock)
    with caplog.at_level(logging.ERROR):
        for i in range(3000):  # 3000 events over 30 s: one each 10 ms
            clock.t = 1000.0 + i / 100
            limited.event("peer-01", f"#{i}")
    lines = _lines(caplog)
    assert len(lines) == 3  # the first, then one summary each time 10 s had passed
    assert lines[1] == "1000 malformed frames from peer-01 in the last 10 s (1001 in all); last: #1000"
    assert lines[2] == "1000 malformed frames from peer-01 in the last 10 s (2001 in all); last: #2000"
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        limited.tick()  # 9.99 s since the last summary
        assert _lines(caplog) == []
        clock.t += 0.02
        limited.tick()  # due, with no further event needed
    assert _lines(caplog) == ["999 malformed frames from peer-01 in the last 10 s (3000 in all); last: #2999"]
    assert limited.count == 3000


def test_after_a_quiet_interval_the_next_event_is_logged_on_its_own(logger, caplog):
    clock = FakeClock()
    limited = RateLimitedLog(logger, "refused acks", interval_s=5.0, clock=clock)
    with caplog.at_level(logging.ERROR):
        limited.event("peer-01", "seq 10^9")
        clock.t += 60
        limited.event("peer-02", "seq 7")
    assert _lines(caplog) == ["refused acks from peer-01: seq 10^9 (more are counted, summarised every 5 s)",
                              "refused acks from peer-02: seq 7 (more are counted, summarised every 5 s)"]


def test_a_summary_names_several_peers(logger, caplog):
    clock = FakeClock()
    limited = RateLimitedLog(logger, "malformed frames", clock=clock)
    with caplog.at_level(logging.ERROR):
        limited.event("peer-00", "x")
        for i in range(250):
            limited.event(f"peer-{i % 3:02d}", f"d{i}")
        clock.t += 3
        limited.flush()
    assert _lines(caplog)[1] == ("250 malformed frames from 3 peers (last peer-00) in the last 3 s (251 in all); "
                                 "last: d249")


def test_interval_must_be_positive(logger):
    with pytest.raises(ValueError, match="interval_s"):
        RateLimitedLog(logger, "x", interval_s=0.0)


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_setup_logging_writes_one_line_per_event_to_stderr_and_a_rotating_file(tmp_path, capsys,
                                                                               restore_root_logging):
    log_file = tmp_path / "rig.log"
    setup_logging("rig", str(log_file), verbose=False)
    setup_logging("rig", str(log_file), verbose=False)  # again: replaces, does not double the lines
    root = logging.getLogger()
    rotating = [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(rotating) == 1
    assert (rotating[0].maxBytes, rotating[0].backupCount) == (LOG_FILE_BYTES, LOG_FILE_BACKUPS) == (10 * 2**20, 5)
    assert root.level == logging.INFO
    log = logging.getLogger("nvscope.rt.link")
    log.debug("not shown unless verbose")
    log.warning("host disconnected;\nkeeping 3 messages")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("scan step failed")
    for handler in root.handlers:
        handler.flush()
    file_lines = log_file.read_text().splitlines()
    err_lines = [line for line in capsys.readouterr().err.splitlines() if " rig nvscope.rt.link " in line]
    assert len(file_lines) == 2 and file_lines == err_lines
    assert file_lines[0].endswith(" rig nvscope.rt.link WARNING: host disconnected; | keeping 3 messages")
    assert "scan step failed | Traceback (most recent call last):" in file_lines[1]
    assert file_lines[1].endswith("RuntimeError: boom")
    setup_logging("host", None, verbose=True)
    assert logging.getLogger().level == logging.DEBUG
    assert not any(isinstance(h, logging.handlers.RotatingFileHandler) for h in logging.getLogger().handlers)


def test_setup_logging_rotates(tmp_path, restore_root_logging, monkeypatch):
    monkeypatch.setattr("nvscope.proto.logs.LOG_FILE_BYTES", 2000)
    log_file = tmp_path / "host.log"
    setup_logging("host", str(log_file), verbose=False)
    for handler in logging.getLogger().handlers:  # ours only: pytest's capture handlers stay as they are
        if getattr(handler, "_nvscope", False) and not isinstance(handler, logging.handlers.RotatingFileHandler):
            handler.setLevel(logging.CRITICAL)  # keep stderr quiet
    for i in range(200):
        logging.getLogger("nvscope.host").info("line %d %s", i, "x" * 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host.log"] + [f"host.log.{k}" for k in range(1, 6)]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())


def test_setup_logging_refuses_a_log_file_it_cannot_open(tmp_path, restore_root_logging):
    with pytest.raises(ValueError, match=r"log file .*missing/rig.log: cannot open it") as err:
        setup_logging("rig", str(tmp_path / "missing" / "rig.log"), verbose=False)
    assert "\n" not in str(err.value)
