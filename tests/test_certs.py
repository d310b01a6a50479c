"""flame certs: what each service receives."""

from __future__ import annotations

from pathlib import Path

from flame.ops.certs import distribute, make_all, server_sans


def test_each_service_gets_only_its_own_files(tmp_path: Path) -> None:
    make_all(tmp_path / "authority", ["us", "eu"], ["flame.example.com"])
    distribute(tmp_path / "authority", tmp_path, ["us", "eu"])
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    given = {f for f in files if not f.startswith("authority/")}
    assert given == {
        "superlink/ca.crt", "superlink/server.pem", "superlink/server.key",
        "client/ca.crt", "client/keys/us.pub", "client/keys/eu.pub",
        "regions/us/ca.crt", "regions/us/node.key", "regions/eu/ca.crt", "regions/eu/node.key",
    }  # fmt: skip
    us_key = (tmp_path / "authority/keys/us").read_bytes()
    assert (tmp_path / "regions/us/node.key").read_bytes() == us_key
    assert (tmp_path / "regions/us/node.key").stat().st_mode & 0o077 == 0
    assert us_key.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert distribute(tmp_path / "authority", tmp_path, ["us", "eu"]) == []  # idempotent


def test_a_new_name_reissues_only_the_server_certificate(tmp_path: Path) -> None:
    make_all(tmp_path, ["us"], [])
    ca, key = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "keys/us").read_bytes()
    assert "gateway" in server_sans(tmp_path / "server.pem")  # regions dial the gateway
    assert make_all(tmp_path, ["us"], []) == []  # nothing new: nothing rotated
    written = make_all(tmp_path, ["us"], ["coordinator.example.com", "203.0.113.7"])
    assert written[0].startswith("server.pem (reissued")
    assert {"coordinator.example.com", "203.0.113.7"} <= server_sans(tmp_path / "server.pem")
    assert (tmp_path / "ca.crt").read_bytes() == ca  # nodes' ca.crt and keys stay valid
    assert (tmp_path / "keys/us").read_bytes() == key
