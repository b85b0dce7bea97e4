"""Budgets as members and admins meet them: caps with numbers, confirmation, charge/release, late success, races."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io

import pytest

from bot.domain import JobState, Money
from bot.providers.base import FinalError
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import CommandUnavailable, FakeDiscord
from tests.support.scripted_provider import Backend
from tests.support.shots import is_state, job_state, job_total, ledger, queued_id, result_of, run, scripted, shot
from tests.support.waiting import eventually, until

# The scripted provider costs $0.10 a second: a 5 s shot is $0.50, a 10 s shot $1.00 (the default threshold).


async def test_a_shot_over_the_daily_cap_is_refused_with_the_numbers(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend()
    backend.hold_render.clear()
    scripted(runner, backend)
    await ava_with_front_view(fake, world)
    h = await run(fake, world, world.alice, "settings budget", {"daily": "0.75"})
    assert "each member $0.75 a day" in h.content

    h = await shot(fake, world, "first")
    first = queued_id(h)
    assert f"Queued shot #{first} of **Ava** (about $0.50)." in h.content
    h = await shot(fake, world, "second")
    assert h.ephemeral
    assert h.content.startswith(
        "This shot is estimated at $0.50, but you have $0.25 left of your $0.75 daily limit in this server "
        "($0.50 spent or held by your shots today). It resets at 00:00 UTC, in "
    ), h.content
    assert runner.bot is not None
    assert [j.id for j in await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id)] == [first]
    assert await ledger(runner, world) == [(first, "reserve", 500_000)]  # the refusal reserved nothing
    audit = (await run(fake, world, world.alice, "settings audit")).embeds[0]["description"]
    assert f"<@{world.alice.id}> **refused.budget** `This shot is estimated at $0.50, but you have $0.25 left" in audit

    # another member has their own day; the cap is per member
    queued_id(await shot(fake, world, "bob's", user=world.bob))


async def test_costly_shots_wait_for_confirmation(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    assert runner.bot is not None

    h = await shot(fake, world, "a long one", duration=10)
    assert h.ephemeral and "is estimated at **$1.00**" in h.content
    buttons = [c["custom_id"] for row in h.components for c in row["components"]]
    confirm, cancel = buttons
    assert confirm.startswith("likeness:confirm:yes:") and cancel.startswith("likeness:confirm:no:")
    assert await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []  # nothing queued yet
    assert await ledger(runner, world) == []

    press = await fake.press(h.result, cancel, world.alice)
    await press.wait_settled()
    assert press.content == "Canceled: nothing was queued." and press.components == []
    assert await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []

    h = await shot(fake, world, "a long one", duration=10)
    confirm = h.components[0]["components"][0]["custom_id"]
    await runner.restart()  # the confirmation survives a restart (stable custom id, pending row in the database)
    stolen = await fake.press(h.result, confirm, world.bob)
    await stolen.wait_settled()
    assert "no longer waiting for you" in stolen.content  # only its member can confirm it
    presses = await asyncio.gather(*[fake.press(h.result, confirm, world.alice) for _ in range(2)])  # a double press
    await asyncio.gather(*[p.wait_settled() for p in presses])
    [press] = [p for p in presses if p.content.startswith("Queued")]
    [again] = [p for p in presses if p is not press]
    job_id = queued_id(press)
    assert "(about $1.00)" in press.content
    assert "no longer waiting" in again.content
    assert runner.bot is not None
    assert [j.id for j in await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id)] == [job_id]
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the confirmed shot")

    # below the threshold nothing is asked; an admin can lower the threshold
    queued_id(await shot(fake, world, "short"))
    await run(fake, world, world.mo, "settings budget", {"confirm_over": "0.25"})
    assert "is estimated at **$0.50**" in (await shot(fake, world, "short again")).content


async def test_money_is_charged_on_success_and_released_on_failure_and_cancel(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend()
    scripted(runner, backend, max_concurrency=1)
    await ava_with_front_view(fake, world)
    assert runner.bot is not None

    done = queued_id(await shot(fake, world, "works"))
    await until(fake, lambda: bool(result_of(fake, world, done)), "the result")
    await eventually(lambda: job_total_is(runner, world, done, 500_000), "the charge")
    assert [(e, m) for j, e, m in await ledger(runner, world) if j == done] == [
        ("reserve", 500_000),
        ("release", -500_000),
        ("charge", 500_000),
    ]

    backend.fail_with = FinalError("The provider refused this content.")
    failed = queued_id(await shot(fake, world, "refused"))
    await eventually(lambda: is_state(runner, failed, JobState.FAILED), "the failure")
    assert await job_total(runner, world, failed) == 0
    backend.fail_with = None

    backend.hold_render.clear()  # one renders (holding the provider's only slot), one waits in the queue
    running = queued_id(await shot(fake, world, "running"))
    await until(fake, lambda: backend.submits.get(running) == 1, "the submit")
    waiting = queued_id(await shot(fake, world, "waiting"))
    for job_id in (waiting, running):
        h = await run(fake, world, world.alice, "queue cancel", {"job": job_id})
        assert h.ephemeral
    await eventually(lambda: is_state(runner, running, JobState.CANCELED), "the cancel at the provider")
    assert await job_state(runner, waiting) is JobState.CANCELED
    assert await job_total(runner, world, waiting) == 0
    assert await job_total(runner, world, running) == 0
    assert backend.canceled == [running]

    h = await run(fake, world, world.alice, "budget show")
    fields = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert fields["You"].startswith("$0.50 spent today; no limit")
    assert f"#{done} **Ava** · done · $0.50" in fields["Your last shots"]
    assert f"#{failed} **Ava** · failed · $0.00" in fields["Your last shots"]


async def test_kling_style_cancel_is_still_charged(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    """A provider whose cancel does not stop the render bills it anyway: the ledger says so, honestly."""
    backend = Backend()
    backend.hold_render.clear()
    provider = scripted(runner, backend)
    provider.capabilities = dataclasses.replace(provider.capabilities, cancel_stops_billing=False)
    await ava_with_front_view(fake, world)
    job_id = queued_id(await shot(fake, world, "billed anyway"))
    await until(fake, lambda: backend.submits.get(job_id) == 1, "the submit")
    await run(fake, world, world.alice, "queue cancel", {"job": job_id})
    await eventually(lambda: is_state(runner, job_id, JobState.CANCELED), "the cancel")
    assert await job_total(runner, world, job_id) == 500_000


async def test_a_late_success_after_the_bot_gave_up_is_charged_and_posted(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend()
    backend.hold_render.clear()
    scripted(runner, backend)
    await ava_with_front_view(fake, world)
    assert runner.bot is not None
    worker = runner.bot.services.worker
    worker.config = dataclasses.replace(worker.config, max_render_seconds=0.3, late_check_interval=0.1)

    job_id = queued_id(await shot(fake, world, "slow"))
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the give-up")
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.late_check_until is not None
    assert await job_total(runner, world, job_id) == 500_000  # still held: the provider may finish it
    await asyncio.sleep(0.3)
    assert await job_total(runner, world, job_id) == 500_000

    backend.hold_render.set()  # the provider finishes it after all
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the late result")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "done")
    assert [(e, m) for j, e, m in await ledger(runner, world) if j == job_id] == [
        ("reserve", 500_000),
        ("release", -500_000),
        ("charge", 500_000),
    ]
    assert len(result_of(fake, world, job_id)) == 1


async def test_concurrent_shots_cannot_overspend_the_cap(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend()
    backend.hold_render.clear()
    scripted(runner, backend, max_concurrency=4)
    await ava_with_front_view(fake, world)
    await run(fake, world, world.alice, "settings budget", {"monthly": "1.25", "daily": "none"})
    await run(fake, world, world.alice, "settings limits", {"max_queued": 20})

    handles = await asyncio.gather(
        *[fake.slash(world.studio_a, user, "animate", {"character": "Ava", "prompt": f"race {n}", "provider": "scripted"})
          for n, user in enumerate([world.alice, world.bob, world.mo] * 2)]
    )  # fmt: skip
    await asyncio.gather(*[h.wait_settled(timeout=30) for h in handles])
    queued = [h for h in handles if h.content.startswith("Queued shot #")]
    refused = [h for h in handles if "monthly budget" in h.content]
    assert len(queued) == 2 and len(refused) == 4, [h.content for h in handles]
    assert (
        "this server has $0.25 left of its $1.25 monthly budget ($1.00 spent or held this month)" in refused[0].content
    )
    assert sum(m for _, _, m in await ledger(runner, world)) == 1_000_000


async def test_budget_export_is_for_admins(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    scripted(runner, Backend())
    await ava_with_front_view(fake, world)
    job_id = queued_id(await shot(fake, world, "for the books"))
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result")
    await eventually(lambda: job_total_is(runner, world, job_id, 500_000), "the charge")

    h = await run(fake, world, world.bob, "budget export")
    assert h.ephemeral and h.content == "Only members with Manage Server can export the server's spending."
    h = await run(fake, world, world.mo, "budget export", {"month": "2026-13"})
    assert "YYYY-MM" in h.content
    h = await run(fake, world, world.mo, "budget export")
    assert h.ephemeral
    [attachment] = h.attachments
    assert attachment.filename.startswith("likeness-spend-") and attachment.filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(attachment.data.decode())))
    assert rows[0]["job_id"] == str(job_id) and rows[0]["member_id"] == str(world.alice.id)
    assert (rows[0]["estimate_usd"], rows[0]["held_usd"], rows[0]["charged_usd"]) == (
        "0.500000",
        "0.000000",
        "0.500000",
    )
    assert rows[-1]["job_id"] == "total" and rows[-1]["charged_usd"] == "0.500000"


async def test_settings_are_hidden_from_members_and_checked_at_run_time(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    for command in ("settings show", "settings budget", "settings audit", "settings blocklist"):
        with pytest.raises(CommandUnavailable):
            await fake.slash(world.studio_a, world.bob, command, {"action": "show"} if "blocklist" in command else {})
    # an admin who opens /settings to everyone in Discord's integration settings still keeps members out
    fake.set_command_permissions_override(world.studio_a, "settings", allow_everyone=True)
    h = await run(fake, world, world.bob, "settings budget", {"monthly": "0"})
    assert h.ephemeral and "Manage Server" in h.content
    assert runner.bot is not None
    settings = await runner.bot.services.storage.guilds.get(world.studio_a.id)
    assert settings.rules.monthly_cap_usd is None  # nothing changed


async def job_total_is(runner: BotRunner, world: World, job_id: int, micros: int) -> bool:
    return await job_total(runner, world, job_id) == micros


async def test_a_render_lost_after_it_succeeded_is_still_charged(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """The provider billed the render when it finished; failing to download it does not undo that."""
    provider = scripted(runner, Backend())

    async def expired(_artifact: object) -> bytes:
        raise FinalError("The result's download link expired.")

    provider.fetch = expired  # type: ignore[method-assign]
    await ava_with_front_view(fake, world)
    job_id = queued_id(await shot(fake, world, "lost in transit"))
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the failure")
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.error == (
        "The result's download link expired. You were charged for it, as the provider bills it."
    )
    assert job.cost_final == Money.from_usd("0.50")
    assert await job_total(runner, world, job_id) == 500_000
