"""A fake Discord that the real, unmodified discord.py client talks to over 127.0.0.1.

Typical use::

    fake = FakeDiscord()
    await fake.start()
    alice = fake.add_user("alice")
    guild = fake.add_guild("Studio A", owner=alice)
    with fake.patch_discord_py():
        bot = make_bot()                      # any discord.py Client/Bot, token = fake.token
        task = asyncio.create_task(bot.start(fake.token))
        await fake.wait_for_ready()
        h = await fake.slash(guild, alice, "ping")
        await h.wait_settled()
        assert h.content == "ok"
        await bot.close()
    await fake.stop()

REST bodies the bot sends are validated against Discord's OpenAPI spec (``fake.validation_errors``).
"""

from .interactions import CallbackRecord, CommandUnavailable, FakeDiscordError, InteractionHandle
from .openapi import OpenAPISpec, load_spec
from .server import (
    DiscordPyPatch,
    FakeDiscord,
    RateLimitHit,
    RecordedFile,
    RecordedRequest,
    ValidationFailure,
)
from .world import (
    MIB,
    FakeChannel,
    FakeFile,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    MessageState,
    Overwrite,
    Perm,
)

__all__ = [
    "MIB",
    "CallbackRecord",
    "CommandUnavailable",
    "DiscordPyPatch",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeFile",
    "FakeGuild",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "InteractionHandle",
    "MessageState",
    "OpenAPISpec",
    "Overwrite",
    "Perm",
    "RateLimitHit",
    "RecordedFile",
    "RecordedRequest",
    "ValidationFailure",
    "load_spec",
]
