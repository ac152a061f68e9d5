"""Subscription tokens: what one browser connection may receive, sealed with
AES-256-GCM so that the browser can carry it but neither read nor change it.

A token is ``base64url(nonce || ciphertext)`` (no padding) of a compact JSON
claim ``{"t": [topics or patterns], "i": identity, "e": expiry (unix
seconds), "r": 1 (raw pass-through), "n": 1 (durable inbox)}``; the 12-byte
nonce is random per token and the claim is authenticated with the associated
data ``catbird.wire.v1``, so a token of another purpose or version, a flipped
bit or a token sealed with another key does not open. Every failure is one
:class:`InvalidToken`, on purpose: the HTTP answer is one 401 and which check
failed is nothing a browser needs to learn.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..events import topic_matcher

__all__ = ["InvalidToken", "TokenClaims", "TokenSealer"]

_AAD = b"catbird.wire.v1"
_NONCE_BYTES = 12
#: Topics (or patterns) one token may name: as many as one presence row set takes.
MAX_TOPICS = 100
#: Identities are stored in presence rows and inbox lookups (255 characters).
MAX_IDENTITY = 255


class InvalidToken(Exception):
    """A token that does not open with this Wire's secret, was changed, or expired."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token grants: topics or patterns, the identity (for
    presence and the durable inbox), when it expires (unix seconds), whether
    topics without a renderer pass through as they are (``raw``) and whether
    the connection replays the identity's durable inbox (``inbox``)."""

    topics: tuple[str, ...]
    identity: str | None = None
    expires_at: int | None = None
    raw: bool = False
    inbox: bool = False
    matchers: tuple[Callable[[str], bool], ...] = field(default=(), compare=False, repr=False)

    def allows(self, topic: str) -> bool:
        """Whether ``topic`` matches one of the token's topics or patterns."""
        return any(match(topic) for match in self.matchers)


def check_secret(secret: bytes) -> bytes:
    """``secret`` if it is 32 bytes (an AES-256 key), else ``ValueError``."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != 32:
        got = (
            f"{len(secret)} bytes"
            if isinstance(secret, (bytes, bytearray))
            else type(secret).__name__
        )
        raise ValueError(
            f"the Wire secret must be exactly 32 bytes (an AES-256 key), got {got}; "
            "make one with secrets.token_bytes(32) and keep it the same on every node "
            "(e.g. bytes.fromhex(os.environ['WIRE_SECRET']) of a 64-digit hex string)"
        )
    return bytes(secret)


def _claims(
    topics: Sequence[str], identity: str | None, expires_at: int | None, raw: bool, inbox: bool
) -> TokenClaims:
    if isinstance(topics, str):
        raise ValueError(f"topics must be a list of topics or patterns, not the string {topics!r}")
    topics = tuple(topics)
    if not 1 <= len(topics) <= MAX_TOPICS:
        raise ValueError(f"a token names 1 to {MAX_TOPICS} topics or patterns, got {len(topics)}")
    matchers = tuple(topic_matcher(t) for t in topics)
    if identity is not None and (
        not isinstance(identity, str) or not 1 <= len(identity) <= MAX_IDENTITY
    ):
        raise ValueError(f"identity must be a string of 1 to {MAX_IDENTITY} characters")
    if inbox and identity is None:
        raise ValueError("inbox=True needs an identity: the durable inbox is per identity")
    return TokenClaims(topics, identity, expires_at, raw, inbox, matchers)


class TokenSealer:
    """Mints and verifies tokens with one 32-byte secret."""

    __slots__ = ("_aead",)

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(check_secret(secret))

    def seal(
        self,
        topics: Sequence[str],
        *,
        identity: str | None = None,
        valid_for: timedelta | None = timedelta(hours=1),
        raw: bool = False,
        inbox: bool = False,
    ) -> str:
        """A token for ``topics``; ``valid_for=None`` never expires."""
        expires_at = None if valid_for is None else int(time.time() + valid_for.total_seconds())
        claims = _claims(topics, identity, expires_at, raw, inbox)
        doc: dict[str, object] = {"t": list(claims.topics)}
        if identity is not None:
            doc["i"] = identity
        if expires_at is not None:
            doc["e"] = expires_at
        if raw:
            doc["r"] = 1
        if inbox:
            doc["n"] = 1
        plain = json.dumps(doc, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, _AAD)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str, *, now: float | None = None) -> TokenClaims:
        """The claims of ``token``; :class:`InvalidToken` when it does not open,
        is malformed or has expired."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if len(raw) <= _NONCE_BYTES:
                raise InvalidToken("token too short")
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
            doc = json.loads(plain)
            claims = _claims(
                doc["t"], doc.get("i"), doc.get("e"), bool(doc.get("r")), bool(doc.get("n"))
            )
        except InvalidToken:
            raise
        except (InvalidTag, binascii.Error, ValueError, TypeError, KeyError, UnicodeError) as exc:
            raise InvalidToken("invalid token") from exc
        expires_at = claims.expires_at
        if expires_at is not None and expires_at <= (time.time() if now is None else now):
            raise InvalidToken("expired token")
        return claims
