"""The providers this bot has, by name, and which one a server's jobs run on.

A server may bring its own key for a provider (bot.providers.accounts). Its jobs then run on an instance built with
that key by the factory from bot.providers.building (the bot's settings for everything else: base URL, model, concurrency),
cached per (server, provider, key version). A server's key also makes a provider available to that server when
the bot itself has no key for it.

A shot stays on the account it was sent with (`Job.account`): the provider only answers for a task to the account
that made it. So a key that is replaced or removed while shots sent with it are rendering is retired, not
dropped: its instance (and its sealed row, bot.providers.accounts) are kept until those shots end, then closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bot.domain import BOT_ACCOUNT
from bot.domain.errors import InvalidInputError
from bot.providers.base import FinalError, Provider

log = logging.getLogger(__name__)


# name, key fields -> a provider on the bot's settings with those keys (bot.providers.building.provider_factory)
ProviderFactory = Callable[[str, Mapping[str, str]], Provider]


@dataclass(frozen=True)
class ServerKey:
    """A server's stored key. `version` changes whenever it is set again; `fields()` opens it (it raises a
    friendly error when it cannot), and is only called when no instance for this version is cached."""

    version: str
    fields: Callable[[], Mapping[str, str]]


class ServerKeySource(Protocol):
    """Where servers' own keys are kept (bot.providers.accounts.SealedKeys)."""

    async def server_key(self, guild_id: int, provider: str) -> ServerKey | None: ...

    async def retired_key(self, guild_id: int, provider: str, version: str) -> ServerKey | None: ...

    async def purge_retired(self) -> list[tuple[int, str, str]]: ...

    async def keyed_providers(self, guild_id: int) -> list[str]: ...


class ProviderMissingError(InvalidInputError):
    """A provider this bot is not set up with (any more: an admin may have removed its key while shots were queued)."""


