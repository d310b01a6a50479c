"""A region's secret: where its DP noise and sampling come from.

256 random bits from the operating system (``secrets``), made on first use in the region's
state folder (``FLAME_STATE_DIR/<region>/secret``, mode 0600) and never sent. Each DP release
draws from a generator seeded with HMAC-SHA256(secret, run id, round, purpose): nothing in the
run's settings (seed, round, region name) predicts it, so a coordinator cannot replay the noise
and subtract it. Whoever holds the secret can reproduce a DP run; nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

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


def derived_seed(secret: bytes, *parts: object) -> int:
    """A 64-bit seed only the secret's holder can compute, one per ``parts``."""
    message = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big")
