"""The Swabian Time Tagger adapter (rt/drivers/swabian_tagger.py) against a fake of its Python API
injected as sys.modules["TimeTagger"]: the TagBlocks the rig expects (ps, split by channel, covering
[previous t_end, t_end)), tags the tagger lost counted as overflows, the stream stopped by stop(),
and the API's failures as one line naming the tagger."""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pytest

import nvscope.rt.config as rt_config
from nvscope.rt.config import ConfigError, DevicesConfig, RigConfig
from nvscope.rt.devices import DRIVERS, compose_devices
from nvscope.rt.drivers.swabian_tagger import MISSED_EVENTS, TIME_TAG, SwabianTagger
from nvscope.rt.hal import DeviceError, DeviceTimeout, TagBlock, check_device

OVERFLOW_BEGIN, OVERFLOW_END = 2, 3


class FakeBuffer:
    """A TimeTagStreamBuffer: events (timestamp ps, channel, type, missed count), tStart, tGetData."""

    def __init__(self, events: list[tuple[int, int, int, int]], t_start: int, t_get: int):
        cols = list(zip(*events)) if events else [(), (), (), ()]
        self._ts = np.array(cols[0], dtype=np.int64)
        self._ch = np.array(cols[1], dtype=np.int32)
        self._types = np.array(cols[2], dtype=np.uint8)
        self._missed = np.array(cols[3], dtype=np.uint32)
        self.size, self.hasOverflows = len(events), bool((self._types != TIME_TAG).any())
        self.tStart, self.tGetData = t_start, t_get

    def getTimestamps(self):
        return self._ts

    def getChannels(self):
        return self._ch

    def getEventTypes(self):
        return self._types

    def getMissedEvents(self):
        return self._missed


class FakeStream:
    """TimeTagStream(tagger, n_max_events, channels): hands out the tagger's scripted buffers; once they
    are spent, empty buffers at a clock that no longer advances (a tagger that stopped sending)."""

    def __init__(self, tagger, n_max_events, channels):
        self.tagger, self.n_max_events, self.channels = tagger, n_max_events, list(channels)
        self.script = list(tagger.script)
        self.running, self.calls = True, 0
        tagger.streams.append(self)

    def getData(self):
        self.calls += 1
        if self.tagger.fail:
            raise RuntimeError("USB error:\n device disconnected")
        if self.script:
            buf = self.script.pop(0)
        else:
            buf = FakeBuffer([], self.t_last, self.t_last)
        self.t_last = buf.tGetData
        return buf

    def stop(self):
        self.running = False


class FakeTagger:
    def __init__(self, serial, script):
        self.serial, self.script, self.streams, self.fail, self.freed = serial, script, [], False, False


T0 = 1_000_000  # ps: the stream's start on the tagger's clock
SCRIPT = [
    # the buffer start() takes: one tag on each channel and one on channel 3 (not ours)
    FakeBuffer([(T0 + 100_000, 1, TIME_TAG, 0), (T0 + 500_000, 2, TIME_TAG, 0), (T0 + 700_000, 3, TIME_TAG, 0)],
               T0, T0 + 200_000_000),
    # the tagger overflowed: 7 tags of channel 1 and 2 of channel 2 lost
    FakeBuffer([(T0 + 200_000_000, 1, TIME_TAG, 0), (T0 + 240_000_000, 1, OVERFLOW_BEGIN, 0),
                (T0 + 250_000_000, 1, MISSED_EVENTS, 7), (T0 + 250_000_000, 2, MISSED_EVENTS, 2),
                (T0 + 260_000_000, 1, OVERFLOW_END, 0)], T0 + 200_000_000, T0 + 300_000_000),
    FakeBuffer([(T0 + 550_000_000, 2, TIME_TAG, 0), (T0 + 560_000_000, -1, TIME_TAG, 0)],
               T0 + 300_000_000, T0 + 600_000_000),
    FakeBuffer([(T0 + 700_000_000, 1, TIME_TAG, 0)], T0 + 600_000_000, T0 + 750_000_000),
]


@pytest.fixture
def api(monkeypatch):
    module = types.ModuleType("TimeTagger")
    module.taggers = []

    def create(serial=""):
        tagger = FakeTagger(serial, SCRIPT)
        module.taggers.append(tagger)
        return tagger

    def free(tagger):
        tagger.freed = True

    module.createTimeTagger, module.TimeTagStream, module.freeTimeTagger = create, FakeStream, free
    monkeypatch.setitem(sys.modules, "TimeTagger", module)
    return module


