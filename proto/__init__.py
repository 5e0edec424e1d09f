"""nvscope.proto: message kinds, the msgpack codec and socket roles shared by rt and host."""

from .codec import ProtocolError, decode, encode
from .messages import MESSAGE_TYPES, Message

__all__ = ["ProtocolError", "decode", "encode", "MESSAGE_TYPES", "Message"]
