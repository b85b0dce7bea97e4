"""Character cards through the fake Discord: `/character export` and `/character import`, in any server."""

from __future__ import annotations

from typing import Any

from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeUser


async def run(
    fake: FakeDiscord, guild: FakeGuild, user: FakeUser, command: str, options: dict[str, Any], wait: float = 10
) -> Any:
    h = await fake.slash(guild, user, command, options)
    await h.wait_settled(timeout=wait)
    return h


async def export(fake: FakeDiscord, guild: FakeGuild, user: FakeUser, name: str = "Ava") -> Any:
    return await run(fake, guild, user, "character export", {"character": name})


async def import_card(
    fake: FakeDiscord,
    guild: FakeGuild,
    user: FakeUser,
    data: bytes,
    *,
    filename: str = "Ava.likeness.zip",
    name: str | None = None,
    size: int | None = None,
) -> Any:
    attachment = fake.upload(data, filename, "application/zip")
    if size is not None:
        attachment["size"] = size
    options: dict[str, Any] = {"card": attachment} | ({"name": name} if name is not None else {})
    h = await run(fake, guild, user, "character import", options, 30)
    if h.content.startswith("📥 Imported"):
        await fake.wait_until(lambda: len(h.followups) >= 1, 10, "the public announcement")
    return h
