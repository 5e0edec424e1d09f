"""CurveZMQ key pairs on disk: written with private permissions, read back with checks.

A pair is two files in ZeroMQ's certificate format (the one `zmq.auth.create_certificates` writes
and czmq reads): `NAME.key` holds the public key (give it to the other side) and `NAME.key_secret`
holds both keys (never leaves the machine; mode 0600, in a folder of mode 0700). Keys are z85 text,
40 characters for 32 bytes. See docs/architecture.md (security) for who holds which file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
import struct
from pathlib import Path

import zmq
from zmq.auth import load_certificate
from zmq.utils import z85

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
Z85_KEY_LENGTH = 40
"""Characters of a z85-encoded 32-byte CURVE key."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOOPBACK_NAMES = ("localhost",)
_LOCAL_TRANSPORTS = ("ipc", "inproc")


class KeyFileError(ValueError):
    """A key file that cannot be used: missing, permissions too open, not a key; one line naming it."""


def _certificate_text(public: bytes, secret: bytes | None) -> str:
    kind = "Secret" if secret else "Public"
    lines = [f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by nvscope keys init  ****",
             f"#   ZeroMQ CURVE {kind} Certificate",
             ("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." if secret else
              "#   Give this file to the other side (rig: allowed_hosts; host: --rig-key)."),
             "", "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create `path` with `mode` from the first byte (no window with wider permissions); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it further; this is the mode we promise
        with os.fdopen(fd, "w", encoding="ascii") as f:
            fd = -1
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    finally:
        if fd >= 0:
            os.close(fd)


def init_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write a new CURVE key pair `name.key` (public, 0644) and `name.key_secret` (0600) into
    `directory` (created with mode 0700 when absent); returns (public file, secret file)."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(f"key name {name!r}: use 1-64 letters, digits, '_', '.', '-' (not starting with '.' or '-')")
    folder = Path(directory)
    public_file, secret_file = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    for existing in (public_file, secret_file):
        if existing.exists():
            raise KeyFileError(f"{existing}: already exists; not overwritten (a new pair would lock out "
                               f"whoever holds the old public key): choose another --name or folder")
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened: set it exactly
        public, secret = zmq.curve_keypair()
        _write_new(secret_file, _certificate_text(public, secret), 0o600)
        _write_new(public_file, _certificate_text(public, None), 0o644)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot write a key pair there ({exc.strerror or exc})") from None
    return public_file, secret_file


def _check_key(key: bytes | None, path: Path, which: str) -> bytes:
    if key is None:
        raise KeyFileError(f"{path}: not a key file (no {which}-key line)")
    try:
        ok = len(key) == Z85_KEY_LENGTH and len(z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError, TypeError, struct.error):
        ok = False
    if not ok:
        raise KeyFileError(f"{path}: the {which} key is not a {Z85_KEY_LENGTH}-character z85 CURVE key")
    return key


def _read_certificate(path: Path) -> tuple[bytes | None, bytes | None]:
    if not path.exists():
        raise KeyFileError(f"{path}: no such key file (see nvscope keys init)")
    if not path.is_file():
        raise KeyFileError(f"{path}: not a key file (a folder or a device)")
    try:
        return load_certificate(path)
    except ValueError:  # pyzmq: no public-key line
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def load_keypair(secret_file: str | os.PathLike) -> tuple[bytes, bytes]:
    """The (public, secret) z85 keys of a `NAME.key_secret` file; refused when group or others may read it."""
    path = Path(secret_file)
    public, secret = _read_certificate(path)
    if secret is None and public is not None:
        raise KeyFileError(f"{path}: holds no secret key (a public .key file? give the {SECRET_SUFFIX} file)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: secret key file is open to group/others (mode {mode:04o}): "
                           f"run chmod 600 {path}")
    public = _check_key(public, path, "public")
    secret = _check_key(secret, path, "secret")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: its public key does not belong to its secret key (file edited?)")
    return public, secret


def load_public_keys(path: str | os.PathLike) -> list[bytes]:
    """The z85 public keys of a `.key` file, or of every `*.key` file in a folder (sorted by file name)."""
    where = Path(path)
    if where.is_dir():
        files = sorted(p for p in where.glob(f"*{PUBLIC_SUFFIX}") if p.is_file())
        if not files:
            raise KeyFileError(f"{where}: holds no {PUBLIC_SUFFIX} public key files (copy the other side's "
                               f"NAME{PUBLIC_SUFFIX} there)")
    else:
        files = [where]
    keys = []
    for file in files:
        public, _ = _read_certificate(file)
        keys.append(_check_key(public, file, "public"))
    return keys


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine: tcp to 127.x, [::1] or localhost; ipc; inproc."""
    transport, sep, address = endpoint.partition("://")
    if not sep:
        return False
    transport = transport.lower()
    if transport in _LOCAL_TRANSPORTS:
        return True
    if transport != "tcp":
        return False  # pgm, epgm, ws, tipc, vmci...: beyond this machine
    address = address.rpartition(";")[2]  # connect syntax 'tcp://source;destination:port'
    host, colon, _port = address.rpartition(":")
    if not colon:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, a host name: not known to be loopback
        return False
