"""Bring your own key: a server's own provider keys, entered by its admins, sealed at rest, never shown again.

Only members with Manage Server may set or remove a key. The key's fields are checked for shape (never echoing
them), checked with the provider when it has a cheap authenticated call (`verify_key`), sealed with the bot's
LIKENESS_SECRET_KEY (bot.providers.secret_box) bound to the server and provider, and stored; all that is shown afterwards is
who set it and when. Two parts: `SealedKeys` keeps the sealed keys (the registry reads a server's key from it on
every job step, so a server's jobs run with its key, also after a restart), and `ProviderKeys` is what members
do with them (who may, the fields' shapes, the provider's check, the audit), on top of the store and the registry.

A key that is replaced or removed while shots sent with it are still rendering is kept aside, sealed, until they
end (storage.provider_keys `_retire`/`purge_retired`): the provider only shows a task to the account that made it,
so collecting those paid renders needs that key. The admin is told how many shots that is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.domain import Actor
from bot.domain.errors import InvalidInputError, NotAllowedError, NotFoundError
from bot.providers import catalog
from bot.providers.base import FinalError, ProviderError
from bot.providers.registry import ProviderRegistry, ServerKey
from bot.providers.secret_box import NO_SECRET_KEY, NoSecretKeyError, SecretBox, UnreadableSecretError
from bot.providers.spec import KeyField
from storage.provider_keys import ProviderKeyRepository, SealedProviderKey, key_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeySpec:
    provider: str
    label: str
    fields: tuple[KeyField, ...]


# The providers a server may bring its own key for: those whose spec has key fields (bot.providers.catalog).
KEY_SPECS: dict[str, KeySpec] = {
    spec.name: KeySpec(spec.name, spec.label, spec.key_fields) for spec in catalog.SPECS if spec.takes_keys
}


class ServerKeyError(FinalError, InvalidInputError):
    """A server's stored key cannot be used (it does not open). A FinalError, so a job using it fails with this
    message; an InvalidInputError, so a command using it answers with it."""


@runtime_checkable
class KeyCheck(Protocol):
    """A provider with a cheap authenticated call: FinalError when the provider refuses the key, RetryableError
    when it cannot tell now."""

    async def verify_key(self) -> None: ...


class AuditLog(Protocol):
    """storage.audit.AuditRepository."""

    async def record(self, *, guild_id: int, user_id: int, action: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class KeyStatus:
    """What is shown of a stored key: whose it is and when it was set, never the key."""

    provider: str
    label: str
    set_by: int
    set_at: float  # unix time


@dataclass(frozen=True)
class SavedKey:
    status: KeyStatus
    verified: bool | None  # None: the provider has no way to check a key; False: it could not be reached
    previous_in_use: int = 0  # shots sent with the key this one replaced, which keep it until they end


@dataclass(frozen=True)
class RemovedKey:
    status: KeyStatus
    in_use: int  # shots sent with it, which keep it until they end


def still_rendering_note(count: int, which: str) -> str:
    """What the admin is told about a replaced or removed key that shots still need ('' when none do)."""
    if count == 0:
        return ""
    shots = "1 shot" if count == 1 else f"{count} shots"
    return (
        f" {shots} already sent with {which} key will finish on it; the bot keeps it (sealed) only until then, "
        "then deletes it."
    )


def spec_of(provider: str) -> KeySpec:
    spec = KEY_SPECS.get(provider)
    if spec is None:
        names = ", ".join(s.label for s in KEY_SPECS.values())
        raise InvalidInputError(f"A server can bring its own key for {names}; not for **{provider}**.")
    return spec


def clean_fields(spec: KeySpec, fields: Mapping[str, str]) -> dict[str, str]:
    """The fields trimmed and checked for shape. Refusals name the field, never its value."""
    unknown = set(fields) - {f.name for f in spec.fields}
    if unknown:
        raise InvalidInputError(f"{spec.label} keys have no field {', '.join(sorted(unknown))}.")
    cleaned: dict[str, str] = {}
    for field in spec.fields:
        value = (fields.get(field.name) or "").strip()
        what = f"The {spec.label} {field.noun}"
        if not value:
            raise InvalidInputError(f"{what} is empty.")
        if not field.min_length <= len(value) <= field.max_length:
            raise InvalidInputError(
                f"{what} should be {field.min_length}-{field.max_length} characters long; "
                f"this one is {len(value)}. Copy it again from {spec.label}."
            )
        if not field.pattern.match(value):
            shape = f"look like {field.shape}" if field.shape else "have no spaces"
            raise InvalidInputError(f"{what} should {shape}. Copy it again from {spec.label}.")
        cleaned[field.name] = value
    return cleaned


def _scrub(text: str, secrets: Mapping[str, str]) -> str:
    for value in secrets.values():
        text = text.replace(value, "[redacted]")
    return text


def _status(row: SealedProviderKey) -> KeyStatus:
    return KeyStatus(row.provider, spec_of(row.provider).label, row.set_by, row.set_at)


class SealedKeys:
    """Servers' keys at rest: sealed with the bot's LIKENESS_SECRET_KEY (bound to the server and provider),
    written, removed (retired while shots still need them) and opened again. It holds no plaintext key, checks
    nothing about a member, and is what the registry reads servers' keys from (its ServerKeySource)."""

    def __init__(self, rows: ProviderKeyRepository, box: SecretBox | None) -> None:
        """`box` is None when the bot has no LIKENESS_SECRET_KEY: keys can then be removed, not set or used."""
        self._rows = rows
        self._box = box

    @property
    def enabled(self) -> bool:
        return self._box is not None

    async def put(
        self, guild_id: int, provider: str, fields: Mapping[str, str], set_by: int
    ) -> tuple[SealedProviderKey, str | None]:
        """Seal and keep a server's key: the stored row, and the version of the key it replaced (retired), if any."""
        if self._box is None:
            raise NoSecretKeyError()
        sealed = self._box.seal(
            json.dumps(dict(fields), separators=(",", ":")).encode(), guild_id=guild_id, provider=provider
        )
        return await self._rows.put(guild_id, provider, sealed, set_by)

    async def delete(self, guild_id: int, provider: str) -> SealedProviderKey | None:
        """Forget a server's key (retired while shots need it): the row it was, or None when there was none."""
        row = await self._rows.get(guild_id, provider)
        if row is None or not await self._rows.delete(guild_id, provider):
            return None
        return row

    async def for_guild(self, guild_id: int) -> list[SealedProviderKey]:
        return await self._rows.for_guild(guild_id)

    async def in_use(self, guild_id: int, provider: str, version: str | None) -> int:
        """Shots sent with that version of the server's key that still need it (0 for no key)."""
        if version is None:
            return 0
        return await self._rows.jobs_on(guild_id, provider, version)

    # ------------------------------------------------------------------ for the registry (ServerKeySource)

    async def server_key(self, guild_id: int, provider: str) -> ServerKey | None:
        row = await self._rows.get(guild_id, provider)
        if row is None or provider not in KEY_SPECS:
            return None
        # A new nonce per seal, so every set has a new digest: the registry replaces its instance.
        return ServerKey(version=key_version(row.ciphertext), fields=lambda: self._open(row))

    async def retired_key(self, guild_id: int, provider: str, version: str) -> ServerKey | None:
        row = await self._rows.retired(guild_id, provider, version)
        if row is None or provider not in KEY_SPECS:
            return None
        return ServerKey(version=version, fields=lambda: self._open(row))

    async def purge_retired(self) -> list[tuple[int, str, str]]:
        return await self._rows.purge_retired()

    async def keyed_providers(self, guild_id: int) -> list[str]:
        if self._box is None:
            return []
        return [row.provider for row in await self._rows.for_guild(guild_id)]

    def _open(self, row: SealedProviderKey) -> dict[str, str]:
        label = spec_of(row.provider).label
        if self._box is None:
            raise ServerKeyError(f"This server's {label} key cannot be used now. {NO_SECRET_KEY}")
        try:
            opened = json.loads(self._box.open(row.ciphertext, guild_id=row.guild_id, provider=row.provider))
        except (UnreadableSecretError, ValueError):
            log.warning(
                "guild %s: the server's %s key does not open with this LIKENESS_SECRET_KEY", row.guild_id, row.provider
            )
            raise ServerKeyError(
                f"This server's {label} key can no longer be read (the bot's LIKENESS_SECRET_KEY changed): "
                "a server admin must enter it again with `/settings key set`."
            ) from None
        if not isinstance(opened, dict):
            raise ServerKeyError(f"This server's {label} key is damaged: a server admin must enter it again.")
        return {str(k): str(v) for k, v in opened.items()}


