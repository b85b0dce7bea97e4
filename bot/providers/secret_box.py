"""Sealing small secrets (servers' provider keys) for the database with a key from the bot's environment.

AES-256-GCM from the `cryptography` package: an audited AEAD, never hand-rolled. Each value gets a fresh random
96-bit nonce, and the associated data names the server and the provider, so a row copied to another server or
another provider does not open. A sealed value is `version byte || nonce || ciphertext+tag`; the version byte
leaves room to change the scheme (or rotate the key) later without guessing what an old row is.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.domain.errors import InvalidInputError

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
FORMAT_V1 = b"\x01"
_AAD_LABEL = "likeness/provider-key/v1"

NO_SECRET_KEY = "This bot's admin must set LIKENESS_SECRET_KEY to allow server keys; `likeness keygen` makes one."


class NoSecretKeyError(InvalidInputError):
    """The bot has no LIKENESS_SECRET_KEY, so it cannot keep server keys."""

    def __init__(self) -> None:
        super().__init__(NO_SECRET_KEY)


class UnreadableSecretError(Exception):
    """A sealed value did not open: the bot's key changed, or the row was altered or moved."""


def generate_key() -> str:
    """A fresh key for LIKENESS_SECRET_KEY: 32 random bytes, url-safe base64."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8)).decode("ascii")


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of a LIKENESS_SECRET_KEY value; ValueError (never echoing it) when it is not one."""
    value = text.strip()
    try:
        raw = base64.b64decode(value.encode("ascii") + b"=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("must be url-safe base64 (make one with `likeness keygen`)") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"must decode to {KEY_BYTES} bytes, not {len(raw)} (make one with `likeness keygen`)")
    return raw


def associated_data(guild_id: int, provider: str) -> bytes:
    return f"{_AAD_LABEL}|{guild_id}|{provider}".encode()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret box key is {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        return cls(decode_key(text))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: bytes, *, guild_id: int, provider: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, associated_data(guild_id, provider))

    def open(self, sealed: bytes, *, guild_id: int, provider: str) -> bytes:
        """The plaintext, or UnreadableSecretError when the key, the server or the provider is not the sealer's."""
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != FORMAT_V1:
            raise UnreadableSecretError("not a sealed value this bot knows")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, associated_data(guild_id, provider))
        except InvalidTag:
            raise UnreadableSecretError("the value does not open with this key for this server and provider") from None
