"""Limits and moderation as members and admins meet them: cooldown, channels, block lists, the NSFW gate,
provider refusals, draft/final, manager roles, and the audit log."""

from __future__ import annotations

import dataclasses

from bot.domain import JobState
from bot.providers.base import FinalError
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.scripted_provider import Backend
from tests.support.shots import fields, is_state, job_total, queued_id, result_of, run, scripted, shot, status_of
from tests.support.waiting import eventually, until

BLOCKED = "This server's block list does not allow the {} you wrote. Change the wording and try again."


async def test_cooldown_between_a_members_shots(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    h = await run(fake, world, world.alice, "settings limits", {"cooldown": 60})
    assert h.content.startswith("Limits: 60 s cooldown;")
    queued_id(await shot(fake, world, "first"))
    h = await shot(fake, world, "too soon")
    assert h.ephemeral and h.content.startswith(
        "Slow down a little: this server allows one shot every 60 s per member."
    )
    assert "Try again in 6" in h.content or "Try again in 5" in h.content  # ~60 s left, counted down
    queued_id(await shot(fake, world, "bob is not cooling down", user=world.bob))


async def test_generation_only_in_allowed_channels(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    studio = fake.add_channel(world.studio_a, "renders")
    h = await run(fake, world, world.mo, "settings channels", {"action": "add", "channel": studio})
    assert h.content == f"Shots and sheets can be made only in <#{studio}>."

    h = await shot(fake, world, "in general")
    assert h.ephemeral and h.content == f"Shots and sheets can be made only in <#{studio}> in this server."
    h = await fake.slash(
        world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "here", "provider": "scripted"}, studio
    )
    await h.wait_settled(timeout=30)
    queued_id(h)
    h = await fake.slash(world.studio_a, world.alice, "sheet", {"character": "Ava", "generate": True})
    await h.wait_settled(timeout=30)
    assert h.content == f"Shots and sheets can be made only in <#{studio}> in this server."
    # the plain sheet too (the README: where shots and sheets may be generated), refused before any public reply
    h = await run(fake, world, world.alice, "sheet", {"character": "Ava"})
    assert h.ephemeral and h.callback_type == 4
    assert h.content == f"Shots and sheets can be made only in <#{studio}> in this server."
    assert runner.bot is not None
    ava = await runner.bot.services.storage.characters.get_by_name(world.studio_a.id, "Ava")
    assert (
        ava is not None and await runner.bot.services.storage.sheets.get(world.studio_a.id, ava.id, ava.version) is None
    )
    assert not [m for m in fake.channel_messages(world.studio_a.channel_id) if "character sheet" in m.content]
    h = await fake.slash(world.studio_a, world.alice, "sheet", {"character": "Ava"}, studio)
    await h.wait_settled(timeout=30)
    assert "character sheet" in h.content and not h.ephemeral

    await run(fake, world, world.mo, "settings channels", {"action": "clear"})
    queued_id(await shot(fake, world, "anywhere again"))


async def test_buttons_that_generate_follow_the_channel_allow_list(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    job_id = queued_id(await shot(fake, world, "waves"))
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result in #general")
    [result] = result_of(fake, world, job_id)
    studio = fake.add_channel(world.studio_a, "renders")
    await run(fake, world, world.mo, "settings channels", {"action": "add", "channel": studio})
    refusal = f"Shots and sheets can be made only in <#{studio}> in this server."

    assert runner.bot is not None
    before = len(await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id))
    for action in ("reroll", "next", "edit"):  # refused at the press: no form to type into in vain
        press = await fake.press(result, f"likeness:job:{action}:{job_id}", world.alice)
        await press.wait_settled()
        assert press.modal is None and press.ephemeral and press.content == refusal, (action, press.content)
    assert len(await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id)) == before  # nothing generated


