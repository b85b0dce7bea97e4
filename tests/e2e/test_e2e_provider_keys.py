"""Bring your own key, through the real bot and the fake Discord, with the fake Kling serving two accounts: the
bot's and Studio A's own. The fake tells which account signed every request, and keeps each account's tasks
to itself (a task made with one key is not found with another)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pydantic import SecretStr

from bot.domain import Job, JobState
from bot.providers.accounts import ServerKeyError
from bot.providers.base import Provider
from bot.providers.building import install_id
from bot.providers.kling import KlingProvider
from bot.providers.secret_box import NO_SECRET_KEY, generate_key
from tests.support.bot_runner import BotRunner, World, assert_no_secret_logged
from tests.support.characters import TRAITS
from tests.support.fake_discord import CommandUnavailable, FakeDiscord, FakeGuild, FakeUser
from tests.support.fake_providers.kling import IMAGE2VIDEO, FakeKling
from tests.support.figures import figure_png
from tests.support.shots import job_state, result_of
from tests.support.waiting import eventually


def fake_secret(account: str) -> str:
    """A made-up Kling secret, long and distinctive enough to be searched for in the database file and the logs."""
    return f"sk-fake-{account}-secret-5b8e1f2a9c4d7e60"


BOT_ACCESS = "ak-bot-account-e2e"
BOT_SECRET = fake_secret("bot")
SERVER_ACCESS = "ak-studio-a-OWN-7f3c9d"
SERVER_SECRET = fake_secret("studio-a-OWN")
SAVED = "Saved the server's Kling key; it will not be shown again."
COSTS = "/account/costs"


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    fake = FakeKling(access_key=BOT_ACCESS, secret_key=BOT_SECRET)
    fake.add_account(SERVER_ACCESS, SERVER_SECRET)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def quick(provider: Provider) -> Provider:
    """The fake renders in two polls, not in Kling's minute and a half: the first poll comes at once."""
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)
    return provider


async def start(runner: BotRunner) -> None:
    """Start the bot; its Kling instances (the bot's and every server's) poll the fake at once."""
    await runner.start()
    assert runner.bot is not None
    registry = runner.bot.services.providers
    if "kling" in registry.names():
        quick(registry.get("kling"))
    build = registry.factory
    assert build is not None

    def quick_build(name: str, fields: Mapping[str, str]) -> Provider:
        return quick(build(name, fields))

    registry.factory = quick_build


async def restart_with(runner: BotRunner, kling: FakeKling, *, bot_key: bool = True, secret_key: str | None) -> None:
    """The admin's settings: the fake Kling's host, the bot's own Kling key or none, LIKENESS_SECRET_KEY or none."""
    await runner.stop()
    runner.settings = runner.settings.model_copy(
        update={
            "kling_base_url": kling.base_url,
            "kling_access_key": SecretStr(BOT_ACCESS) if bot_key else None,
            "kling_secret_key": SecretStr(BOT_SECRET) if bot_key else None,
            "secret_key": SecretStr(secret_key) if secret_key else None,
        }
    )
    await start(runner)


async def character(fake: FakeDiscord, guild: FakeGuild, owner: FakeUser) -> None:
    h = await fake.slash(guild, owner, "character create", {"name": "Ava", "description": TRAITS})
    await h.wait_settled()
    attachment = fake.upload(figure_png(), "front.png", "image/png")
    h = await fake.slash(guild, owner, "character view add", {"character": "Ava", "view": "front", "image": attachment})
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content


async def shot(fake: FakeDiscord, guild: FakeGuild, user: FakeUser, prompt: str) -> int:
    h = await fake.slash(guild, user, "animate", {"character": "Ava", "prompt": prompt, "provider": "kling"})
    await h.wait_settled(timeout=30)
    assert h.ephemeral and h.content.startswith("Queued shot #"), h.content
    return int(h.content.split("#")[1].split(" ")[0])


async def until_done(runner: BotRunner, job_id: int) -> None:
    async with asyncio.timeout(15):
        while (state := await job_state(runner, job_id)) is not JobState.DONE:
            assert not state.finished, f"job {job_id} ended {state}"
            await asyncio.sleep(0.02)


