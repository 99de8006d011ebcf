"""CURVE keys and connection strings: owner-only key files, the allow-list, the keys command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import zmq
import zmq.auth
from cli_support import cli

from see_persistence.connection import TcpEndpoints, parse_connection, pub_endpoint_for
from see_persistence.keys import InvalidKey, KeyStore, public_key_from


@pytest.fixture
def keys_dir(tmp_path):
    """A key directory of this test's own (created on first use, as in real life)."""
    return tmp_path / "keys"


def test_key_pairs_are_created_owner_only_on_first_use_and_the_client_key_is_allowed(keys_dir):
    store = KeyStore(keys_dir)
    client = store.client_pair()
    writer = store.writer_pair()
    assert stat.S_IMODE(os.stat(keys_dir).st_mode) == 0o700
    for name in ("writer.key_secret", "client.key_secret", "writer.key", "client.key"):
        assert stat.S_IMODE(os.stat(keys_dir / name).st_mode) == 0o600
    assert KeyStore(keys_dir).client_pair() == client  # loaded, not made again
    assert KeyStore(keys_dir).writer_pair() == writer
    assert [key for key, _label in store.labels()] == [client.public]
    assert store.is_allowed(zmq.utils.z85.decode(client.public.encode()))
    assert not store.is_allowed(zmq.utils.z85.decode(writer.public.encode()))


