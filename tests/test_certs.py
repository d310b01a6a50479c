"""flame certs: what each service receives."""

from __future__ import annotations

from pathlib import Path

from flame.certs import distribute, make_all


def test_each_service_gets_only_its_own_files(tmp_path: Path) -> None:
    make_all(tmp_path / "authority", ["us", "eu"], ["flame.example.com"])
    distribute(tmp_path / "authority", tmp_path, ["us", "eu"])
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    given = {f for f in files if not f.startswith("authority/")}
    assert given == {
        "superlink/ca.crt", "superlink/server.pem", "superlink/server.key",
        "client/ca.crt", "client/keys/us.pub", "client/keys/eu.pub",
        "us/ca.crt", "us/node.key", "eu/ca.crt", "eu/node.key",
    }  # fmt: skip
    us_key = (tmp_path / "authority/keys/us").read_bytes()
    assert (tmp_path / "us/node.key").read_bytes() == us_key
    assert (tmp_path / "us/node.key").stat().st_mode & 0o077 == 0
    assert us_key.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert distribute(tmp_path / "authority", tmp_path, ["us", "eu"]) == []  # idempotent
