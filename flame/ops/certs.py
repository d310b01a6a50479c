"""Credentials for a TLS + SuperNode-authenticated deployment.

``flame certs`` (the coordinator) writes into one folder (never commit it; ``certs/`` is
git-ignored):
- ``ca.crt`` / ``ca.key``: a private CA (RSA 4096, 2 years); keep ``ca.key`` offline;
- ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, whose SANs
  cover every name a client dials (the compose service name, localhost, loopback and any
  FLAME_TLS_SANS such as the SuperLink's public DNS name or IP).
``flame keygen`` (each site, on its own machine or volume) makes the site's node key pair:
``node.key`` / ``node.pub``, ECDSA P-384 in OpenSSH format, for ``--auth-supernode-private-key``.
Only ``node.pub`` travels: the coordinator registers it (``flame register``), and never holds
a region's private key. Existing files are kept (re-running never rotates credentials
silently); ``--force`` renews.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_KEY, NODE_PUB = "node.key", "node.pub"
DEFAULT_SANS = ("superlink", "gateway", "localhost", "127.0.0.1", "::1", "host.docker.internal")


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    # private keys: owner-only; the containers run as uid 10001, and the compose `certs`
    # service (running as that uid) writes them, rather than making them world-readable
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(folder: Path, days: int) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Flame federation CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    _write(folder / "ca.key", _pem_key(key), private=True)
    _write(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def make_server(
    folder: Path, ca: x509.Certificate, ca_key: rsa.RSAPrivateKey, sans: list[str], days: int
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days))
        .add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write(folder / "server.key", _pem_key(key), private=True)
    _write(folder / "server.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)


def server_sans(pem: Path) -> set[str]:
    """The names and addresses ``pem`` covers (empty when there is no such file)."""
    if not pem.exists():
        return set()
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def make_node_key(folder: Path, force: bool = False) -> bool:
    """A site's node key pair, ``folder/node.key`` and ``folder/node.pub``, unless it exists
    (``force``: renew). Returns whether one was made."""
    if not force and (folder / NODE_KEY).exists():
        public_key(folder / NODE_PUB)  # a kept pair must still be whole
        return False
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(folder / NODE_KEY, private, private=True)
    _write(folder / NODE_PUB, public + b"\n", private=False)
    return True


def public_key(path: Path) -> bytes:
    """The OpenSSH public key in ``path``; a private key, or anything else, is refused."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such public key file")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} is a private key: only a site's node.pub ever leaves the site")
    try:
        serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ValueError(f"{path} is not an OpenSSH public key ({err})") from None
    return data


def fingerprint(data: bytes) -> str:
    """``ssh-keygen -l`` style: SHA256 of the key blob, base64 without padding."""
    blob = base64.b64decode(data.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def make_all(
    folder: Path, extra_sans: list[str], force: bool = False, days: int = 730
) -> list[str]:
    """Create whatever is missing (everything with ``force``); returns what was written."""
    written = []
    sans = list(dict.fromkeys([*DEFAULT_SANS, *extra_sans]))
    if force or not (folder / "ca.crt").exists():
        ca, ca_key = make_ca(folder, days)
        make_server(folder, ca, ca_key, sans, days)
        written += ["ca.crt", "ca.key", f"server.pem (SANs: {', '.join(sans)})", "server.key"]
    elif missing := sorted(set(sans) - server_sans(folder / "server.pem")):
        # a name to dial was added (a new FLAME_TLS_SANS, or a newer Flame's `gateway`): a new
        # server certificate from the same CA, so every node's ca.crt and key stay valid
        ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        make_server(folder, ca, ca_key, sans, days)  # type: ignore[arg-type]
        written += [f"server.pem (reissued: it did not cover {', '.join(missing)})", "server.key"]
    return written


def distribute(authority: Path, targets: Path) -> list[str]:
    """Copy to each consumer only what it needs (compose: one volume per consumer).

    ``targets/superlink``: ca.crt, server.pem, server.key; ``targets/client``: ca.crt (the
    ServerApp's SuperExec, the launcher and ``register`` dial the SuperLink; regions dial the
    gateway). ``ca.key`` stays in ``authority``, which no running service mounts. No region's
    key is here: each site makes its own (``flame keygen``).
    """
    plan: dict[str, list[tuple[str, bool]]] = {
        "superlink": [("ca.crt", False), ("server.pem", False), ("server.key", True)],
        "client": [("ca.crt", False)],
    }
    done = []
    for consumer, files in plan.items():
        for name, private in files:
            target = targets / consumer / name
            data = (authority / name).read_bytes()
            if not target.exists() or target.read_bytes() != data:
                _write(target, data, private)
                done.append(f"{consumer}/{name}")
    return done