def test_reads_return_the_tag_blocks_the_rig_expects(api):
    tagger = SwabianTagger("1740000JEH", (1, 2), buffer_tags=1000, timeout_s=1.0)
    check_device("tagger", tagger)
    assert tagger.start() == T0
    stream = api.taggers[0].streams[0]
    assert (api.taggers[0].serial, stream.n_max_events, stream.channels) == ("1740000JEH", 1000, [1, 2])
    block = tagger.read(0.5e-3)  # to T0 + 5e8 ps: three buffers, the last a little beyond
    assert isinstance(block, TagBlock) and block.t_a.dtype == np.int64 and block.t_b.dtype == np.int64
    assert block.t_a.tolist() == [T0 + 100_000, T0 + 200_000_000]
    assert block.t_b.tolist() == [T0 + 500_000, T0 + 550_000_000]
    assert (block.t_end, block.overflows) == (T0 + 600_000_000, 9)
    block = tagger.read(0.1e-3)  # [T0 + 6e8, T0 + 7e8): the next buffer
    assert (block.t_a.tolist(), block.t_b.tolist(), block.t_end, block.overflows) == \
        ([T0 + 700_000_000], [], T0 + 750_000_000, 0)
    tagger.stop()
    assert not stream.running
    with pytest.raises(DeviceError, match=r"^tagger \(Swabian Time Tagger 1740000JEH\): read before start\(\)$"):
        tagger.read(0.1e-3)
    tagger.close()
    assert api.taggers[0].freed


def test_a_read_that_already_has_its_data_does_not_wait(api):
    tagger = SwabianTagger()
    tagger.start()
    t0 = time.monotonic()
    block = tagger.read(0.1e-3)  # the start's buffer reaches T0 + 2e8 ps: enough for 1e8 ps
    assert time.monotonic() - t0 < 0.05
    assert (block.t_a.tolist(), block.t_b.tolist(), block.t_end) == ([T0 + 100_000], [T0 + 500_000], T0 + 200_000_000)
    assert api.taggers[0].streams[0].calls == 1


def test_a_clock_that_stops_is_a_timeout_in_one_line(api):
    tagger = SwabianTagger("", (1, 2), timeout_s=0.2)
    tagger.start()
    tagger.read(0.7e-3)  # every scripted buffer
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as exc:
        tagger.read(1e-3)
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert str(exc.value) == ("tagger (Swabian Time Tagger first found): its clock did not reach the end of a "
                              "0.001 s read within 0.2 s of it")


def test_the_apis_errors_are_one_line_naming_the_tagger(api):
    tagger = SwabianTagger("1740000JEH", (1, 2), name="tagger")
    tagger.start()
    api.taggers[0].fail = True
    with pytest.raises(DeviceError) as exc:
        tagger.read(0.5e-3)
    assert str(exc.value) == ("tagger (Swabian Time Tagger 1740000JEH): TimeTagStream.getData failed "
                              "(USB error: device disconnected)")
    with pytest.raises(DeviceError, match=r"^tagger \(Swabian Time Tagger 1740000JEH\): a read of 20.0 s is outside"):
        tagger.read(20.0)


def test_a_missing_api_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "TimeTagger", None)  # import TimeTagger raises ImportError
    monkeypatch.setitem(sys.modules, "Swabian", None)
    with pytest.raises(DeviceError, match=r"^tagger \(Swabian Time Tagger first found\): Swabian's TimeTagger Python "
                                          r"API is not installed \(pip install Swabian-TimeTagger; "):
        SwabianTagger()


def test_a_swabian_tagger_is_composed_from_the_devices_table(api, monkeypatch):
    monkeypatch.setattr(rt_config, "DEVICE_KINDS", ("sim", *DRIVERS))
    cfg = RigConfig(devices=DevicesConfig(scanner={"kind": "sim"},
                                          tagger={"kind": "swabian", "serial": "1740000JEH", "channels": [2, 1]}))
    devices = compose_devices(cfg)
    assert isinstance(devices.tagger, SwabianTagger) and devices.tagger.channels == (2, 1)
    assert api.taggers[0].serial == "1740000JEH"
    devices.tagger.start()
    block = devices.tagger.read(0.1e-3)  # channel 2 is A now
    assert (block.t_a.tolist(), block.t_b.tolist()) == ([T0 + 500_000], [T0 + 100_000])
    for table, words in (({"kind": "swabian", "channels": [1, 1]}, "devices.tagger.channels: must be two distinct"),
                         ({"kind": "swabian", "serial": 17}, "devices.tagger.serial: expected str, got 17"),
                         ({"kind": "swabian", "rate": 1}, "devices.tagger.rate: unknown field")):
        with pytest.raises(ConfigError) as exc:
            compose_devices(RigConfig(devices=DevicesConfig(scanner={"kind": "sim"}, tagger=table)))
        assert str(exc.value).startswith(words), str(exc.value)
