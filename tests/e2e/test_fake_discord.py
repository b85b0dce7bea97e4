"""Tests of the fake Discord itself, driving a tiny real discord.py AutoShardedBot."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord.http import Route

from tests.support.fake_discord import (
    MIB,
    CommandUnavailable,
    FakeDiscord,
    FakeDiscordError,
    FakeGuild,
    FakeUser,
    Perm,
    load_spec,
)

# --- the bot under test ------------------------------------------------------------------------


class CounterView(discord.ui.View):
    def __init__(self, count: int = 0) -> None:
        super().__init__(timeout=None)
        self.count = count

    @discord.ui.button(label="+1", custom_id="counter:inc", style=discord.ButtonStyle.primary)
    async def inc(self, interaction: discord.Interaction, button: discord.ui.Button[CounterView]) -> None:
        self.count += 1
        await interaction.response.edit_message(content=f"count: {self.count}", view=self)

    @discord.ui.select(
        custom_id="counter:pick",
        options=[discord.SelectOption(label="Red", value="red"), discord.SelectOption(label="Blue", value="blue")],
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[CounterView]) -> None:
        await interaction.response.send_message(f"picked {select.values[0]}", ephemeral=True)


class BoardView(discord.ui.View):
    """A persistent view: registered with bot.add_view, so it survives restarts."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Refresh", custom_id="board:refresh")
    async def refresh(self, interaction: discord.Interaction, button: discord.ui.Button[BoardView]) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="board (refreshed)")


class Vote(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"vote:(?P<choice>[a-z]+)"):
    def __init__(self, choice: str) -> None:
        super().__init__(discord.ui.Button(label=choice, custom_id=f"vote:{choice}"))
        self.choice = choice

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Vote:
        return cls(match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"voted {self.choice}", ephemeral=True)


class Feedback(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Text", custom_id="feedback:text")
    mood: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Mood", custom_id="feedback:mood", required=False)

    def __init__(self) -> None:
        super().__init__(custom_id="feedback")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value} ({self.mood.value or 'no mood'})")


