"""msgpack codec for the dataclass messages of `messages.py`, with numpy arrays as raw bytes.

Wire format: a multipart ZeroMQ message. Frame 0 is msgpack of
`["nvscope", kind, schema, {field: value}]`; an array field is a map `{"nd": [dtype, shape], "b": bytes}`
when it is small (inside the message: fastest below ~64 kB) or `{"nd": [dtype, shape], "f": i}` with its
bytes in frame i >= 1 (zero-copy, pays from ~64 kB up). Decoding validates everything against the
dataclass declaration, then asks the message to `check()` its values, and raises `ProtocolError` for
anything else.
"""

from __future__ import annotations

import math
from functools import cache

import msgpack
import numpy as np

from .messages import MESSAGE_TYPES, Array, Message, ProtocolError, field_specs

MAGIC = "nvscope"
OUT_OF_BAND_BYTES = 64 * 1024
"""Arrays at least this large travel as their own zero-copy frame."""
MAX_FRAME0_BYTES = 16 * 1024 * 1024


@cache
def _field_names(cls: type[Message]) -> frozenset[str]:
    return frozenset(field_specs(cls))


def encode(msg: Message) -> list:
    """Pack a message into ZeroMQ frames (frame 0 msgpack, then any out-of-band array buffers)."""
    extra: list = []
    body = {}
    for name, spec in field_specs(type(msg)).items():
        value = getattr(msg, name)
        if isinstance(spec, Array):
            arr = np.ascontiguousarray(value, dtype=spec.dtype)
            head = [arr.dtype.str, list(arr.shape)]
            if arr.nbytes >= OUT_OF_BAND_BYTES:
                extra.append(arr)
                body[name] = {"nd": head, "f": len(extra)}
            else:
                body[name] = {"nd": head, "b": arr.data.cast("B") if arr.size else b""}
        else:
            body[name] = value
    return [msgpack.packb([MAGIC, msg.kind, msg.schema, body], use_bin_type=True), *extra]


def _check_scalar(kind: str, name: str, spec: object, value: object) -> object:
    if type(value) is spec and spec is not int:  # the common case: exactly the declared type
        return value
    if spec is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -2**63 <= value < 2**63:  # what the run file's int64 columns hold
            raise ProtocolError(f"{kind}.{name}: {value} does not fit in 64 bits")
    elif spec is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif spec is bool:
        ok = isinstance(value, bool)
    elif spec is str:
        ok = isinstance(value, str)
    elif spec is dict:
        ok = isinstance(value, dict)
    else:  # pragma: no cover - a declaration error, not a wire error
        raise TypeError(f"{kind}.{name}: unsupported field type {spec!r}")
    if not ok:
        raise ProtocolError(f"{kind}.{name}: expected {spec.__name__}, got {type(value).__name__}")
    return value


def _decode_array(kind: str, name: str, spec: Array, value: object, frames: list) -> np.ndarray:
    if not isinstance(value, dict) or "nd" not in value:
        raise ProtocolError(f"{kind}.{name}: expected an array, got {type(value).__name__}")
    head = value["nd"]
    if not isinstance(head, list) or len(head) != 2 or not isinstance(head[1], list):
        raise ProtocolError(f"{kind}.{name}: malformed array header {head!r}")
    dtype, shape = head[0], tuple(head[1])
    if dtype != spec.dtype:
        raise ProtocolError(f"{kind}.{name}: dtype {dtype!r}, expected {spec.dtype!r}")
    if len(shape) != len(spec.shape) or any(type(n) is not int or n < 0 or (s != -1 and s != n)
                                            for s, n in zip(spec.shape, shape)):
        raise ProtocolError(f"{kind}.{name}: shape {shape}, expected {spec.shape} (-1: any)")
    if "b" in value:
        buf = value["b"]
        if not isinstance(buf, bytes):
            raise ProtocolError(f"{kind}.{name}: array bytes are {type(buf).__name__}")
        nbytes = len(buf)
    elif "f" in value:
        i = value["f"]
        if not isinstance(i, int) or not 1 <= i < len(frames):
            raise ProtocolError(f"{kind}.{name}: array frame {i!r} is missing")
        buf = frames[i]
        buf = buf.buffer if hasattr(buf, "buffer") else buf
        nbytes = memoryview(buf).nbytes
    else:
        raise ProtocolError(f"{kind}.{name}: array has neither bytes nor frame")
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes != expected:
        raise ProtocolError(f"{kind}.{name}: {nbytes} bytes, expected {expected} (truncated?)")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def decode(frames: list) -> Message:
    """Unpack and validate ZeroMQ frames into a message; raises ProtocolError for anything invalid."""
    if not frames:
        raise ProtocolError("empty message")
    raw = frames[0]
    raw = raw.bytes if hasattr(raw, "bytes") else raw
    if len(raw) > MAX_FRAME0_BYTES:
        raise ProtocolError(f"frame 0 is {len(raw)} bytes, over {MAX_FRAME0_BYTES}")
    try:
        head = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not (isinstance(head, list) and len(head) == 4 and head[0] == MAGIC):
        raise ProtocolError("foreign message (no nvscope header)")
    _, kind, schema, body = head
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    if schema != cls.schema:
        raise ProtocolError(f"{kind}: schema version {schema!r}, this software speaks {cls.schema}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind}: body is not a map")
    specs = field_specs(cls)
    if body.keys() != _field_names(cls):
        missing, unknown = sorted(set(specs) - set(body)), sorted(set(body) - set(specs))
        raise ProtocolError(f"{kind}: missing fields {missing}, unknown fields {unknown}")
    values = {}
    out_of_band = 0
    for name, spec in specs.items():
        value = body[name]
        if isinstance(spec, Array):
            values[name] = _decode_array(kind, name, spec, value, frames)
            out_of_band += "f" in value
        else:
            values[name] = _check_scalar(kind, name, spec, value)
    if len(frames) != 1 + out_of_band:
        raise ProtocolError(f"{kind}: {len(frames)} frames, not what the message refers to")
    msg = cls(**values)
    msg.check_common()
    msg.check()
    return msg
