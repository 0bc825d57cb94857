"""Signed URL tokens: what makes a screen, room page or file URL impossible to guess.

SylkServer publishes screen images at plain URLs anyone can enumerate. Here every URL carries
a token ``<expiry>.<mac>``: the MAC is HMAC-SHA256 (RFC 2104, FIPS 180-4) under the node's
``[web] token_secret`` over (purpose, room, subject, expiry), where the subject is the
participant for a screen, the SHA-1 for a file, empty for a room page. A token therefore opens
one thing only, until its expiry (absolute Unix time: tokens survive a restart of the node as
long as the secret does). Comparison is constant-time (`hmac.compare_digest`).

The secret is ``[web] token_secret`` when configured, else 32 random bytes generated once into
``<spool_dir>/web/token_secret`` (mode 0600, written atomically) and read back on later starts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = ["TokenError", "TokenPurpose", "TokenSigner", "load_secret"]

log = logging.getLogger("chorus.web")

SECRET_FILE = Path("web") / "token_secret"
SECRET_BYTES = 32  # HMAC-SHA256 key as long as the hash output (RFC 2104 §3)
_MAC_BYTES = 32


class TokenPurpose(Enum):
    SCREEN = "screen"  # subject: the sharing participant
    ROOM = "room"  # subject: empty
    FILE = "file"  # subject: the file's SHA-1, lower-case hex


class TokenError(Exception):
    """A token that does not open what it is shown for; the web answers 403."""

    status = 403


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return str(len(raw)).encode("ascii") + b":" + raw  # length-prefixed: no field ambiguity


@dataclass(frozen=True, slots=True)
class TokenSigner:
    secret: bytes
    ttl: float  # seconds a token issued now stays valid

    def _mac(self, purpose: TokenPurpose, room: str, subject: str, expiry: int) -> bytes:
        message = b"chorus-web-v1\n" + b"\n".join(
            (_field(purpose.value), _field(room), _field(subject), str(expiry).encode("ascii"))
        )
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def issue(self, purpose: TokenPurpose, room: str, subject: str = "", *, now: float) -> str:
        expiry = int(now + self.ttl)
        return f"{expiry}.{_encode(self._mac(purpose, room, subject, expiry))}"

    def verify(
        self, token: str | None, purpose: TokenPurpose, room: str, subject: str = "", *, now: float
    ) -> None:
        """Raise TokenError unless `token` was issued for exactly this and has not expired."""
        if not token:
            raise TokenError("no token")
        expiry_text, dot, mac_text = token.partition(".")
        if not dot or not expiry_text.isdigit() or len(expiry_text) > 12 or len(mac_text) > 64:
            raise TokenError("malformed token")
        try:
            mac = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
        except (ValueError, TypeError) as exc:
            raise TokenError("malformed token") from exc
        expected = self._mac(purpose, room, subject, int(expiry_text))
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
            raise TokenError("token does not match")
        if int(expiry_text) < now:
            raise TokenError("token expired")


def load_secret(configured: str | None, spool_dir: Path) -> bytes:
    """The configured secret, else the one in the spool (generated there on first use)."""
    if configured is not None:
        return configured.encode("utf-8")
    path = spool_dir / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    if text:
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) < SECRET_BYTES:  # never replaced silently: URLs handed out rely on it
            raise ValueError(f"{path}: not a {SECRET_BYTES}-byte hex secret; fix or remove it")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    log.info("generated the web token secret in %s", path)
    return secret
