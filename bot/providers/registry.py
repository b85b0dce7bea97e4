"""The providers this bot has, by name, and which one a server uses."""

from __future__ import annotations

from bot.errors import InvalidInputError
from bot.providers.base import Provider


class ProviderRegistry:
    def __init__(self, providers: dict[str, Provider], default: str) -> None:
        self._providers = dict(providers)
        self.default = default

    def register(self, provider: Provider) -> None:
        self._providers[provider.capabilities.name] = provider

    def names(self) -> list[str]:
        return sorted(self._providers)

    def get(self, name: str | None) -> Provider:
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
        """The provider a server's jobs run on (the bot's own for now)."""
        return self.get(name)

    def all(self) -> list[Provider]:
        return list(self._providers.values())

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
