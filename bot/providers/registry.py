"""The providers this bot has, by name, and which one a server's jobs run on.

A server may bring its own key for a provider (bot.provider_keys). Its jobs then run on an instance built with
that key by the factory from bot.services (the bot's settings for everything else: base URL, model, concurrency),
cached per (server, provider, key version) and closed when the key changes, is removed, or the registry closes.
A server's key also makes a provider available to that server when the bot itself has no key for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bot.errors import InvalidInputError
from bot.providers.base import Provider

log = logging.getLogger(__name__)

# name, key fields -> a provider on the bot's settings with those keys (bot.services.provider_factory)
ProviderFactory = Callable[[str, Mapping[str, str]], Provider]


@dataclass(frozen=True)
class ServerKey:
    """A server's stored key. `version` changes whenever it is set again; `fields()` opens it (it raises a
    friendly error when it cannot), and is only called when no instance for this version is cached."""

    version: str
    fields: Callable[[], Mapping[str, str]]


class ServerKeySource(Protocol):
    """Where servers' own keys are kept (bot.provider_keys.ProviderKeys)."""

    async def server_key(self, guild_id: int, provider: str) -> ServerKey | None: ...

    async def keyed_providers(self, guild_id: int) -> list[str]: ...


class ProviderRegistry:
    def __init__(
        self,
        providers: dict[str, Provider],
        default: str,
        *,
        factory: ProviderFactory | None = None,
        keyable: Iterable[str] = (),
        server_keys: ServerKeySource | None = None,
    ) -> None:
        """`keyable`: the providers a server may bring its own key for (built by `factory`)."""
        self._providers = dict(providers)
        self.default = default
        self.factory = factory
        self.keyable = frozenset(keyable)
        self.server_keys = server_keys
        self._per_guild: dict[tuple[int, str], tuple[str, Provider]] = {}  # (guild, name) -> (key version, it)

    def register(self, provider: Provider) -> None:
        self._providers[provider.capabilities.name] = provider

    def names(self) -> list[str]:
        """The providers the bot itself has keys for."""
        return sorted(self._providers)

    async def names_for_guild(self, guild_id: int) -> list[str]:
        """The providers a server can use: the bot's, and those the server brought its own key for."""
        names = set(self._providers)
        if self._server_keys_on():
            assert self.server_keys is not None
            names.update(n for n in await self.server_keys.keyed_providers(guild_id) if n in self.keyable)
        return sorted(names)

    def get(self, name: str | None) -> Provider:
        """The bot's own provider (its keys)."""
        chosen = name or self.default
        provider = self._providers.get(chosen)
        if provider is None:
            available = ", ".join(self.names()) or "none"
            raise InvalidInputError(
                f"The provider **{chosen}** is not set up on this bot (available: {available}). "
                "An admin adds provider keys in the bot's settings."
            )
        return provider

    async def for_guild(self, guild_id: int, name: str | None) -> Provider:
        """The provider a server's jobs run on: built with the server's own key when it has one, else the bot's."""
        chosen = name or self.default
        if chosen in self.keyable and self._server_keys_on():
            assert self.server_keys is not None
            key = await self.server_keys.server_key(guild_id, chosen)
            if key is not None:
                return await self._server_instance(guild_id, chosen, key)
            await self.forget(guild_id, chosen)  # removed meanwhile: close what is left of it
        return self.get(chosen)

    def build(self, name: str, fields: Mapping[str, str]) -> Provider:
        """A new provider with these keys (not cached: the caller closes it). For checking a key before it is kept."""
        if self.factory is None or name not in self.keyable:
            raise InvalidInputError(f"Servers cannot bring their own key for **{name}** on this bot.")
        return self.factory(name, fields)

    async def forget(self, guild_id: int, name: str) -> None:
        """Close the server's instance of a provider (its key changed or was removed); the next job builds anew."""
        cached = self._per_guild.pop((guild_id, name), None)
        if cached is not None:
            await cached[1].close()

    def all(self) -> list[Provider]:
        """The bot's own providers."""
        return list(self._providers.values())

    def server_accounts(self) -> dict[tuple[int, str], Provider]:
        """The servers' own provider instances met so far, by (guild, provider): each is its own account, with
        its own concurrency, not the bot's."""
        return {key: provider for key, (_version, provider) in self._per_guild.items()}

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        cached, self._per_guild = list(self._per_guild.values()), {}
        for _version, provider in cached:
            await provider.close()

    def _server_keys_on(self) -> bool:
        return self.server_keys is not None and self.factory is not None

    async def _server_instance(self, guild_id: int, name: str, key: ServerKey) -> Provider:
        cached = self._per_guild.get((guild_id, name))
        if cached is not None and cached[0] == key.version:
            return cached[1]
        assert self.factory is not None
        provider = self.factory(name, key.fields())
        self._per_guild[(guild_id, name)] = (key.version, provider)
        if cached is not None:  # the key was set again: the old instance goes
            await cached[1].close()
        log.info("guild %s: %s runs with the server's own key", guild_id, name)
        return provider