async def test_settings_stay_closed_when_discord_opens_them_to_everyone(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await run(fake, world, world.mo, "settings blocklist", {"action": "add", "kind": "word", "value": "Gore"})
    # an admin lets everyone use /settings in Server Settings > Integrations: Discord then lets Bob's commands through
    fake.set_command_permissions_override(world.studio_a, "settings", allow_everyone=True)
    refusal = "Only members with Manage Server can see or change the server's settings."
    for command, options in [
        ("settings show", {}),
        ("settings blocklist", {"action": "show"}),
        ("settings blocklist", {"action": "add", "kind": "word", "value": "gore"}),  # no "already on the list"
        ("settings blocklist", {"action": "clear", "kind": "word"}),
        ("settings limits", {"cooldown": 5}),
        ("settings channels", {"action": "clear"}),
        ("settings audit", {}),
        ("settings key show", {}),
    ]:
        h = await run(fake, world, world.bob, command, options)
        assert h.ephemeral and h.content == refusal and not h.embeds, (command, h.content, h.embeds)
        assert "Gore" not in str(h.embeds) + h.content
    choices = await fake.autocomplete(
        world.studio_a, world.bob, "settings provider", {"provider": ""}, focused="provider"
    )
    assert choices == []
    h = await run(fake, world, world.mo, "settings show")
    shown = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert shown["Limits"].startswith("Cooldown: 0 s") and shown["Block list"].startswith("1 words")  # unchanged


async def test_block_list_on_prompt_name_and_description(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    h = await run(fake, world, world.mo, "settings blocklist", {"action": "add", "kind": "word", "value": "Gore"})
    assert "`Gore`" in h.content
    h = await run(
        fake, world, world.mo, "settings blocklist", {"action": "add", "kind": "pattern", "value": r"blood\s*bath"}
    )
    assert r"`blood\s*bath`" in h.content

    h = await shot(fake, world, "walks through the GORE")
    assert h.ephemeral and h.content == BLOCKED.format("prompt")
    h = await shot(fake, world, "a bloodbath at dawn")
    assert h.content == BLOCKED.format("prompt")
    queued_id(await shot(fake, world, "gorgeous sunrise"))  # whole words only: "gorgeous" is fine

    h = await run(fake, world, world.alice, "character create", {"name": "Gore Hound", "description": "a dog"})
    assert h.ephemeral and h.content == BLOCKED.format("name")
    h = await run(fake, world, world.alice, "character create", {"name": "Rex", "description": "covered in g\u200bore"})
    assert h.content == BLOCKED.format("description")
    h = await run(fake, world, world.alice, "character edit", {"character": "Ava", "description": "bloodbath survivor"})
    assert h.content == BLOCKED.format("description")
    assert runner.bot is not None
    assert await runner.bot.services.storage.characters.count(world.studio_a.id) == 1  # nothing was created or changed

    # the refusals, and the admin's changes, are in the audit log
    h = await run(fake, world, world.mo, "settings audit", {"count": 10})
    log = h.embeds[0]["description"]
    assert "**refused.word** `prompt matched 'Gore'" in log
    assert "**refused.pattern** `prompt matched" in log
    assert "**refused.word** `name matched 'Gore'" in log
    assert "**refused.word** `description matched 'Gore'" in log
    assert f"<@{world.mo.id}> **settings.blocklist** `blocked_words: [] -> [Gore]`" in log

    h = await run(fake, world, world.mo, "settings blocklist", {"action": "add", "kind": "pattern", "value": r"(a)\1"})
    assert h.content.startswith("That pattern uses something this bot's patterns cannot do (invalid escape")
    h = await run(fake, world, world.mo, "settings blocklist", {"action": "add", "kind": "pattern", "value": "(oops"})
    assert h.content.startswith("That is not a valid regular expression:")
    h = await run(fake, world, world.mo, "settings blocklist", {"action": "remove", "kind": "word", "value": "gore"})
    assert "**Blocked words:** none" in h.content
    queued_id(await shot(fake, world, "walks through the gore"))


async def test_nsfw_prompts_only_in_age_restricted_channels(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    h = await shot(fake, world, "poses nude on the beach")
    assert h.ephemeral
    assert h.content == "That prompt looks NSFW. NSFW shots are allowed only in age-restricted channels."
    lounge = fake.add_channel(world.studio_a, "after-dark", nsfw=True)
    h = await fake.slash(
        world.studio_a,
        world.alice,
        "animate",
        {"character": "Ava", "prompt": "poses nude on the beach", "provider": "scripted"},
        lounge,
    )
    await h.wait_settled(timeout=30)
    queued_id(h)
    h = await run(fake, world, world.mo, "settings audit")
    assert "**refused.nsfw** `prompt matched 'nsfw': poses nude on the beach`" in h.embeds[0]["description"]


async def test_provider_refusals_are_shown_and_charged_only_when_billed(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend(fail_with=FinalError("Kling's content safety system refused this shot.", code="1301"))
    scripted(runner, backend)
    await ava_with_front_view(fake, world)
    free = queued_id(await shot(fake, world, "refused, not billed"))
    await eventually(lambda: is_state(runner, free, JobState.FAILED), "the refusal")
    await until(fake, lambda: "Why it failed" in fields(status_of(fake, world, free)), "the reason")
    assert fields(status_of(fake, world, free))["Why it failed"] == (
        "Kling's content safety system refused this shot. Nothing was charged."
    )
    assert await job_total(runner, world, free) == 0

    backend.fail_with = FinalError("Runway's moderation refused this shot's inputs.", charged=True)
    billed = queued_id(await shot(fake, world, "refused, billed"))
    await eventually(lambda: is_state(runner, billed, JobState.FAILED), "the refusal")
    await until(fake, lambda: "Why it failed" in fields(status_of(fake, world, billed)), "the reason")
    assert fields(status_of(fake, world, billed))["Why it failed"].endswith(
        "You were charged for it, as the provider bills it."
    )
    assert await job_total(runner, world, billed) == 500_000


async def test_draft_and_final_quality(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend()
    plain = scripted(runner, backend)
    await ava_with_front_view(fake, world)
    h = await shot(fake, world, "try", quality="draft")
    assert h.content == "**Scripted** `scripted-1` has a single quality, so draft and final are the same there."

    caps = plain.capabilities
    two_modes = dataclasses.replace(caps.default_row, modes=("std", "pro"))
    plain.capabilities = dataclasses.replace(
        caps, rows=tuple(two_modes if r is caps.default_row else r for r in caps.rows)
    )
    assert runner.bot is not None
    draft = queued_id(await shot(fake, world, "try", quality="draft"))
    final = queued_id(await shot(fake, world, "keep", quality="final"))
    await run(fake, world, world.mo, "settings limits", {"quality": "draft", "max_queued": 20})
    default = queued_id(await shot(fake, world, "server default"))
    modes = [(await runner.bot.services.storage.jobs.get(j)).params.mode for j in (draft, final, default)]  # type: ignore[union-attr]
    assert modes == ["std", "pro", "std"]


async def test_queue_limit_and_manager_roles(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend()
    backend.hold_render.clear()
    scripted(runner, backend)
    await ava_with_front_view(fake, world)
    await run(fake, world, world.mo, "settings limits", {"max_queued": 2})
    first = queued_id(await shot(fake, world, "one"))
    queued_id(await shot(fake, world, "two"))
    h = await shot(fake, world, "three")
    assert h.content.startswith("You already have 2 shots waiting or rendering; the limit is 2.")

    helpers = fake.add_role(world.studio_a, "Helpers")
    carol = fake.add_user("carol")
    fake.add_member(world.studio_a, carol, roles=[helpers])
    h = await run(fake, world, carol, "queue cancel", {"job": first})
    assert h.content == f"Only <@{world.alice.id}>, who queued shot #{first}, or a moderator can cancel it."
    h = await run(fake, world, world.mo, "settings managers", {"action": "add", "role": helpers})
    assert h.content == f"Manager roles: <@&{helpers.id}>."
    h = await run(fake, world, carol, "queue cancel", {"job": first})
    assert h.content.startswith("Cancel") and f"#{first}" in h.content
    await eventually(lambda: is_state(runner, first, JobState.CANCELED), "the cancel")

    # a manager role moderates; it does not open the server's settings
    fake.set_command_permissions_override(world.studio_a, "settings", allow_everyone=True)
    h = await run(fake, world, carol, "settings limits", {"cooldown": 5})
    assert "Manage Server" in h.content


async def test_settings_show_reflects_every_change(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await run(fake, world, world.mo, "settings budget", {"monthly": "$40", "daily": "2.5", "confirm_over": "none"})
    await run(fake, world, world.mo, "settings limits", {"cooldown": 30, "max_running": 1})
    h = await run(fake, world, world.mo, "settings budget", {"monthly": "lots"})
    assert h.content == "The monthly server budget must be an amount in US dollars like `25` or `12.50`, or `none`."
    h = await run(fake, world, world.mo, "settings show")
    shown = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert shown["Budget"] == "Server: $0.00 of $40.00 this month\nEach member: $2.50 a day\nConfirm from: never"
    assert "Cooldown: 30 s" in shown["Limits"] and "Rendering per member: 1" in shown["Limits"]
    assert shown["Channels"] == "Anywhere"
    assert runner.bot is not None
    assert runner.bot.services.worker.limits().user_cap(world.studio_a.id) == 1  # the scheduler uses the server's cap
    await runner.restart()
    assert runner.bot is not None
    assert runner.bot.services.worker.limits().user_cap(world.studio_a.id) == 1  # ... after a restart too
    h = await run(fake, world, world.mo, "settings audit")
    assert "monthly_cap_usd: none -> 40.00" in h.embeds[0]["description"]


async def test_the_servers_provider_and_model_are_used_by_default(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    provider = scripted(runner, Backend())
    caps = provider.capabilities
    second = dataclasses.replace(caps.default_row, model="scripted-2")
    provider.capabilities = dataclasses.replace(caps, rows=(*caps.rows, second))
    await ava_with_front_view(fake, world)
    choices = await fake.autocomplete(
        world.studio_a, world.mo, "settings provider", {"provider": "scr"}, focused="provider"
    )
    assert [c["value"] for c in choices] == ["scripted"]

    h = await run(fake, world, world.mo, "settings provider", {"provider": "nope"})
    assert h.ephemeral and h.content.startswith("The provider **nope** is not set up on this bot (available: ")
    h = await run(fake, world, world.mo, "settings provider", {"provider": "scripted", "model": "scripted-9"})
    assert h.content == "**Scripted** has the models scripted-1, scripted-2, not `scripted-9`."
    h = await run(fake, world, world.mo, "settings provider", {"provider": "scripted", "model": "scripted-2"})
    assert h.content == "New shots use **scripted**, model scripted-2."

    assert runner.bot is not None
    jobs = runner.bot.services.storage.jobs
    server_default = queued_id(
        await run(fake, world, world.alice, "animate", {"character": "Ava", "prompt": "uses the server's choice"})
    )
    job = await jobs.get(server_default)
    assert job is not None and (job.provider, job.model) == ("scripted", "scripted-2")
    local = queued_id(
        await run(fake, world, world.alice, "animate", {"character": "Ava", "prompt": "x", "provider": "local"})
    )
    job = await jobs.get(local)
    assert job is not None and job.provider == "local" and job.model != "scripted-2"  # the member's pick wins

    h = await run(fake, world, world.mo, "settings provider", {"provider": "default"})
    assert h.content == "New shots use **local (the bot's default)**, model the provider default."
    again = queued_id(await run(fake, world, world.alice, "animate", {"character": "Ava", "prompt": "back to local"}))
    job = await jobs.get(again)
    assert job is not None and job.provider == "local"
    h = await run(fake, world, world.mo, "settings audit")
    assert (
        "**settings.provider** `provider: none -> scripted; video_model: none -> scripted-2`"
        in h.embeds[0]["description"]
    )
