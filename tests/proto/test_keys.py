"""CurveZMQ key files: written private, read back with checks; loopback endpoints; `nvscope keys init`."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth

from nvscope.host.keys_cli import add_keys_parser, keys_command
from nvscope.proto.command_line import OneLineParser
from nvscope.proto.keys import KeyFileError, init_keys, is_loopback, load_keypair, load_public_keys


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_keys_writes_a_private_pair_that_loads_back(tmp_path):
    folder = tmp_path / "keys"
    public_file, secret_file = init_keys(folder, "rig")
    assert (public_file.name, secret_file.name) == ("rig.key", "rig.key_secret")
    assert _mode(folder) == 0o700
    assert _mode(secret_file) == 0o600
    assert _mode(public_file) & 0o077 == 0o044  # the public half may be read by anyone
    public, secret = load_keypair(secret_file)
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret) == public
    assert load_public_keys(public_file) == [public]
    assert secret not in public_file.read_bytes()  # the public file holds no secret
    # the format is ZeroMQ's certificate, read by pyzmq's own loader too
    assert zmq.auth.load_certificate(secret_file) == (public, secret)


def test_init_keys_never_overwrites_a_pair(tmp_path):
    public_file, secret_file = init_keys(tmp_path, "host")
    before = secret_file.read_bytes()
    with pytest.raises(KeyFileError, match=r"host\.key.*already exists") as err:
        init_keys(tmp_path, "host")
    assert "\n" not in str(err.value)
    assert secret_file.read_bytes() == before
    secret_file.unlink()  # half a pair left: still refused, the public key someone holds is kept
    with pytest.raises(KeyFileError, match="already exists"):
        init_keys(tmp_path, "host")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "-x", "x" * 65])
def test_init_keys_refuses_a_name_that_is_not_a_plain_file_name(tmp_path, name):
    with pytest.raises(KeyFileError, match="key name"):
        init_keys(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_keypair_refuses_a_secret_readable_by_group_or_others(tmp_path, mode):
    _, secret_file = init_keys(tmp_path, "rig")
    secret_file.chmod(mode)
    with pytest.raises(KeyFileError) as err:
        load_keypair(secret_file)
    message = str(err.value)
    assert str(secret_file) in message and "chmod 600" in message and f"{mode:04o}" in message
    assert "\n" not in message
    secret_file.chmod(0o600)
    load_keypair(secret_file)  # fixed by the command it names


def test_load_keypair_names_what_is_wrong(tmp_path):
    public_file, secret_file = init_keys(tmp_path, "rig")
    with pytest.raises(KeyFileError, match="no such key file"):
        load_keypair(tmp_path / "absent.key_secret")
    with pytest.raises(KeyFileError, match="holds no secret key"):
        load_keypair(public_file)
    with pytest.raises(KeyFileError, match="not a key file"):
        load_keypair(tmp_path)
    junk = tmp_path / "junk.key_secret"
    junk.write_bytes(b"\x00\xff not a certificate\n")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a key file"):
        load_keypair(junk)
    text = secret_file.read_text()
    public, secret = load_keypair(secret_file)
    short = tmp_path / "short.key_secret"
    short.write_text(text.replace(secret.decode(), secret.decode()[:-3]))
    short.chmod(0o600)
    with pytest.raises(KeyFileError, match="40-character z85"):
        load_keypair(short)
    other_public, _ = zmq.curve_keypair()
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(text.replace(public.decode(), other_public.decode()))
    mixed.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not belong"):
        load_keypair(mixed)


def test_load_public_keys_of_a_file_and_of_a_folder(tmp_path):
    folder = tmp_path / "allowed"
    b_pub, _ = init_keys(tmp_path / "b", "b")
    a_pub, _ = init_keys(tmp_path / "a", "a")
    folder.mkdir()
    with pytest.raises(KeyFileError, match="holds no .key public key files"):
        load_public_keys(folder)
    (folder / "zz.key").write_bytes(b_pub.read_bytes())
    (folder / "aa.key").write_bytes(a_pub.read_bytes())
    (folder / "notes.txt").write_text("ignored")
    keys = load_public_keys(folder)
    assert keys == [load_public_keys(a_pub)[0], load_public_keys(b_pub)[0]]  # sorted by file name
    (folder / "bad.key").write_text("curve\n    public-key = \"tooshort\"\n")
    with pytest.raises(KeyFileError, match=r"bad\.key: the public key is not"):
        load_public_keys(folder)
    with pytest.raises(KeyFileError, match="no such key file"):
        load_public_keys(tmp_path / "nowhere.key")


@pytest.mark.parametrize("endpoint, expected", [
    ("tcp://127.0.0.1:5557", True), ("tcp://127.3.2.1:*", True), ("tcp://localhost:5557", True),
    ("tcp://LOCALHOST:5557", True), ("tcp://[::1]:5557", True), ("tcp://127.0.0.1;127.0.0.1:5557", True),
    ("ipc:///tmp/nvscope.sock", True), ("inproc://rig", True),
    ("tcp://0.0.0.0:*", False), ("tcp://*:5557", False), ("tcp://192.168.1.5:5557", False),
    ("tcp://[::]:5557", False), ("tcp://eth0:5557", False), ("tcp://rig.lab.example:5557", False),
    ("tcp://127.0.0.1;192.168.1.5:5557", False), ("pgm://eth0;239.192.1.1:5555", False),
    ("ws://127.0.0.1:5557", False), ("127.0.0.1:5557", False), ("tcp://127.0.0.1", False),
])
def test_is_loopback(endpoint, expected):
    assert is_loopback(endpoint) is expected


def _run_keys(argv):
    parser = OneLineParser(prog="nvscope")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    return keys_command(parser.parse_args(argv))


def test_keys_init_command(tmp_path, capsys):
    assert _run_keys(["keys", "init", str(tmp_path / "k"), "--name", "rig1"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "k" / "rig1.key") in out and str(tmp_path / "k" / "rig1.key_secret") in out
    assert "allowed_hosts" in out and "--rig-key" in out
    load_keypair(tmp_path / "k" / "rig1.key_secret")
    assert _run_keys(["keys", "init", str(tmp_path / "k"), "--name", "rig1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert _run_keys(["keys", "init", str(tmp_path / "d")]) == 0  # default name: this machine's
    assert len(list((tmp_path / "d").glob("*.key_secret"))) == 1