class TinyBot(commands.AutoShardedBot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05
        )
        self.seen: list[Any] = []
        self.release = asyncio.Event()
        self.errors: list[BaseException] = []

    async def setup_hook(self) -> None:
        self.add_view(BoardView())
        self.add_dynamic_items(Vote)
        tree = self.tree

        @tree.command(description="Answers ok")
        async def ping(interaction: discord.Interaction) -> None:
            self.seen.append(("ping", interaction.permissions.value, interaction.app_permissions.value))
            await interaction.response.send_message("ok")

        @tree.command(description="Thinks, then answers")
        async def slow(interaction: discord.Interaction, private: bool = False) -> None:
            await interaction.response.defer(thinking=True, ephemeral=private)
            await asyncio.sleep(0.01)
            await interaction.edit_original_response(content="done")

        @tree.command(description="Defers, then two follow-ups")
        async def chatty(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("first")
            await interaction.followup.send("secret", ephemeral=True)

        @tree.command(description="Defers publicly, then asks for an ephemeral follow-up")
        async def whisper(interaction: discord.Interaction, delete_first: bool = False) -> None:
            await interaction.response.defer(thinking=True)
            if delete_first:
                await interaction.delete_original_response()
            await interaction.followup.send("for your eyes only", ephemeral=True)

        @tree.command(description="Waits for the test, then answers")
        async def wait(interaction: discord.Interaction, defer: bool = False) -> None:
            try:
                if defer:
                    await interaction.response.defer()
                await self.release.wait()
                if defer:
                    await interaction.followup.send("late follow-up")
                else:
                    await interaction.response.send_message("late answer")
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @tree.command(description="Mods only")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("admin ok")

        character = app_commands.Group(name="character", description="Characters")
        view = app_commands.Group(name="view", description="Views", parent=character)

        @character.command(name="create", description="Create a character")
        async def create(
            interaction: discord.Interaction,
            name: str,
            age: int,
            height: float,
            public: bool,
            friend: discord.Member,
            where: discord.TextChannel,
            team: discord.Role,
            sheet: discord.Attachment | None = None,
        ) -> None:
            data = await sheet.read() if sheet else b""
            self.seen.append((name, age, height, public, friend.id, where.id, team.id, data))
            await interaction.response.send_message(f"created {name}", ephemeral=True)

        @character.command(name="show", description="Show a character")
        async def show(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(f"showing {name}")

        @show.autocomplete("name")
        async def show_name(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            names = ["Ava", "Avery", "Bo"]
            return [app_commands.Choice(name=n, value=n.lower()) for n in names if n.lower().startswith(current)]

        @view.command(name="add", description="Add a view")
        @app_commands.choices(angle=[app_commands.Choice(name="Front", value="front")])
        async def view_add(interaction: discord.Interaction, angle: str) -> None:
            await interaction.response.send_message(f"view {angle}")

        tree.add_command(character)

        @tree.command(description="A counter with buttons")
        async def menu(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("count: 0", view=CounterView())

        @tree.command(description="Opens a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Feedback())

        @tree.command(description="Posts a render to the channel")
        async def post(interaction: discord.Interaction, size: int = 16) -> None:
            await interaction.response.defer(ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            file = discord.File(io.BytesIO(b"\x89PNG" + b"x" * size), filename="render.png")
            embed = discord.Embed(title="Render").set_image(url="attachment://render.png")
            try:
                msg = await interaction.channel.send("here", file=file, embed=embed)
            except discord.HTTPException as exc:
                self.errors.append(exc)
                await interaction.followup.send(f"failed {exc.status} {exc.code}")
                return
            self.seen.append(await msg.attachments[0].read())
            await msg.edit(content="here (edited)")
            await interaction.followup.send("posted")

        @tree.command(description="Posts the persistent board")
        async def board(interaction: discord.Interaction) -> None:
            assert isinstance(interaction.channel, discord.TextChannel)
            view = BoardView()
            view.add_item(Vote("yes"))
            await interaction.channel.send("board", view=view)
            await interaction.response.send_message("board posted", ephemeral=True)

        @tree.command(description="Says something in a channel")
        async def say(interaction: discord.Interaction, text: str, channel_id: str | None = None) -> None:
            target = int(channel_id) if channel_id else interaction.channel_id
            assert target is not None
            try:
                await self.get_partial_messageable(target).send(text)
            except discord.HTTPException as exc:
                self.errors.append(exc)
            await interaction.response.send_message("said", ephemeral=True)

        await tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if not message.author.bot:
            self.seen.append(("message", message.author.id, message.content))


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeDiscord]:
    """A started fake with discord.py pointed at it; ``indirect`` params are FakeDiscord kwargs."""
    options: dict[str, Any] = getattr(request, "param", {})
    fake = FakeDiscord(validate_responses=True, **options)
    await fake.start()
    with fake.patch_discord_py():
        yield fake
    await fake.stop()
    # The fake's own answers must match Discord's spec too.
    assert fake.response_errors == []


@pytest.fixture
def world(fake: FakeDiscord) -> tuple[FakeGuild, FakeUser, FakeUser]:
    alice = fake.add_user("alice")
    bob = fake.add_user("bob")
    guild = fake.add_guild("Studio A", owner=alice)
    fake.add_member(guild, bob)
    return guild, alice, bob


@asynccontextmanager
async def running(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    bot = TinyBot()
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_for_ready(timeout=5)
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        yield bot
    finally:
        await bot.close()
        await task


# --- login, gateway, sync ------------------------------------------------------------------------


async def test_bot_logs_in_identifies_and_syncs(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake) as bot:
        assert bot.user is not None and bot.user.id == fake.bot_user.id
        assert bot.application_id == fake.application_id
        cached = bot.get_guild(guild.id)
        assert cached is not None and cached.owner_id == alice.id
        assert cached.me is not None and cached.me.guild_permissions.send_messages
        assert [c.id for c in cached.text_channels] == [guild.channel_id]
        names = {c["name"] for c in fake.commands()}
        assert {"ping", "character", "menu", "feedback"} <= names
        character = next(c for c in fake.commands() if c["name"] == "character")
        assert int(character["id"]) > 0 and character["application_id"] == str(fake.application_id)
        assert {o["name"]: o["type"] for o in character["options"]} == {"create": 1, "show": 1, "view": 2}
        assert {c.name for c in await bot.tree.fetch_commands()} == names
        # Guild commands: synced per guild, carrying its guild_id, and preferred over global ones.
        bot.tree.copy_global_to(guild=discord.Object(guild.id))
        await bot.tree.sync(guild=discord.Object(guild.id))
        local = fake.commands(guild)
        assert {c["name"] for c in local} == names and {c["guild_id"] for c in local} == {str(guild.id)}
        h = await fake.slash(guild, alice, "ping")
        await h.wait_settled()
        assert h.payload["data"]["guild_id"] == str(guild.id)
    routes = [(r.method, r.route) for r in fake.requests]
    assert ("GET", "/users/@me") in routes and ("GET", "/gateway/bot") in routes
    assert ("PUT", "/applications/{application_id}/commands") in routes
    assert fake.validation_errors == [] and fake.unimplemented == []


async def test_wrong_token_is_refused_like_discord(fake: FakeDiscord) -> None:
    bot = TinyBot()
    with pytest.raises(discord.LoginFailure):
        await bot.login("not-the-token")
    await bot.close()
    assert fake.requests[-1].status == 401
    assert fake.requests[-1].response == {"message": "401: Unauthorized", "code": 0}


async def test_restart_reidentifies_on_the_same_world(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake):
        first = await fake.slash(guild, alice, "ping")
        await first.wait_settled()
    assert fake.connections == []
    async with running(fake):
        second = await fake.slash(guild, alice, "ping")
        await second.wait_settled()
        assert second.content == "ok"
    assert len(fake.sessions) == 2


async def test_reconnect_resumes_the_session(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake) as bot:
        resumed = asyncio.Event()

        async def on_resumed() -> None:
            resumed.set()

        bot.add_listener(on_resumed)
        fake.reconnect_clients()
        await asyncio.wait_for(resumed.wait(), 5)
        await fake.wait_for_ready()
        h = await fake.slash(guild, alice, "ping")
        await h.wait_settled()
    assert h.content == "ok"
    assert len(fake.sessions) == 1  # resumed, not identified again


class ImpatientBot(TinyBot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every IDENTIFY but the first; the fake needs no pause."""


@pytest.mark.parametrize("fake", [{"shard_count": 2}], indirect=True)
async def test_two_shards_split_the_guilds(fake: FakeDiscord) -> None:
    alice = fake.add_user("alice")
    guilds = [fake.add_guild(f"Guild {n}", owner=alice) for n in range(4)]
    bot = ImpatientBot()
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_for_ready()
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        assert sorted(c.shard for c in fake.connections) == [(0, 2), (1, 2)]
        assert {g.id for g in bot.guilds} == {g.id for g in guilds}
        for guild in guilds:
            cached = bot.get_guild(guild.id)
            assert cached is not None and cached.shard_id == (guild.id >> 22) % 2
            h = await fake.slash(guild, alice, "ping")
            await h.wait_settled()
            assert h.content == "ok"
    finally:
        await bot.close()
        await task


# --- slash commands ------------------------------------------------------------------------------


async def test_ping_answers_ok_and_is_visible_in_the_channel(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake):
        h = await fake.slash(guild, alice, "ping")
        response = await h.wait_response()
        await h.wait_settled()
    assert response.accepted and response.type == 4
    assert h.callback_type == 4 and not h.ephemeral
    assert h.content == "ok"
    assert 0 <= h.ack_latency < 1
    [message] = fake.channel_messages(guild.channel_id)
    assert message is h.message and message.content == "ok" and message.edits == 0
    assert message.interaction_metadata is not None and message.interaction_metadata["user"]["id"] == str(alice.id)


async def test_member_permissions_follow_roles_and_ownership(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, bob = world
    carol = fake.add_user("carol")
    mods = fake.add_role(guild, "Mods", permissions=discord.Permissions(manage_guild=True).value)
    fake.add_member(guild, carol, roles=[mods])
    async with running(fake) as bot:
        for user in (alice, bob, carol):
            await (await fake.slash(guild, user, "ping")).wait_settled()
        with pytest.raises(CommandUnavailable):
            await fake.slash(guild, bob, "admin")
        h = await fake.slash(guild, carol, "admin")
        await h.wait_settled()
        assert h.content == "admin ok"
    pings = [seen for seen in bot.seen if seen[0] == "ping"]
    owner, member, mod = (discord.Permissions(p) for _, p, _ in pings)
    assert owner.administrator and owner.value == Perm.ALL
    assert member.send_messages and not member.manage_guild
    assert mod.manage_guild and not mod.administrator
    app_permissions = discord.Permissions(pings[0][2])
    assert app_permissions.send_messages and not app_permissions.administrator


async def test_deferred_then_edited(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake):
        h = await fake.slash(guild, alice, "slow", {"private": True})
        await h.wait_response()
        assert h.callback_type == 5 and h.ephemeral
        await h.wait_settled()
    assert h.message is not None and not h.message.loading and h.message.ephemeral
    assert h.content == "done"
    assert h.message.edits == 0  # filling in the "thinking..." message is not an edit


async def test_followups_first_replaces_thinking_message(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake):
        h = await fake.slash(guild, alice, "chatty")
        await h.wait_settled()
        await fake.wait_until(lambda: len(h.followups) == 2, 5, "two follow-ups")
    first, second = h.followups
    assert first is h.message and first.content == "first" and not first.ephemeral
    assert second.content == "secret" and second.ephemeral
    assert h.content == "first"
    public = fake.channel_messages(guild.channel_id, include_ephemeral=False)
    assert [m.content for m in public] == ["first"]


async def test_first_followup_after_a_public_deferral_is_public_whatever_it_asks(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    """Discord: the first follow-up after a deferral edits the deferred message and keeps the deferral's flags (an
    ephemeral flag is ignored); once the deferred message is deleted, a follow-up is a new message with its own."""
    guild, alice, _ = world
    async with running(fake):
        h = await fake.slash(guild, alice, "whisper")
        await h.wait_settled()
        [followup] = h.followups
        assert followup is h.message and not followup.ephemeral and not followup.loading
        assert [m.content for m in fake.channel_messages(guild.channel_id, include_ephemeral=False)] == [
            "for your eyes only"
        ]

        h = await fake.slash(guild, alice, "whisper", {"delete_first": True})
        await h.wait_settled()
        await fake.wait_until(lambda: bool(h.followups), 5, "the follow-up")
        [followup] = h.followups
        assert followup is not h.message and followup.ephemeral and h.message is not None and h.message.deleted
    public = [m for m in fake.channel_messages(guild.channel_id, include_ephemeral=False) if not m.deleted]
    assert [m.content for m in public] == ["for your eyes only"]  # the first command's, nothing of the second


async def test_subcommands_groups_and_every_option_type(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, bob = world
    team = fake.add_role(guild, "Team")
    renders = fake.add_channel(guild, "renders")
    sheet = fake.upload(b"character sheet", "sheet.txt", "text/plain")
    async with running(fake) as bot:
        h = await fake.slash(
            guild,
            alice,
            "character create",
            {
                "name": "Ava",
                "age": 30,
                "height": 1.7,
                "public": True,
                "friend": bob,
                "where": renders,
                "team": team,
                "sheet": sheet,
            },
        )
        await h.wait_settled()
        assert h.content == "created Ava" and h.ephemeral
        nested = await fake.slash(guild, alice, "character view add", {"angle": "front"})
        await nested.wait_settled()
        assert nested.content == "view front"
    assert bot.seen == [("Ava", 30, 1.7, True, bob.id, renders, team.id, b"character sheet")]
    sent = h.payload["data"]
    assert sent["options"][0]["type"] == 1 and sent["options"][0]["name"] == "create"
    assert {o["name"]: o["type"] for o in sent["options"][0]["options"]} == {
        "name": 3,
        "age": 4,
        "height": 10,
        "public": 5,
        "friend": 6,
        "where": 7,
        "team": 8,
        "sheet": 11,
    }
    assert nested.payload["data"]["options"][0] == {
        "type": 2,
        "name": "view",
        "options": [{"type": 1, "name": "add", "options": [{"name": "angle", "type": 3, "value": "front"}]}],
    }


async def test_attachment_option_from_bytes(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, bob = world
    team = fake.add_role(guild, "Team")
    options = {"name": "Bo", "age": 1, "height": 2, "public": False, "friend": bob, "where": guild.channel_id}
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "character create", {**options, "team": team, "sheet": b"raw"})
        await h.wait_settled()
    assert bot.seen[0][-1] == b"raw"


async def test_unknown_commands_and_options_fail_clearly(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake):
        with pytest.raises(FakeDiscordError, match="no slash command /nope"):
            await fake.slash(guild, alice, "nope")
        with pytest.raises(FakeDiscordError, match="no subcommand or group 'delete'"):
            await fake.slash(guild, alice, "character delete")
        with pytest.raises(FakeDiscordError, match="has no option 'colour'"):
            await fake.slash(guild, alice, "character show", {"name": "x", "colour": "red"})
        with pytest.raises(FakeDiscordError, match="required option"):
            await fake.slash(guild, alice, "character show", {})
        with pytest.raises(FakeDiscordError, match="must be one of"):
            await fake.slash(guild, alice, "character view add", {"angle": "back"})
        with pytest.raises(FakeDiscordError, match="is a group"):
            await fake.slash(guild, alice, "character")


async def test_autocomplete(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake):
        choices = await fake.autocomplete(guild, alice, "character show", {"name": "av"}, focused="name")
        nothing = await fake.autocomplete(guild, alice, "character show", {"name": "zz"}, focused="name")
    assert choices == [{"name": "Ava", "value": "ava"}, {"name": "Avery", "value": "avery"}]
    assert nothing == []


# --- components and modals -----------------------------------------------------------------------


def keeps(bot: discord.Client, custom_id: str) -> bool:
    """Whether discord.py keeps a (non-persistent) view item or modal with this custom id. It stores them only once
    Discord has answered the message or callback that showed them; a person always takes longer to click."""
    store = bot._connection._view_store  # pyright: ignore[reportPrivateUsage]
    views = store._views.values()  # pyright: ignore[reportPrivateUsage]
    return custom_id in store._modals or any(cid == custom_id for items in views for _kind, cid in items)  # pyright: ignore[reportPrivateUsage]


async def test_button_updates_the_message_and_select_answers(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, bob = world
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "menu")
        await h.wait_settled()
        message = h.message
        assert message is not None and message.custom_ids == ["counter:inc", "counter:pick"]
        await fake.wait_until(lambda: keeps(bot, "counter:inc"), 5, "the bot to keep the view")
        for expected in ("count: 1", "count: 2"):
            press = await fake.press(message, "counter:inc", bob)
            await press.wait_settled()
            assert press.callback_type == 7 and press.content == expected
        picked = await fake.press(message, "counter:pick", bob, values=["blue"])
        await picked.wait_settled()
        elsewhere = fake.add_guild("Elsewhere", owner=bob)
        replayed = await fake.press(message, "counter:pick", bob, values=["red"], guild=elsewhere)
        await replayed.wait_settled()
        assert replayed.payload["guild_id"] == str(elsewhere.id)
        assert replayed.payload["channel_id"] == str(elsewhere.channel_id)
        with pytest.raises(FakeDiscordError, match="no component"):
            await fake.press(message, "counter:dec", bob)
    assert message.content == "count: 2" and message.edits == 2
    assert [state.content for state in message.history] == ["count: 0", "count: 1"]
    assert picked.content == "picked blue" and picked.ephemeral
    assert picked.payload["message"]["id"] == str(message.id)


async def test_persistent_view_and_dynamic_item_survive_a_restart(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, bob = world
    async with running(fake):
        await (await fake.slash(guild, alice, "board")).wait_settled()
    [board] = [m for m in fake.channel_messages(guild.channel_id) if m.content == "board"]
    async with running(fake):  # a new process: only add_view/add_dynamic_items know the buttons
        refresh = await fake.press(board, "board:refresh", bob)
        await refresh.wait_settled()
        vote = await fake.press(board.id, "vote:yes", bob)
        await vote.wait_settled()
    assert refresh.callback_type == 6 and board.content == "board (refreshed)" and board.edits == 1
    assert vote.content == "voted yes" and vote.ephemeral


async def test_modal_submit(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake) as bot:
        opened = await fake.slash(guild, alice, "feedback")
        await opened.wait_settled()
        assert opened.callback_type == 9 and opened.modal is not None
        assert opened.modal["custom_id"] == "feedback"
        await fake.wait_until(lambda: keeps(bot, "feedback"), 5, "the bot to keep the modal")
        with pytest.raises(FakeDiscordError, match="no field"):
            await fake.submit_modal(guild, alice, "feedback", {"feedback:nope": "x"})
        h = await fake.submit_modal(guild, alice, "feedback", {"feedback:text": "lovely"})
        await h.wait_settled()
    assert h.content == "thanks: lovely (no mood)"
    assert h.message is not None and h.message.interaction_metadata is not None
    assert h.message.interaction_metadata["type"] == 5


# --- channel messages and files ------------------------------------------------------------------


async def test_channel_message_with_file_edit_and_cdn(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "post")
        await h.wait_settled()
        await fake.wait_until(lambda: bool(h.followups), 5, "the follow-up")
    [post] = [m for m in fake.channel_messages(guild.channel_id) if not m.ephemeral]
    assert post.content == "here (edited)" and post.edits == 1
    [(filename, data, content_type)] = post.attachments
    assert filename == "render.png" and content_type == "image/png" and data.startswith(b"\x89PNG")
    assert bot.seen == [data]  # the bot downloaded it from the fake CDN
    assert post.embeds[0]["image"]["url"].startswith(fake.base_url + "/attachments/")
    assert post.history[0].attachments == post.attachments  # the edit kept the file
    create = fake.requests_to("POST", "/channels/{channel_id}/messages")[0]
    assert create.json["attachments"] == [{"id": 0, "filename": "render.png"}]
    assert create.files[0].filename == "render.png" and create.files[0].data == data
    assert h.content == "posted"


async def test_upload_over_the_guild_limit_is_refused(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    guild.upload_limit = 1 * MIB
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "post", {"size": MIB + 1})
        await h.wait_settled()
    assert h.content == "failed 413 40005"
    assert isinstance(bot.errors[0], discord.HTTPException) and bot.errors[0].code == 40005
    assert not [m for m in fake.channel_messages(guild.channel_id) if m.attachments]


async def test_hidden_or_unknown_channel_is_unknown_channel(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    hidden = fake.add_channel(guild, "staff", visible_to_bot=False)
    async with running(fake) as bot:
        for target in (hidden, 1234):
            await (await fake.slash(guild, alice, "say", {"text": "hi", "channel_id": str(target)})).wait_settled()
    assert [(e.status, e.code) for e in bot.errors if isinstance(e, discord.HTTPException)] == [
        (404, 10003),
        (404, 10003),
    ]
    assert fake.channel_messages(hidden) == []


async def test_member_messages_and_the_message_content_intent(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, _, bob = world
    async with running(fake) as bot:
        await fake.user_message(guild, bob, "hello bot")
        await fake.user_message(guild, bob, f"<@{fake.bot_user.id}> hello")
        await fake.wait_until(lambda: len(bot.seen) == 2, 5, "on_message")
    # TinyBot has no MESSAGE_CONTENT intent: Discord blanks messages that do not mention it.
    assert bot.seen == [("message", bob.id, ""), ("message", bob.id, f"<@{fake.bot_user.id}> hello")]


# --- interaction rules: double ack, deadline, token lifetime -------------------------------------


async def test_second_answer_is_already_acknowledged(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    """Two bot processes on one token (a classic deploy bug): both answer, Discord takes one."""
    guild, alice, _ = world
    async with running(fake), running(fake):
        h = await fake.slash(guild, alice, "ping")
        await fake.wait_until(lambda: len(h.callbacks) == 2, 5, "both answers")
    accepted, rejected = h.callbacks
    assert accepted.accepted and not rejected.accepted
    assert (rejected.status, rejected.error) == (
        400,
        {"code": 40060, "message": "Interaction has already been acknowledged."},
    )
    assert len(fake.channel_messages(guild.channel_id)) == 1


async def test_answer_after_the_deadline_is_unknown_interaction(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    fake.interaction_deadline = 0.05
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "wait")
        await asyncio.sleep(0.1)
        assert h.timed_out
        bot.release.set()
        response = await h.wait_response()
        await fake.wait_until(lambda: bool(bot.errors), 5, "the bot to see the error")
    assert not response.accepted and response.status == 404 and h.callback_status == 404
    assert response.error == {"message": "Unknown interaction", "code": 10062}
    assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
    assert fake.channel_messages(guild.channel_id) == []


async def test_followup_after_token_expiry_is_invalid_webhook_token(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, alice, _ = world
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "wait", {"defer": True})
        await h.wait_response()
        h.expire_token()
        bot.release.set()
        await fake.wait_until(lambda: bool(bot.errors), 5, "the bot to see the error")
    assert isinstance(bot.errors[0], discord.HTTPException)
    assert (bot.errors[0].status, bot.errors[0].code) == (401, 50027)
    assert h.webhook_errors == [(401, {"message": "Invalid Webhook Token", "code": 50027})]
    assert not h.settled and h.message is not None and h.message.loading


# --- rate limits, validation, recording ----------------------------------------------------------


@pytest.mark.parametrize("global_", [False, True])
async def test_rate_limits_are_retried_by_the_bot(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser], global_: bool
) -> None:
    guild, alice, _ = world
    fake.rate_limit("POST", r"/channels/\d+/messages", times=2, retry_after=0.05, global_=global_)
    async with running(fake) as bot:
        h = await fake.slash(guild, alice, "say", {"text": "hello"})
        await h.wait_settled()
    assert h.content == "said" and bot.errors == []
    assert [m.content for m in fake.channel_messages(guild.channel_id) if not m.ephemeral] == ["hello"]
    assert [(r.method, r.route, r.global_) for r in fake.rate_limited] == [
        ("POST", "/channels/{channel_id}/messages", global_)
    ] * 2
    posts = fake.requests_to("POST", "/channels/{channel_id}/messages")
    assert [r.status for r in posts] == [429, 429, 200]
    assert posts[0].response == {"message": "You are being rate limited.", "retry_after": 0.05, "global": global_}


async def test_numeric_snowflakes_accepted_only_where_discord_py_sends_them(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    """discord.py sends some snowflakes as JSON numbers, which Discord accepts but the spec's string
    SnowflakeType does not: the validator widens exactly those fields (NUMERIC_SNOWFLAKE_FIELDS)."""
    guild, alice, _ = world
    async with running(fake) as bot:
        channel = bot.get_channel(guild.channel_id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("plain text passes")
        await channel.send(file=discord.File(io.BytesIO(b"x"), filename="x.png"))
        await channel.send("reply", reference=first)
        await channel.send("hi", allowed_mentions=discord.AllowedMentions(users=[discord.Object(alice.id)]))
        # anywhere else a number is still refused, as is a negative number in a widened field
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=guild.channel_id)
        for body in ({"content": "x", "sticker_ids": [1]}, {"content": "x", "attachments": [{"id": -1}]}):
            with pytest.raises(discord.HTTPException) as refused:
                await bot.http.request(route, json=body)
            assert refused.value.code == 50035
    assert [e.error.split(":")[0] for e in fake.validation_errors] == [
        "['sticker_ids'][0]",
        "['attachments'][0]['id']",
    ]
    fake.validation_errors.clear()  # expected here; the fixture checks none are left


async def test_invalid_bodies_and_unknown_routes_are_reported(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, _, _ = world
    async with running(fake) as bot:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=guild.channel_id)
        with pytest.raises(discord.HTTPException) as invalid:
            await bot.http.request(route, json={"content": 5})
        with pytest.raises(discord.NotFound):
            await bot.http.request(Route("GET", "/channels/{channel_id}/mesages", channel_id=1))
    assert (invalid.value.status, invalid.value.code) == (400, 50035)
    body_error, route_error = fake.validation_errors
    assert body_error.route == "/channels/{channel_id}/messages" and body_error.body == {"content": 5}
    assert "['content']" in body_error.error and "is not of type" in body_error.error
    assert route_error.route is None and "not a route" in route_error.error


async def test_gateway_dispatch_and_cdn(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, _, _ = world
    async with running(fake) as bot:
        fake.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": fake.add_role(guild, "x").to_dict()})
        role = fake.add_role(guild, "Artists")  # world changes are dispatched too
        cached = bot.get_guild(guild.id)
        assert cached is not None
        await fake.wait_until(lambda: cached.get_role(role.id) is not None, 5, "GUILD_ROLE_CREATE")
    uploaded = fake.upload(b"bytes", "a.bin")
    async with aiohttp.ClientSession() as session, session.get(uploaded["url"]) as resp:
        assert resp.status == 200 and await resp.read() == b"bytes"


async def test_many_requests_all_answered(fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]) -> None:
    guild, alice, _ = world
    async with running(fake):
        handles = [await fake.slash(guild, alice, "ping") for _ in range(100)]
        for h in handles:
            await h.wait_settled()
    assert all(h.content == "ok" for h in handles)
    assert fake.validation_errors == []


def test_spec_routes_literal_segments_first() -> None:
    spec = load_spec()
    match = spec.match("/users/@me")
    assert match is not None and match.template == "/users/@me"
    match = spec.match("/webhooks/1/tok/messages/@original")
    assert match is not None and match.template.endswith("/@original")
    match = spec.match("/webhooks/1/tok/messages/2")
    assert match is not None and match.params == {"webhook_id": "1", "webhook_token": "tok", "message_id": "2"}
    assert spec.match("/no/such/route") is None
    assert spec.validate_schema("SnowflakeType", "123") is None
    assert spec.validate_schema("SnowflakeType", "12a") is not None


def test_validator_names_the_field() -> None:
    spec = load_spec()
    route = "/interactions/{interaction_id}/{interaction_token}/callback"
    button = {"type": 2, "style": 1, "label": "+1", "custom_id": "inc"}
    good = {"type": 4, "data": {"content": "ok", "components": [{"type": 1, "components": [button]}]}}
    bad_button = {**button, "style": "blue"}
    bad = {"type": 4, "data": {"content": "ok", "components": [{"type": 1, "components": [bad_button]}]}}
    assert spec.validate_request("POST", route, good) is None
    error = spec.validate_request("POST", route, bad)
    assert error is not None and error.startswith("['data']['components'][0]['components'][0]['style']")
    assert spec.validate_request("POST", route, {"type": 99}) is not None


async def test_enforce_nonce_returns_the_first_message(
    fake: FakeDiscord, world: tuple[FakeGuild, FakeUser, FakeUser]
) -> None:
    guild, _, _ = world
    async with running(fake) as bot:
        channel = bot.get_channel(guild.channel_id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("result", nonce="job-42")
        again = await channel.send("result again", nonce="job-42")
        other = await channel.send("other", nonce="job-43")
    assert again.id == first.id and other.id != first.id
    assert [m.content for m in fake.channel_messages(guild.channel_id)] == ["result", "other"]