async def set_key(
    fake: FakeDiscord, guild: FakeGuild, user: FakeUser, access: str = SERVER_ACCESS, secret: str = SERVER_SECRET
) -> str:
    """/settings key set provider:kling, then the modal; the ephemeral answer."""
    h = await fake.slash(guild, user, "settings key set", {"provider": "kling"})
    await h.wait_settled()
    assert h.modal is not None, h.content
    inputs = [row["components"][0] for row in h.modal["components"]]
    assert [i["custom_id"] for i in inputs] == ["access_key", "secret_key"]
    assert all(i["required"] and not i.get("value") for i in inputs)  # required, never prefilled
    submitted = await fake.submit_modal(guild, user, h.modal["custom_id"], {"access_key": access, "secret_key": secret})
    await submitted.wait_settled()
    assert submitted.ephemeral
    return submitted.content


def signers(runner: BotRunner, kling: FakeKling, job_id: int) -> set[str | None]:
    """The accounts that signed the create and every query of a job's task."""
    external = f"{install_id(runner.settings)}{job_id}"
    task = kling.task_for(external)
    assert task is not None
    creates = [r for r in kling.api_requests("POST", IMAGE2VIDEO) if r.body.get("external_task_id") == external]
    queries = kling.api_requests("GET", f"{IMAGE2VIDEO}/{external}") + kling.api_requests(
        "GET", f"{IMAGE2VIDEO}/{task.task_id}"
    )
    assert creates and queries
    return {r.account for r in creates + queries}


def holding(folder: Path, *needles: str) -> list[str]:
    """The files under `folder` whose raw bytes contain any of `needles`."""
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and any(needle.encode() in path.read_bytes() for needle in needles)
    ]


