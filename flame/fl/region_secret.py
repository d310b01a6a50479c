"""A region's secret: where its DP noise and sampling come from.

256 random bits from the operating system (``secrets``), made on first use in the region's
state folder (``FLAME_STATE_DIR/<region>/secret``, mode 0600) and never sent. Each DP release
has its own 256-bit key, HMAC-SHA256(secret, run id, round, release number): nothing in the
run's settings (seed, round, region name) predicts it, so a coordinator cannot replay the noise
and subtract it. The key drives a cryptographic stream (AES-256 in counter mode) that the
Gaussian noise is drawn from, so no number of observed noise values predicts another. Whoever
holds the secret (and the ledger's release numbers) can reproduce a DP run; nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FILE = "secret"
SIZE = 32


def region_folder(state_dir: Path, region: str) -> Path:
    """This region's own sub-folder of FLAME_STATE_DIR (made private on first use)."""
    folder = state_dir / region
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def load_secret(folder: Path) -> bytes:
    """The region's secret, made once: written to a private file, then linked into place, so
    two tasks at once agree on one and none reads a half-written secret."""
    path = folder / FILE
    if not path.exists():
        draft = folder / f".{FILE}-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SIZE))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another task made it first: use theirs
        finally:
            draft.unlink()
    secret = path.read_bytes()
    if len(secret) != SIZE:
        raise ValueError(
            f"{path}: a region secret is {SIZE} bytes, this file holds {len(secret)} "
            "(a damaged state folder in FLAME_STATE_DIR)"
        )
    return secret


def derived_key(secret: bytes, *parts: object) -> bytes:
    """A 256-bit key only the secret's holder can compute, one per ``parts``."""
    message = "\x1f".join(map(str, parts)).encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


class SecretStream:
    """Standard normal draws from AES-256-CTR keyed by ``key`` (a CSPRNG), by Box-Muller in
    float64: the same key gives the same draws, and the draws reveal nothing of the key."""

    def __init__(self, key: bytes, purpose: bytes = b"noise") -> None:
        nonce = hashlib.sha256(purpose).digest()[:16]
        self.cipher = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def uniform(self, n: int) -> np.ndarray:
        """``n`` doubles in (0, 1], 53 random bits each."""
        words = np.frombuffer(self.cipher.update(bytes(8 * n)), dtype=np.uint64)
        return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53

    def normal(self, n: int) -> np.ndarray:
        half = (n + 1) // 2
        radius = np.sqrt(-2.0 * np.log(self.uniform(half)))
        angle = 2.0 * np.pi * self.uniform(half)
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]

    def words(self, n: int) -> bytes:
        """``n`` random 32-bit words."""
        return self.cipher.update(bytes(4 * n))
