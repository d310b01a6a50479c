"""flame certs, flame keygen, flame register: what each party makes, holds and receives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flame.ops.certs import distribute, fingerprint, make_all, make_node_key, server_sans
from flame.ops.launch import key_name, public_keys


def test_the_coordinator_hands_out_no_private_key_of_a_region(tmp_path: Path) -> None:
    make_all(tmp_path / "authority", ["flame.example.com"])
    distribute(tmp_path / "authority", tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {f for f in files if not f.startswith("authority/")} == {
        "superlink/ca.crt", "superlink/server.pem", "superlink/server.key", "client/ca.crt",
    }  # fmt: skip
    assert {f for f in files if f.startswith("authority/")} == {
        "authority/ca.crt", "authority/ca.key", "authority/server.pem", "authority/server.key",
    }  # fmt: skip
    assert (tmp_path / "superlink/server.key").stat().st_mode & 0o077 == 0
    assert distribute(tmp_path / "authority", tmp_path) == []  # idempotent


def test_a_new_name_reissues_only_the_server_certificate(tmp_path: Path) -> None:
    make_all(tmp_path, [])
    ca = (tmp_path / "ca.crt").read_bytes()
    assert "gateway" in server_sans(tmp_path / "server.pem")  # regions dial the gateway
    assert make_all(tmp_path, []) == []  # nothing new: nothing rotated
    written = make_all(tmp_path, ["coordinator.example.com", "203.0.113.7"])
    assert written[0].startswith("server.pem (reissued")
    assert {"coordinator.example.com", "203.0.113.7"} <= server_sans(tmp_path / "server.pem")
    assert (tmp_path / "ca.crt").read_bytes() == ca  # nodes' ca.crt stays valid


def test_a_site_makes_its_own_key_once_and_publishes_only_the_public_half(
    tmp_path: Path,
) -> None:
    site, outbox = tmp_path / "site" / "keys", tmp_path / "outbox" / "us.pub"
    done = subprocess.run(
        [sys.executable, "-m", "flame.cli", "keygen", "--out", str(site), "--publish", str(outbox)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "node.key made" in done.stdout and "SHA256:" in done.stdout
    private = (site / "node.key").read_bytes()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (site / "node.key").stat().st_mode & 0o077 == 0
    assert outbox.read_bytes() == (site / "node.pub").read_bytes()
    assert outbox.read_bytes().startswith(b"ecdsa-sha2-nistp384 ")
    assert not make_node_key(site)  # a restarted site keeps its key
    assert (site / "node.key").read_bytes() == private
    assert fingerprint(outbox.read_bytes()) in done.stdout


def test_register_takes_public_keys_only(tmp_path: Path) -> None:
    for region in ("us", "eu"):
        make_node_key(tmp_path / "sites" / region)
    keys = public_keys([tmp_path / "sites"])
    assert [key_name(k) for k in keys] == ["eu", "us"]
    with pytest.raises(ValueError, match=r"is a private key: only a site's node\.pub"):
        public_keys([tmp_path / "sites" / "us" / "node.key"])
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(ValueError, match=r"junk.pub is not an OpenSSH public key"):
        public_keys([tmp_path / "junk.pub"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.pub keys in"):
        public_keys([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="no such public key file"):
        public_keys([tmp_path / "missing.pub"])