class ProviderKeys:
    """What members do with their server's keys: who may, the fields' shapes, the provider's check, the audit."""

    def __init__(self, store: SealedKeys, registry: ProviderRegistry, *, audit: AuditLog | None = None) -> None:
        self._store = store
        self._registry = registry
        self._audit = audit

    @property
    def enabled(self) -> bool:
        return self._store.enabled

    def check_can_set(self, actor: Actor, provider: str) -> KeySpec:
        """The provider's key fields, if this member may set a key for it on this bot (asked before the form)."""
        self._ensure_manager(actor)
        spec = spec_of(provider)
        if not self._store.enabled:
            raise NoSecretKeyError()
        return spec

    async def set(self, actor: Actor, provider: str, fields: Mapping[str, str]) -> SavedKey:
        """Check, seal and keep a server's key for a provider; its next job steps use it."""
        spec = self.check_can_set(actor, provider)
        cleaned = clean_fields(spec, fields)
        verified = await self._verify(spec, cleaned)
        row, replaced = await self._store.put(actor.guild_id, provider, cleaned, actor.user_id)
        await self._registry.forget(actor.guild_id, provider)
        await self._record(actor, "provider_key.set", provider)
        log.info("guild %s: user %s set the server's %s key", actor.guild_id, actor.user_id, provider)
        return SavedKey(_status(row), verified, await self._store.in_use(actor.guild_id, provider, replaced))

    async def remove(self, actor: Actor, provider: str) -> RemovedKey:
        """Forget a server's key; new shots go back to the bot's key (if the bot has one)."""
        self._ensure_manager(actor)
        spec = spec_of(provider)
        row = await self._store.delete(actor.guild_id, provider)
        if row is None:
            raise NotFoundError(f"This server has no {spec.label} key of its own.")
        await self._registry.forget(actor.guild_id, provider)
        await self._record(actor, "provider_key.remove", provider)
        log.info("guild %s: user %s removed the server's %s key", actor.guild_id, actor.user_id, provider)
        return RemovedKey(
            _status(row), await self._store.in_use(row.guild_id, row.provider, key_version(row.ciphertext))
        )

    async def status(self, guild_id: int) -> list[KeyStatus]:
        """The server's own keys: which providers, set by whom, when."""
        return [_status(row) for row in await self._store.for_guild(guild_id) if row.provider in KEY_SPECS]

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _ensure_manager(actor: Actor) -> None:
        if not actor.manages_server:
            raise NotAllowedError("Only members with Manage Server can change the server's provider keys.")

    async def _verify(self, spec: KeySpec, fields: dict[str, str]) -> bool | None:
        """Ask the provider whether it takes the key, when it has a cheap way to say."""
        provider = self._registry.build(spec.provider, fields)
        try:
            if not isinstance(provider, KeyCheck):
                return None
            try:
                await provider.verify_key()
            except FinalError as error:
                said = _scrub(error.detail, fields)
                raise InvalidInputError(
                    f"{spec.label} did not accept this key{f' ({said})' if said else ''}: nothing was saved. "
                    f"Check it in your {spec.label} account and enter it again."
                ) from None
            except ProviderError as error:  # busy, unreachable: keep the key, say it was not checked
                log.info("could not check a %s key now: %s", spec.provider, _scrub(error.message, fields))
                return False
            return True
        finally:
            await provider.close()

    async def _record(self, actor: Actor, action: str, provider: str) -> None:
        if self._audit is not None:
            await self._audit.record(guild_id=actor.guild_id, user_id=actor.user_id, action=action, detail=provider)
