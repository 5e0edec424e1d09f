"""Codec round trips for every message kind, and every malformed frame rejected with ProtocolError."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvscope.proto import ProtocolError, decode, encode
from nvscope.proto.codec import OUT_OF_BAND_BYTES, _field_specs
from nvscope.proto.messages import MESSAGE_TYPES, Array, Coherence, PartialG2, PartialPixel, Pixel

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


def _message(cls):
    return st.builds(cls, **{name: _value(spec) for name, spec in _field_specs(cls).items()})


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


def test_large_array_goes_in_its_own_frame_and_decodes_without_copy():
    n = OUT_OF_BAND_BYTES // 8 + 1
    msg = Coherence(run_id="r", seq=2, t=np.linspace(0, 1, n), coherence=np.ones(n), sigma=np.zeros(3))
    frames = encode(msg)
    assert len(frames) == 3  # t and coherence out of band, sigma inline
    out = decode([frames[0], *[bytes(f) for f in frames[1:]]])
    assert np.array_equal(out.t, msg.t)
    assert not out.t.flags.owndata  # a view on the frame's buffer


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
