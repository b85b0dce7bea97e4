"""Read-only REST questions to Discord for `likeness doctor`, over discord.py's HTTP client (no gateway).

Errors come back as this module's own types, so the doctor (in bot/, which does not import discord) can tell
a refused token from an unreachable Discord from any other answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import aiohttp
import discord
from discord.http import HTTPClient, Route

T = TypeVar("T")

GUILD_PAGE = 200  # the most GET /users/@me/guilds returns at once
MAX_GUILD_PAGES = 25  # 5000 servers: beyond that the doctor reports what it saw


class DiscordUnreachable(Exception):
    """Discord could not be reached: DNS, connection, TLS or a timeout."""


class DiscordRefusedToken(Exception):
    """Discord answered 401 to the token."""


class DiscordAnswerError(Exception):
    """Discord answered with an error other than a refused token."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status


class DiscordProbe:
    """One HTTP session to Discord, logged in with the bot token. Use `async with`, then `login` first."""

    def __init__(self) -> None:
        self._http = HTTPClient(asyncio.get_running_loop())

    async def __aenter__(self) -> DiscordProbe:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._http.close()

    async def login(self, token: str) -> tuple[dict[str, Any], float]:
        """The bot user (`GET /users/@me`) and the seconds the answer took."""
        started = time.perf_counter()
        try:
            user = await self._http.static_login(token)
        except discord.LoginFailure:
            raise DiscordRefusedToken from None
        except Exception as error:
            raise _translated(error) from None
        return {"id": int(user["id"]), "name": user["username"], "bot": user.get("bot", False)}, (
            time.perf_counter() - started
        )

    async def application(self) -> dict[str, Any]:
        """`GET /applications/@me`: the application's id, flags, `bot_public`, `bot_require_code_grant` ..."""
        return await self._ask(Route("GET", "/applications/@me"))

    async def guilds(self) -> list[dict[str, Any]]:
        """Every server the bot is in (`GET /users/@me/guilds`, paged), each with the bot's `permissions` there
        (computed by Discord from @everyone and the bot's roles, channel overrides aside)."""
        found: list[dict[str, Any]] = []
        after: int | None = None
        for _ in range(MAX_GUILD_PAGES):
            page = cast(
                list[dict[str, Any]],
                await self._call(self._http.get_guilds(GUILD_PAGE, after=after, with_counts=False)),
            )
            found += page
            if len(page) < GUILD_PAGE:
                break
            after = int(page[-1]["id"])
        return found

    async def commands(self, application_id: int, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The registered slash commands: global, or one server's own."""
        if guild_id is None:
            found = await self._call(self._http.get_global_commands(application_id))
        else:
            found = await self._call(self._http.get_guild_commands(application_id, guild_id))
        return cast(list[dict[str, Any]], found)

    async def channel(self, channel_id: int) -> dict[str, Any]:
        """`GET /channels/{channel_id}`: its `name`, `type`, `guild_id` and `permission_overwrites` (403 or 404 when
        it is gone or hidden from the bot)."""
        return cast(dict[str, Any], await self._call(self._http.get_channel(channel_id)))

    async def guild(self, guild_id: int) -> dict[str, Any]:
        """`GET /guilds/{guild_id}`: its `name`, `owner_id` and `roles` (each with its `permissions`)."""
        return cast(dict[str, Any], await self._call(self._http.get_guild(guild_id, with_counts=False)))

    async def member(self, guild_id: int, user_id: int) -> dict[str, Any]:
        """`GET /guilds/{guild_id}/members/{user_id}`: the member's `roles` there."""
        return cast(dict[str, Any], await self._call(self._http.get_member(guild_id, user_id)))

    async def _ask(self, route: Route) -> Any:
        return await self._call(self._http.request(route))

    @staticmethod
    async def _call(pending: Awaitable[T]) -> T:
        try:
            return await pending
        except Exception as error:
            raise _translated(error) from None


def _translated(error: Exception) -> Exception:
    if isinstance(error, discord.HTTPException):
        if error.status == 401:
            return DiscordRefusedToken()
        return DiscordAnswerError(error.status, error.text)
    if isinstance(error, discord.RateLimited):
        return DiscordAnswerError(429, f"rate limited for {error.retry_after:.0f} s")
    if isinstance(error, aiohttp.ClientError | OSError | TimeoutError):
        return DiscordUnreachable(type(error).__name__)
    return error
