"""Sealing servers' keys: AES-256-GCM round trip, bound to server and provider, a fresh nonce every time;
LIKENESS_SECRET_KEY validated and never echoed; `likeness keygen`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bot.infra.config import SettingsError, load_settings
from bot.providers.secret_box import (
    FORMAT_V1,
    NONCE_BYTES,
    SecretBox,
    UnreadableSecretError,
    decode_key,
    generate_key,
)
from tests.support.cli import run_likeness

PLAIN = b'{"access_key":"ak-plain","secret_key":"sk-plain"}'


@pytest.fixture
def box() -> SecretBox:
    return SecretBox.from_setting(generate_key())


def test_round_trip(box: SecretBox) -> None:
    sealed = box.seal(PLAIN, guild_id=1, provider="kling")
    assert PLAIN not in sealed and sealed[:1] == FORMAT_V1
    assert len(sealed) == 1 + NONCE_BYTES + len(PLAIN) + 16  # version, nonce, ciphertext, tag
    assert box.open(sealed, guild_id=1, provider="kling") == PLAIN


def test_another_server_or_provider_does_not_open_it(box: SecretBox) -> None:
    sealed = box.seal(PLAIN, guild_id=1, provider="kling")
    with pytest.raises(UnreadableSecretError):
        box.open(sealed, guild_id=2, provider="kling")  # the row copied to another server
    with pytest.raises(UnreadableSecretError):
        box.open(sealed, guild_id=1, provider="fal")  # ... or to another provider


def test_another_key_does_not_open_it(box: SecretBox) -> None:
    sealed = box.seal(PLAIN, guild_id=1, provider="kling")
    with pytest.raises(UnreadableSecretError):
        SecretBox.from_setting(generate_key()).open(sealed, guild_id=1, provider="kling")


def test_a_changed_byte_does_not_open(box: SecretBox) -> None:
    sealed = bytearray(box.seal(PLAIN, guild_id=1, provider="kling"))
    sealed[-1] ^= 1
    with pytest.raises(UnreadableSecretError):
        box.open(bytes(sealed), guild_id=1, provider="kling")
    with pytest.raises(UnreadableSecretError):
        box.open(b"\x02" + bytes(sealed[1:]), guild_id=1, provider="kling")  # an unknown format
    with pytest.raises(UnreadableSecretError):
        box.open(b"", guild_id=1, provider="kling")


def test_every_seal_has_a_fresh_nonce(box: SecretBox) -> None:
    sealed = [box.seal(PLAIN, guild_id=1, provider="kling") for _ in range(50)]
    nonces = {s[1 : 1 + NONCE_BYTES] for s in sealed}
    assert len(nonces) == 50 and len(set(sealed)) == 50
    assert all(box.open(s, guild_id=1, provider="kling") == PLAIN for s in sealed)


def test_keys_are_32_random_bytes() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(base64.urlsafe_b64decode(first)) == 32 and decode_key(first) == base64.urlsafe_b64decode(first)
    assert decode_key(first.rstrip("=")) == decode_key(first)  # padding optional
    with pytest.raises(ValueError, match="32 bytes"):
        decode_key(base64.urlsafe_b64encode(b"x" * 16).decode())
    with pytest.raises(ValueError, match="base64"):
        decode_key("not base64 at all!")
    assert "hidden" in repr(SecretBox.from_setting(first))


def test_a_bad_secret_key_names_the_setting_and_is_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIKENESS_SECRET_KEY", "too-short-but-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LIKENESS_SECRET_KEY" in message and "likeness keygen" in message
    assert "too-short-but-secret" not in message
    monkeypatch.setenv("LIKENESS_SECRET_KEY", key := generate_key())
    settings = load_settings()
    assert settings.secret("secret_key") == key and key in settings.secrets()
    assert key not in repr(settings)
    monkeypatch.setenv("LIKENESS_SECRET_KEY", "")
    assert load_settings().secret_key is None


def test_keygen_prints_a_key_and_where_it_goes(tmp_path: Path) -> None:
    result = run_likeness(tmp_path, "keygen")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert len(decode_key(key)) == 32  # only the key on stdout: `KEY=$(likeness keygen)` works
    assert "LIKENESS_SECRET_KEY" in result.stderr
