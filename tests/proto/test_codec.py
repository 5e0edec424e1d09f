"""Codec round trips for every message kind, and every malformed frame rejected with ProtocolError."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np

from nvscope.proto.histogram import HISTOGRAM_MODES
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto import codec
from nvscope.proto.messages import (LOCK_STATES, MESSAGE_TYPES, MRI_SCANS, RUN_ID, Array, Coherence, Deer, Lock,
                                    PartialG2, PartialPixel, Pixel, RunStart, field_specs)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _array(spec: Array):
    shape = tuple(n if n >= 0 else -1 for n in spec.shape)
    lengths = st.tuples(*[st.just(n) if n >= 0 else st.integers(0, 40) for n in shape])
    dtype = np.dtype(spec.dtype)
    elems = st.integers(-2**62, 2**62) if dtype.kind == "i" else finite
    return lengths.flatmap(lambda s: st.lists(elems, min_size=int(np.prod(s)), max_size=int(np.prod(s)))
                           .map(lambda v, s=s: np.array(v, dtype=dtype).reshape(s)))


def _value(spec):
    if isinstance(spec, Array):
        return _array(spec)
    return {int: st.integers(-2**63, 2**63 - 1), float: finite, bool: st.booleans(),
            str: st.text(max_size=30),
            dict: st.dictionaries(st.text(max_size=8), st.integers(-2**63, 2**63 - 1) | st.text(max_size=8), max_size=4)}[spec]


COUNTS = {"dwell_s": st.floats(1e-9, 1e6), "n_a": st.integers(0, 2**62), "n_b": st.integers(0, 2**62),
          "hist": st.lists(st.integers(0, 2**50), min_size=215, max_size=215).map(lambda v: np.array(v, dtype="<i8")),
          "histogram_mode": st.sampled_from(HISTOGRAM_MODES), "tac_dead_s": st.floats(0, 1e-6),
          "n_starts": st.just(-1)}
"""Fields whose values `Pixel.check` and `PartialPixel.check` constrain (n_events follows from hist)."""


RUN_IDS = st.from_regex(RUN_ID, fullmatch=True)
"""Run ids the codec accepts (file-name safe)."""


def _message(cls):
    fields = {name: _value(spec) for name, spec in field_specs(cls).items()}
    fields.update(run_id=RUN_IDS)
    if cls in (Pixel, PartialPixel):
        counts = {**COUNTS, "lost_tags": st.integers(0, 2**62)} if cls is Pixel else COUNTS
        built = st.builds(cls, **{**fields, **counts})
        return built.map(lambda m: dataclasses.replace(m, n_events=int(m.hist.sum())))
    if cls is Coherence:  # one coherence and one sigma per time, raw counts per time or none, durations >= 0
        fields.update(pi_s=st.floats(0, 1e-3), pi_half_s=st.floats(0, 1e-3))
        return st.builds(cls, **fields).map(lambda m: dataclasses.replace(
            m, coherence=np.resize(m.coherence, len(m.t)), sigma=np.resize(m.sigma, len(m.t)),
            **{k: np.resize(getattr(m, k), len(m.t) if len(getattr(m, k)) else 0)
               for k in ("signal_counts", "bright_counts", "dark_counts")}))
    if cls in (Lock, Deer):  # indices in range, finite positive frequencies and times (their check())
        nonneg = st.integers(0, 2**62)
        fields.update(index=nonneg, plane=nonneg, ix=nonneg, iy=nonneg, scan=st.integers(0, len(MRI_SCANS) - 1),
                      position=st.lists(finite, min_size=3, max_size=3).map(lambda v: np.array(v)))
        positive = st.floats(1e-3, 1e12)
        if cls is Lock:
            fields.update(state=st.integers(0, len(LOCK_STATES) - 1), f_lock_hz=positive,
                          f_sigma_hz=positive | st.just(np.inf), cycles=nonneg, photons=nonneg)
        else:
            fields.update(f_rf_hz=positive, tau_s=positive, shots=nonneg, n_rf=nonneg, n_ref=nonneg)
    return st.builds(cls, **fields)


def _equal(a, b) -> bool:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(st.one_of([_message(cls) for cls in MESSAGE_TYPES.values()]))
def test_round_trip_every_kind(msg):
    out = decode(encode(msg))
    assert type(out) is type(msg)
    assert _equal(out, msg)


def test_partial_pixel_and_its_answer_round_trip_nan_included():
    partial = PartialPixel(run_id="r", seq=5, index=4, dwell_s=0.15, n_a=30, n_b=41, n_events=2,
                           hist=np.eye(1, 215, 107, dtype=np.int64)[0] * 2)
    assert _equal(decode(encode(partial)), partial)
    answer = decode(encode(PartialG2(run_id="r", seq=5, index=4, dwell_s=0.15, g2=np.nan, g2_std=np.nan)))
    assert isinstance(answer, PartialG2) and np.isnan(answer.g2) and np.isnan(answer.g2_std)
    assert not PartialPixel.durable and not PartialG2.durable  # neither stored nor acknowledged


def test_arrays_travel_as_raw_bytes_not_lists():
    msg = Pixel(run_id="r", seq=1, hist=np.arange(215, dtype=np.int64))
    frames = encode(msg)
    body = msgpack.unpackb(frames[0])[3]
    assert isinstance(body["hist"]["b"], bytes) and len(body["hist"]["b"]) == 215 * 8
    assert len(frames) == 1  # a small array stays inside the message


def test_large_array_goes_in_its_own_frame_and_decodes_without_copy(monkeypatch):
    n = codec.OUT_OF_BAND_BYTES // 8 + 1
    msg = Coherence(run_id="r", seq=2, t=np.linspace(0, 1, n), coherence=np.ones(n), sigma=np.zeros(n))
    frames = encode(msg)
    assert len(frames) == 4  # t, coherence and sigma out of band
    out = decode([frames[0], *[bytes(f) for f in frames[1:]]])
    assert np.array_equal(out.t, msg.t) and np.array_equal(out.sigma, msg.sigma)
    assert not out.t.flags.owndata  # a view on the frame's buffer
    monkeypatch.setattr(codec, "OUT_OF_BAND_BYTES", 1000)  # the histogram (1720 B) goes out, position (24 B) stays
    pixel = Pixel(run_id="r", seq=3, dwell_s=0.1, n_events=215, hist=np.ones(215, dtype=np.int64))
    frames = encode(pixel)
    assert len(frames) == 2
    out = decode([frames[0], bytes(frames[1])])
    assert np.array_equal(out.hist, pixel.hist) and np.array_equal(out.position, pixel.position)


def _body(msg):
    return msgpack.unpackb(encode(msg)[0])


def _pack(head):
    return [msgpack.packb(head, use_bin_type=True)]


@pytest.mark.parametrize("frames, words", [
    ([b"\xc1\xff garbage"], "not msgpack"),
    ([msgpack.packb({"hello": "world"})], "foreign"),
    ([b""], "not msgpack"),
    ([], "empty"),
])
def test_garbage_and_foreign_frames(frames, words):
    with pytest.raises(ProtocolError, match=words):
        decode(frames)


def test_unknown_kind_and_wrong_version():
    head = _body(Pixel(run_id="r", seq=1))
    with pytest.raises(ProtocolError, match="unknown message kind 'pixxel'"):
        decode(_pack([head[0], "pixxel", head[2], head[3]]))
    with pytest.raises(ProtocolError, match="schema version 99"):
        decode(_pack([head[0], head[1], 99, head[3]]))


def test_wrong_field_type_missing_and_unknown_fields():
    magic, kind, schema, body = _body(Pixel(run_id="r", seq=1))
    with pytest.raises(ProtocolError, match="pixel.seq: expected int, got str"):
        decode(_pack([magic, kind, schema, {**body, "seq": "1"}]))
    with pytest.raises(ProtocolError, match="pixel.seq: expected int, got bool"):
        decode(_pack([magic, kind, schema, {**body, "seq": True}]))
    with pytest.raises(ProtocolError, match="missing fields \\['hist'\\]"):
        decode(_pack([magic, kind, schema, {k: v for k, v in body.items() if k != "hist"}]))
    with pytest.raises(ProtocolError, match="unknown fields \\['extra'\\]"):
        decode(_pack([magic, kind, schema, {**body, "extra": 1}]))


def test_wrong_dtype_shape_and_truncated_array():
    magic, kind, schema, body = _body(Pixel(run_id="r", seq=1))
    hist = body["hist"]
    cases = [
        ({"nd": ["<f8", [215]], "b": hist["b"]}, "dtype '<f8'"),
        ({"nd": ["<i8", [214]], "b": hist["b"][:-8]}, "shape \\(214,\\)"),
        ({"nd": ["<i8", [215]], "b": hist["b"][:-3]}, "truncated"),
        ({"nd": ["<i8", [215]], "f": 1}, "frame 1 is missing"),
        ([1, 2, 3], "expected an array"),
        ({"nd": "bad"}, "malformed array header"),
    ]
    for bad, words in cases:
        with pytest.raises(ProtocolError, match=words):
            decode(_pack([magic, kind, schema, {**body, "hist": bad}]))


def test_extra_frames_are_rejected():
    frames = encode(Pixel(run_id="r", seq=1))
    with pytest.raises(ProtocolError, match="frames"):
        decode([*frames, b"stray"])


def _pixel(kind=Pixel, **changes):
    hist = np.zeros(215, dtype=np.int64)
    hist[100:110] = 3
    return dataclasses.replace(kind(run_id="r", seq=4, index=3, dwell_s=0.2, n_a=40, n_b=50, n_events=30, hist=hist),
                               **changes)


@pytest.mark.parametrize("kind", [Pixel, PartialPixel])
@pytest.mark.parametrize("changes, words", [
    ({"n_events": 31}, r"\.n_events: 31, but the histogram holds 30 events"),
    ({"n_events": 0}, r"\.n_events: 0, but the histogram holds 30"),
    ({"hist": np.r_[-1, np.ones(214, dtype=np.int64)], "n_events": 213}, r"\.hist: negative counts \(smallest -1\)"),
    ({"n_a": -1}, r"\.n_a: -1 singles"),
    ({"n_b": -5}, r"\.n_b: -5 singles"),
    ({"dwell_s": 0.0}, r"\.dwell_s: 0.0 s, expected finite and > 0"),
    ({"dwell_s": -0.1}, r"\.dwell_s"),
    ({"dwell_s": float("nan")}, r"\.dwell_s: nan"),
    ({"dwell_s": float("inf")}, r"\.dwell_s: inf"),
])
def test_pixel_whose_values_contradict_is_rejected_naming_the_field(kind, changes, words):
    good = _pixel(kind)
    assert _equal(decode(encode(good)), good)
    with pytest.raises(ProtocolError, match=f"^{kind.kind}{words}"):
        decode(encode(_pixel(kind, **changes)))


def test_pixel_with_negative_lost_tags_is_rejected():
    assert decode(encode(_pixel(lost_tags=7))).lost_tags == 7
    with pytest.raises(ProtocolError, match=r"^pixel\.lost_tags: must be >= 0, got -1"):
        decode(encode(_pixel(lost_tags=-1)))


def test_histogram_sum_does_not_overflow_in_the_check():
    hist = np.zeros(215, dtype=np.int64)
    hist[:2] = 2**62  # the int64 sum wraps to -2**63
    with pytest.raises(ProtocolError, match="n_events"):
        decode(encode(_pixel(hist=hist, n_events=int(hist.sum()))))


def test_coherence_needs_one_value_and_sigma_per_time():
    t = np.linspace(1e-6, 1e-5, 5)
    ok = Coherence(run_id="r", seq=2, t=t, coherence=np.ones(5), sigma=np.full(5, 0.01))
    assert _equal(decode(encode(ok)), ok)
    with pytest.raises(ProtocolError, match="coherence.sigma: 4 values for 5 times"):
        decode(encode(dataclasses.replace(ok, sigma=np.ones(4))))
    with pytest.raises(ProtocolError, match="coherence.coherence: 6 values for 5 times"):
        decode(encode(dataclasses.replace(ok, coherence=np.ones(6))))


@pytest.mark.parametrize("run_id", ["../escaped-run", "/abs/path", "sub/dir/x", ".hidden", "a" * 129, "x\x00y"])
def test_a_run_id_that_is_not_a_safe_file_name_is_rejected(run_id):
    with pytest.raises(ProtocolError, match=r"^pixel\.run_id: .* is not a run id"):
        decode(encode(_pixel(run_id=run_id)))


@pytest.mark.parametrize("changes, words", [
    ({"n_a": 2**64 - 1}, r"^pixel\.n_a: 18446744073709551615 does not fit in 64 bits"),
    ({"seq": 2**63 + 5}, r"^pixel\.seq: \d+ does not fit in 64 bits"),
])
def test_integers_beyond_what_the_file_can_hold_are_rejected(changes, words):
    with pytest.raises(ProtocolError, match=words):
        decode(encode(_pixel(**changes)))


def test_a_configuration_the_file_cannot_keep_is_rejected():
    assert decode(encode(RunStart(run_id="r", seq=0, config={"scan": {"nx": 3}}))).config == {"scan": {"nx": 3}}
    with pytest.raises(ProtocolError, match=r"^run_start\.config: not storable as JSON"):
        decode(encode(RunStart(run_id="r", seq=0, config={"x": b"\x00"})))