def test_processes_creating_the_client_key_at_once_share_one_pair_and_only_it_is_allowed(keys_dir):
    # Eight processes start at a common instant; the losers of the race must not leave their
    # own (never used) keys on the allow-list, and the winner's key must be on it.
    start_at = time.time() + 1.0
    script = (
        "import sys, time; from see_persistence.keys import KeyStore\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        "print(KeyStore(sys.argv[1]).client_pair().public)\n"
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(keys_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    publics = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(publics) == 1
    assert [key for key, _label in KeyStore(keys_dir).labels()] == list(publics)


def test_a_process_that_dies_while_creating_the_client_key_leaves_no_refused_key(keys_dir, monkeypatch):
    # The death is simulated at the allow-list write; whatever was written before it must not
    # be a client key that the next process loads and the writer refuses forever.
    class Died(BaseException):
        pass

    def die(self, key, label=""):
        raise Died

    monkeypatch.setattr(KeyStore, "allow", die)
    with pytest.raises(Died):
        KeyStore(keys_dir).client_pair()
    monkeypatch.undo()
    store = KeyStore(keys_dir)
    client = store.client_pair()
    assert store.is_allowed(zmq.utils.z85.decode(client.public.encode()))


def test_allow_and_revoke_take_effect_at_once_and_refuse_what_is_no_key(keys_dir, tmp_path):
    store = KeyStore(keys_dir)
    other_public, _ = zmq.curve_keypair()
    other = other_public.decode()
    assert store.allow(other, label="laptop") is True
    assert store.allow(other) is False
    assert (other, "laptop") in store.labels()
    assert store.revoke(other) is True
    assert store.revoke(other) is False
    assert other not in [key for key, _ in store.labels()]
    with pytest.raises(InvalidKey):
        store.allow("not a key")
    certificate = tmp_path / "laptop.key"
    zmq.auth.certs._write_key_file(certificate, "", other)
    assert public_key_from(str(certificate)) == other


def test_a_secret_key_others_can_read_and_a_key_directory_others_can_enter_are_refused(keys_dir):
    store = KeyStore(keys_dir)
    store.writer_pair()
    os.chmod(keys_dir / "writer.key_secret", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        KeyStore(keys_dir).writer_pair()
    os.chmod(keys_dir / "writer.key_secret", 0o600)
    os.chmod(keys_dir, 0o755)
    with pytest.raises(PermissionError, match="chmod 700"):
        KeyStore(keys_dir).writer_pair()


def test_an_allow_list_opened_to_others_after_start_allows_no_key(keys_dir):
    store = KeyStore(keys_dir)
    client = zmq.utils.z85.decode(store.client_pair().public.encode())
    assert store.is_allowed(client)
    os.chmod(keys_dir / "allowed", 0o777)  # whoever can write there could add themselves
    assert not store.is_allowed(client)
    os.chmod(keys_dir / "allowed", 0o700)
    assert store.is_allowed(client)


def test_a_revoke_in_the_same_timestamp_tick_as_the_last_listing_is_seen(keys_dir):
    store = KeyStore(keys_dir)
    other_public, _ = zmq.curve_keypair()
    other = other_public.decode()
    store.allow(other)
    allowed = keys_dir / "allowed"
    tick = os.stat(allowed).st_mtime_ns
    assert zmq.utils.z85.decode(other_public) in store.allowed()
    store.revoke(other)
    os.utime(allowed, ns=(tick, tick))  # as a filesystem with coarse timestamps would leave it
    assert zmq.utils.z85.decode(other_public) not in store.allowed()


def test_connection_strings_round_trip_and_say_what_is_missing():
    key = zmq.curve_keypair()[0].decode()
    endpoints = TcpEndpoints("tcp://10.0.0.5:7000", "tcp://10.0.0.5:7005", key)
    assert parse_connection(endpoints.connection_string()) == endpoints
    assert parse_connection("tcp://10.0.0.5:7000", server_key=key).pub == "tcp://10.0.0.5:7001"
    assert pub_endpoint_for("tcp://127.0.0.1:0") == "tcp://127.0.0.1:0"
    with pytest.raises(ValueError, match="no writer key"):
        parse_connection("tcp://10.0.0.5:7000")
    with pytest.raises(ValueError, match="not port 0"):
        parse_connection("tcp://10.0.0.5:0", server_key=key)
    with pytest.raises(ValueError, match="not a TCP endpoint"):
        parse_connection("ipc:///tmp/x", server_key=key)


def _public_key(first_is_dash: bool) -> str:
    """A new client public key that begins with '-' (one in 85 does), or one that does not."""
    while True:
        key = zmq.curve_keypair()[0].decode()
        if key.startswith("-") == first_is_dash:
            return key


def test_the_keys_command_creates_lists_allows_and_revokes(keys_dir):
    other = _public_key(first_is_dash=False)
    directory = ["keys", "--keys-dir", str(keys_dir)]
    assert cli(*directory, "create").returncode == 0
    client = KeyStore(keys_dir).client_pair().public
    assert cli(*directory, "allow", other, "--name", "laptop").returncode == 0
    listed = cli(*directory, "list").stdout
    assert client in listed and f"{other}  laptop" in listed
    assert cli(*directory, "revoke", other).stdout == f"revoked: {other}\n"
    assert other not in cli(*directory, "list").stdout
    refused = cli(*directory, "allow", "nonsense")
    assert refused.returncode == 2 and "not a CURVE public key" in refused.stderr


def test_a_key_that_begins_with_a_dash_is_allowed_and_revoked_after_double_dash(keys_dir):
    dashed = _public_key(first_is_dash=True)
    directory = ["keys", "--keys-dir", str(keys_dir)]
    bare = cli(*directory, "allow", dashed)
    assert bare.returncode == 2 and "KEY|FILE" in bare.stderr  # argparse reads it as an option
    assert "after '--'" in cli(*directory, "allow", "--help").stdout
    assert cli(*directory, "allow", "--name", "phone", "--", dashed).stdout == f"allowed: {dashed}\n"
    assert f"{dashed}  phone" in cli(*directory, "list").stdout
    assert cli(*directory, "revoke", "--", dashed).stdout == f"revoked: {dashed}\n"
    assert dashed not in cli(*directory, "list").stdout


def test_a_lease_row_whose_writer_key_is_no_key_is_not_used() -> None:
    # A corrupt or foreign row: its key must not reach setsockopt, whose error would end the
    # Client's sending thread.
    from types import SimpleNamespace

    from see_persistence.client.transport import tcp_endpoints_from_lease

    endpoints = (("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"),)
    for key in ("not a key", "x" * 40 + "é", ""):
        status = SimpleNamespace(public_key=key, endpoints=endpoints, host="elsewhere")
        assert tcp_endpoints_from_lease(SimpleNamespace(writer_lease=lambda s=status: s)) is None