def names_under(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*") if path.is_file()]


async def test_a_server_key_signs_its_shots_and_is_never_stored_or_logged_in_plain(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As in production: setup_logging keeps discord.gateway at INFO or above whatever LIKENESS_LOG_LEVEL says
    # (at DEBUG it dumps every gateway event, modal submissions included).
    caplog.set_level(logging.INFO, logger="discord.gateway")
    await restart_with(runner, kling, secret_key=generate_key())
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    [check] = kling.api_requests("GET", COSTS)
    assert check.account == SERVER_ACCESS and check.status == 200  # Kling was asked whether it takes the key

    await character(fake, world.studio_a, world.alice)
    await character(fake, world.studio_b, world.zed)
    own = await shot(fake, world.studio_a, world.alice, "waves with the server's own key")
    other = await shot(fake, world.studio_b, world.zed, "waves with the bot's key")
    await until_done(runner, own)
    await until_done(runner, other)
    assert signers(runner, kling, own) == {SERVER_ACCESS}
    assert signers(runner, kling, other) == {BOT_ACCESS}

    h = await fake.slash(world.studio_a, world.alice, "settings key show", {})
    await h.wait_settled()
    assert h.content.startswith(f"**Kling**: set by <@{world.mo.id}> on <t:")
    assert SERVER_ACCESS not in h.content and SERVER_SECRET not in h.content

    assert runner.bot is not None
    status = await runner.bot.services.provider_keys.status(world.studio_a.id)
    assert [(s.provider, s.set_by) for s in status] == [("kling", world.mo.id)]
    assert await runner.bot.services.provider_keys.status(world.studio_b.id) == []

    # At rest: the database, its WAL and everything else in the data folder hold no plaintext key.
    db = runner.settings.db_path
    assert {db.name, f"{db.name}-wal"} <= set(names_under(runner.settings.data_dir))
    assert holding(runner.settings.data_dir, SERVER_ACCESS, SERVER_SECRET) == []
    await runner.stop()  # the WAL is checkpointed into the database on close: look again
    assert holding(runner.settings.data_dir, SERVER_ACCESS, SERVER_SECRET) == []
    await start(runner)

    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records and "kling" in logged
    assert SERVER_ACCESS not in logged and SERVER_SECRET not in logged


async def test_members_without_manage_server_cannot_see_or_use_server_keys(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    for command, options in [
        ("settings key set", {"provider": "kling"}),
        ("settings key remove", {"provider": "kling"}),
        ("settings key show", {}),
    ]:
        with pytest.raises(CommandUnavailable):  # hidden by default_member_permissions (Manage Server)
            await fake.slash(world.studio_a, world.bob, command, options)
    definition = next(c for c in fake.commands() if c["name"] == "settings")
    key_group = next(o for o in definition["options"] if o["name"] == "key")
    for sub in key_group["options"]:
        assert all(option.get("description") for option in sub.get("options", [])), sub  # every option described
    assert await set_key(fake, world.studio_a, world.alice) == SAVED  # the owner may


async def test_removing_the_key_goes_back_to_the_bots_key(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    await character(fake, world.studio_a, world.alice)
    first = await shot(fake, world.studio_a, world.alice, "with the server's key")
    await until_done(runner, first)
    assert signers(runner, kling, first) == {SERVER_ACCESS}

    h = await fake.slash(world.studio_a, world.mo, "settings key remove", {"provider": "kling"})
    await h.wait_settled()
    assert h.ephemeral and h.content == "Removed the server's Kling key; its shots use the bot's key again."
    second = await shot(fake, world.studio_a, world.alice, "with the bot's key again")
    await until_done(runner, second)
    assert signers(runner, kling, second) == {BOT_ACCESS}

    h = await fake.slash(world.studio_a, world.mo, "settings key remove", {"provider": "kling"})
    await h.wait_settled()
    assert h.content == "This server has no Kling key of its own."
    h = await fake.slash(world.studio_a, world.mo, "settings key show", {})
    await h.wait_settled()
    assert h.content == "This server uses the bot's provider keys (it has none of its own)."


async def test_without_a_secret_key_servers_are_told_how_to_allow_keys(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=None)
    h = await fake.slash(world.studio_a, world.alice, "settings key set", {"provider": "kling"})
    await h.wait_settled()
    assert h.modal is None and h.ephemeral
    assert h.content == NO_SECRET_KEY
    assert "LIKENESS_SECRET_KEY" in h.content and "likeness keygen" in h.content
    assert kling.api_requests("GET", COSTS) == []


async def test_a_key_kling_refuses_or_a_malformed_one_is_not_kept(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    wrong = "sk-studio-a-WRONG-secret-00000000"
    answer = await set_key(fake, world.studio_a, world.mo, secret=wrong)
    assert answer.startswith("Kling did not accept this key") and "nothing was saved" in answer
    assert wrong not in answer and SERVER_ACCESS not in answer
    answer = await set_key(fake, world.studio_a, world.mo, access="ak with spaces")
    assert answer == "The Kling access key should have no spaces. Copy it again from Kling."
    answer = await set_key(fake, world.studio_a, world.mo, secret="short")
    assert answer.startswith("The Kling secret key should be 8-200 characters long") and "short" not in answer
    assert runner.bot is not None
    assert await runner.bot.services.provider_keys.status(world.studio_a.id) == []


async def test_a_failure_while_saving_a_key_gives_an_error_id_and_never_logs_the_key(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner, caplog: pytest.LogCaptureFixture
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    assert runner.bot is not None
    keys_table = runner.bot.services.storage.provider_keys

    async def broken_put(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("the disk is full")

    keys_table.put = broken_put  # type: ignore[method-assign]
    answer = await set_key(fake, world.studio_a, world.mo)
    assert answer.startswith("Something went wrong on my side and nothing was changed") and "error id" in answer
    [logged] = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "bot.discord_io.errors"]
    assert "likeness:provider-key:kling" in logged.getMessage()  # which form failed, never what was typed in it
    assert_no_secret_logged(caplog.records, [SERVER_ACCESS, SERVER_SECRET])
    assert await runner.bot.services.provider_keys.status(world.studio_a.id) == []


async def test_after_a_restart_a_job_resumes_with_the_servers_key(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    key = generate_key()
    await restart_with(runner, kling, secret_key=key)
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    await character(fake, world.studio_a, world.alice)
    kling.hold_submits.clear()  # Kling makes the task on the server's account; its answer never reaches the bot
    job_id = await shot(fake, world.studio_a, world.alice, "submitting when the bot stops")
    await fake.wait_until(lambda: len(kling.tasks) == 1, 10, "the task at Kling")
    assert await job_state(runner, job_id) is JobState.SUBMITTING

    await runner.stop()
    kling.hold_submits.set()
    await start(runner)  # same LIKENESS_SECRET_KEY: the stored key opens again

    await until_done(runner, job_id)
    # Found on the server's account by its idempotency key, never sent again (the bot's key would not find it).
    assert kling.create_attempts == 1 and len(kling.tasks) == 1
    assert signers(runner, kling, job_id) == {SERVER_ACCESS}
    assert runner.settings.secret("secret_key") == key


async def test_a_key_form_opened_before_a_restart_still_saves_the_key(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    h = await fake.slash(world.studio_a, world.mo, "settings key set", {"provider": "kling"})
    await h.wait_settled()
    assert h.modal is not None, h.content
    await runner.stop()  # the admin is still pasting the key when the bot restarts
    await start(runner)
    submitted = await fake.submit_modal(
        world.studio_a, world.mo, h.modal["custom_id"], {"access_key": SERVER_ACCESS, "secret_key": SERVER_SECRET}
    )
    await submitted.wait_settled()
    assert submitted.ephemeral and submitted.content == SAVED
    await character(fake, world.studio_a, world.alice)
    job_id = await shot(fake, world.studio_a, world.alice, "on the key typed across the restart")
    await until_done(runner, job_id)
    assert signers(runner, kling, job_id) == {SERVER_ACCESS}


async def test_a_server_key_brings_a_provider_the_bot_has_no_key_for(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, bot_key=False, secret_key=generate_key())
    assert runner.bot is not None
    registry = runner.bot.services.providers
    assert "kling" not in registry.names()
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    assert "kling" in await registry.names_for_guild(world.studio_a.id)
    assert "kling" not in await registry.names_for_guild(world.studio_b.id)
    provider = await registry.for_guild(world.studio_a.id, "kling")
    assert isinstance(provider, KlingProvider) and provider is await registry.for_guild(world.studio_a.id, "kling")
    assert provider.capabilities.name == "kling"
    # the server's account has its own limits in the scheduler (not the bot's, which has no Kling at all)
    limits = runner.bot.services.worker.limits()
    assert limits.server_accounts == {(world.studio_a.id, "kling"): provider.capabilities.max_concurrency}

    h = await fake.slash(world.studio_a, world.mo, "settings key remove", {"provider": "kling"})
    await h.wait_settled()
    assert h.content == "Removed the server's Kling key; it is not available here until a key is set again."
    assert "kling" not in await registry.names_for_guild(world.studio_a.id)
    assert runner.bot.services.worker.limits().server_accounts == {}


async def test_a_changed_secret_key_asks_admins_to_enter_the_key_again(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    await restart_with(runner, kling, secret_key=generate_key())  # the bot's admin replaced LIKENESS_SECRET_KEY
    assert runner.bot is not None
    with pytest.raises(ServerKeyError) as caught:
        await runner.bot.services.providers.for_guild(world.studio_a.id, "kling")
    assert "enter it again with `/settings key set`" in str(caught.value)
    assert caught.value.message == str(caught.value)  # the worker fails a job with exactly this
    assert await set_key(fake, world.studio_a, world.mo) == SAVED  # entering it again fixes it
    provider: Any = await runner.bot.services.providers.for_guild(world.studio_a.id, "kling")
    assert isinstance(provider, KlingProvider)


SECOND_ACCESS = "ak-studio-a-NEW-2b81e4"
SECOND_SECRET = fake_secret("studio-a-NEW")
KEPT = "will finish on it; the bot keeps it (sealed) only until then, then deletes it."


async def until_running(runner: BotRunner, job_id: int) -> None:
    async with asyncio.timeout(15):
        while (job := await stored_job(runner, job_id)).state is not JobState.RUNNING or job.polls == 0:
            assert not job.state.finished, f"job {job_id} ended {job.state}"
            await asyncio.sleep(0.02)


async def stored_job(runner: BotRunner, job_id: int) -> Job:
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None
    return job


async def retired_keys(runner: BotRunner) -> int:
    assert runner.bot is not None
    row = await runner.bot.services.storage.db.fetchone("SELECT COUNT(*) FROM retired_provider_keys")
    assert row is not None
    return int(row[0])


async def test_a_shot_finishes_on_the_key_it_was_sent_with_when_the_key_changes(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """Kling only answers for a task to the account that made it: a shot rendering when its server's key is
    replaced or removed (and the bot restarted meanwhile) is still collected, posted and charged once."""
    kling.add_account(SECOND_ACCESS, SECOND_SECRET)
    await restart_with(runner, kling, secret_key=generate_key())
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    await character(fake, world.studio_a, world.alice)
    kling.polls_to_finish = 10**9  # every task keeps rendering until the test lets it finish
    first = await shot(fake, world.studio_a, world.alice, "rendering as the key is replaced")
    await until_running(runner, first)

    said = await set_key(fake, world.studio_a, world.mo, SECOND_ACCESS, SECOND_SECRET)
    assert said == f"{SAVED} 1 shot already sent with the previous key {KEPT}"
    second = await shot(fake, world.studio_a, world.alice, "rendering as the key is removed")
    await until_running(runner, second)
    assert await retired_keys(runner) == 1

    await runner.stop()  # the old key must come back from the database, sealed as it was
    await start(runner)
    h = await fake.slash(world.studio_a, world.mo, "settings key remove", {"provider": "kling"})
    await h.wait_settled()
    assert h.content == (
        f"Removed the server's Kling key; its shots use the bot's key again. 1 shot already sent with this key {KEPT}"
    )
    assert await retired_keys(runner) == 2
    third = await shot(fake, world.studio_a, world.bob, "with the bot's key")  # alice runs 2 at once at most
    await until_running(runner, third)

    kling.polls_to_finish = 1
    for job_id in (first, second, third):
        await until_done(runner, job_id)
    assert signers(runner, kling, first) == {SERVER_ACCESS}
    assert signers(runner, kling, second) == {SECOND_ACCESS}
    assert signers(runner, kling, third) == {BOT_ACCESS}
    assert kling.create_attempts == 3
    assert runner.bot is not None
    for job_id in (first, second, third):
        assert len(result_of(fake, world, job_id)) == 1, f"shot {job_id} was not posted exactly once"
        charged = await runner.bot.services.storage.db.fetchone(
            "SELECT COUNT(*) FROM ledger WHERE job_id = ? AND entry = 'charge'", (job_id,)
        )
        assert charged is not None and charged[0] == 1

    # Once the shots ended, the replaced and removed keys are deleted, not kept "just in case".
    async def none_retired() -> bool:  # the worker deletes them as each job ends
        return await retired_keys(runner) == 0

    await eventually(none_retired, "the retired keys to be deleted", timeout=20)
    accounts = [(await stored_job(runner, job_id)).account for job_id in (first, second, third)]
    assert accounts[0] and accounts[1] and accounts[0] != accounts[1] and accounts[2] == ""  # "" is the bot's key


async def test_a_removed_key_no_shot_used_is_deleted_at_once(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await restart_with(runner, kling, secret_key=generate_key())
    assert await set_key(fake, world.studio_a, world.mo) == SAVED
    assert await set_key(fake, world.studio_a, world.mo) == SAVED  # replaced: nothing was sent with the first
    h = await fake.slash(world.studio_a, world.mo, "settings key remove", {"provider": "kling"})
    await h.wait_settled()
    assert h.content == "Removed the server's Kling key; its shots use the bot's key again."
    assert await retired_keys(runner) == 0
    assert runner.bot is not None
    assert await runner.bot.services.storage.db.fetchone("SELECT 1 FROM provider_keys") is None