class AccountGoneError(FinalError):
    """The server key a shot was sent with is no longer kept (only when it was never in use by the shot)."""


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
        """`keyable`: the providers a server may bring its own key for (built by `factory` with the key read from
        `server_keys`; servers bring none without both)."""
        self._providers = dict(providers)
        self.default = default
        self.factory = factory
        self.keyable = frozenset(keyable)
        self._server_keys = server_keys
        self._per_guild: dict[tuple[int, str], tuple[str, Provider]] = {}  # (guild, name) -> (key version, it)
        self._retired: dict[tuple[int, str, str], Provider] = {}  # (guild, name, key version) -> it

    def register(self, provider: Provider) -> None:
        self._providers[provider.capabilities.name] = provider

    def names(self) -> list[str]:
        """The providers the bot itself has keys for."""
        return sorted(self._providers)

    async def names_for_guild(self, guild_id: int) -> list[str]:
        """The providers a server can use: the bot's, and those the server brought its own key for."""
        names = set(self._providers)
        if (server_keys := self._keys_in_use()) is not None:
            names.update(n for n in await server_keys.keyed_providers(guild_id) if n in self.keyable)
        return sorted(names)

    def get(self, name: str | None) -> Provider:
        """The bot's own provider (its keys)."""
        chosen = name or self.default
        provider = self._providers.get(chosen)
        if provider is None:
            available = ", ".join(self.names()) or "none"
            raise ProviderMissingError(
                f"The provider **{chosen}** is not set up on this bot (available: {available}). "
                "An admin adds provider keys in the bot's settings."
            )
        return provider

    async def for_guild(self, guild_id: int, name: str | None) -> Provider:
        """The provider a server's jobs run on: built with the server's own key when it has one, else the bot's."""
        return (await self.resolve(guild_id, name))[0]

    async def resolve(self, guild_id: int, name: str | None) -> tuple[Provider, str]:
        """`for_guild`, and which account that is: BOT_ACCOUNT, or the version of the server's key."""
        chosen = name or self.default
        if chosen in self.keyable and (server_keys := self._keys_in_use()) is not None:
            key = await server_keys.server_key(guild_id, chosen)
            if key is not None:
                return await self._server_instance(guild_id, chosen, key), key.version
            if (guild_id, chosen) in self._per_guild:
                await self.forget(guild_id, chosen)  # removed meanwhile
        return self.get(chosen), BOT_ACCOUNT

    async def for_job(self, guild_id: int, name: str, account: str | None) -> Provider:
        """The provider on the account a shot was sent with (`Job.account`; None: not pinned, the current one)."""
        if account is None:
            return await self.for_guild(guild_id, name)
        if account == BOT_ACCOUNT:
            return self.get(name)
        cached = self._per_guild.get((guild_id, name))
        if cached is not None and cached[0] == account:
            return cached[1]
        retired = self._retired.get((guild_id, name, account))
        if retired is not None:
            return retired
        if (server_keys := self._keys_in_use()) is not None:
            key = await server_keys.server_key(guild_id, name)
            if key is not None and key.version == account:
                return await self._server_instance(guild_id, name, key)
            key = await server_keys.retired_key(guild_id, name, account)
            if key is not None:
                assert self.factory is not None
                provider = self.factory(name, key.fields())
                self._retired[(guild_id, name, account)] = provider
                return provider
        raise AccountGoneError(
            f"The server's {name} key this shot was sent with is no longer kept, so the bot cannot reach the shot."
        )

    def build(self, name: str, fields: Mapping[str, str]) -> Provider:
        """A new provider with these keys (not cached: the caller closes it). For checking a key before it is kept."""
        if self.factory is None or name not in self.keyable:
            raise InvalidInputError(f"Servers cannot bring their own key for **{name}** on this bot.")
        return self.factory(name, fields)

    async def forget(self, guild_id: int, name: str) -> None:
        """The server's key for a provider changed or was removed: the next job builds anew. The old instance
        is retired: shots sent with it still use it, until `purge_retired` finds none left."""
        cached = self._per_guild.pop((guild_id, name), None)
        if cached is not None:
            version, provider = cached
            self._retired.setdefault((guild_id, name, version), provider)
        await self.purge_retired()

    async def purge_retired(self) -> None:
        """Drop the retired keys no shot needs any more, and close their instances."""
        if (server_keys := self._keys_in_use()) is None:
            return
        for guild_id, name, _version in await server_keys.purge_retired():
            log.info("guild %s: the server's previous %s key is no longer needed and was deleted", guild_id, name)
        # Only the keys retired when this pass begins are judged: one retired meanwhile (a key set again while
        # this runs) was not looked up, and its shots may still need it.
        for key in list(self._retired):
            if await server_keys.retired_key(*key) is None:
                provider = self._retired.pop(key, None)
                if provider is not None:  # a pass running alongside may have closed it already
                    await provider.close()

    def all(self) -> list[Provider]:
        """The bot's own providers."""
        return list(self._providers.values())

    def server_accounts(self) -> dict[tuple[int, str], Provider]:
        """The servers' own provider instances met so far, by (guild, provider): each is its own account, with
        its own concurrency, not the bot's."""
        return {key: provider for key, (_version, provider) in self._per_guild.items()}

    async def close(self) -> None:
        for provider in list(self._providers.values()):  # awaits inside: a register meanwhile must not break it
            await provider.close()
        cached, self._per_guild = list(self._per_guild.values()), {}
        for _version, provider in cached:
            await provider.close()
        retired, self._retired = list(self._retired.values()), {}
        for provider in retired:
            await provider.close()

    def _keys_in_use(self) -> ServerKeySource | None:
        """Where servers' keys are read, when servers can bring their own (a factory builds their instances)."""
        return self._server_keys if self.factory is not None else None

    async def _server_instance(self, guild_id: int, name: str, key: ServerKey) -> Provider:
        cached = self._per_guild.get((guild_id, name))
        if cached is not None and cached[0] == key.version:
            return cached[1]
        assert self.factory is not None
        provider = self.factory(name, key.fields())
        self._per_guild[(guild_id, name)] = (key.version, provider)
        if cached is not None:  # the key was set again: the old instance is retired
            self._retired.setdefault((guild_id, name, cached[0]), cached[1])
            await self.purge_retired()
        log.info("guild %s: %s runs with the server's own key", guild_id, name)
        return provider
