"""A paid submit whose outcome is unknown is never sent twice (issue 12, item 3), through the real bot and the fake
Discord: fal and Runway (which cannot be asked whether they have a job) leave it to a manager; Kling looks it up.

The fakes accept the submit (the task exists and would be billed) and never answer it: the client's read timeout
is the "answer lost after the request was sent" of a real network.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from bot.domain import JobState
from bot.providers.base import Provider
from bot.providers.fal import FalProvider
from bot.providers.kling import KlingProvider
from bot.providers.runway import RunwayProvider
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.fal import FakeFal
from tests.support.fake_providers.runway import FakeRunway
from tests.support.kling_keys import ACCESS, SECRET, running_kling
from tests.support.shots import animate, held, is_state, result_of, status_of
from tests.support.waiting import eventually, until


@dataclass
class Remote:
    """One paid provider that cannot be asked about a job, and its fake."""

    name: str
    make: Callable[[float], Provider]  # a new client with this read timeout (seconds)
    submits: Callable[[], int]  # submits that reached the provider (each one a task it bills)
    lose_next_answer: Callable[[], None]


@contextlib.asynccontextmanager
async def remote(name: str) -> AsyncIterator[Remote]:
    if name == "fal":
        fal = FakeFal(latency=0.001)
        fal.queue_polls, fal.progress_polls = 1, 1
        await fal.start()

        def make_fal(timeout: float) -> Provider:
            # one slot: a job waiting for a manager must not hold it
            provider = FalProvider(key=fal.key, base_url=fal.url, timeout=timeout, max_concurrency=1)
            provider.capabilities = replace(provider.capabilities, typical_seconds=0.1)
            return provider

        def lose_fal() -> None:
            fal.lose_submit_answers = 1

        try:
            yield Remote("fal", make_fal, lambda: len(fal.queued), lose_fal)
        finally:
            await fal.stop()
        return
    runway = FakeRunway(latency=0.001, pending_polls=0, running_polls=1)
    await runway.start()

    def make_runway(timeout: float) -> Provider:
        provider = RunwayProvider(api_key=runway.api_key, base_url=runway.url, timeout=timeout, max_concurrency=1)
        provider.capabilities = replace(provider.capabilities, typical_seconds=0.1)
        return provider

    def lose_runway() -> None:
        runway.lose_create_answers = 1

    try:
        yield Remote("runway", make_runway, lambda: len(runway.tasks), lose_runway)
    finally:
        await runway.stop()


@pytest.fixture(params=["fal", "runway"])
async def paid(request: pytest.FixtureRequest, runner: BotRunner) -> AsyncIterator[Remote]:
    async with remote(request.param) as provider:
        use(runner, provider)
        yield provider


def use(runner: BotRunner, paid: Remote, timeout: float = 0.5) -> None:
    """A fresh client for the provider, registered now and at every later start (a stopped bot closes its own)."""
    provider = paid.make(timeout)
    runner.providers[:] = [provider]
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)


async def restart(runner: BotRunner, paid: Remote) -> None:
    await runner.stop()
    runner.providers[:] = [paid.make(0.5)]
    await runner.start()


def notices(fake: FakeDiscord, world: World, job_id: int) -> list[Any]:
    return [
        m
        for m in fake.channel_messages(world.studio_a.channel_id)
        if m.content.startswith("⚠️") and f"likeness:unsure:resend:{job_id}" in str(m.components)
    ]


async def unsure_shot(fake: FakeDiscord, world: World, runner: BotRunner, paid: Remote) -> int:
    """A shot whose submit reached the provider and whose answer was lost: it waits for a manager."""
    await ava_with_front_view(fake, world)
    paid.lose_next_answer()
    job_id = await animate(fake, world, "waves at the camera", provider=paid.name)
    await eventually(lambda: is_state(runner, job_id, JobState.UNSURE), "the shot to wait for a manager")
    assert paid.submits() == 1
    return job_id


async def test_a_lost_submit_answer_waits_for_a_manager_and_is_sent_again_once(
    fake: FakeDiscord, world: World, runner: BotRunner, paid: Remote
) -> None:
    job_id = await unsure_shot(fake, world, runner, paid)
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None
    assert await held(runner, world, job_id) == job.cost_estimate.micros > 0  # the money stays held

    # the member and the managers are told, and the status says why, with the buttons
    await until(fake, lambda: bool(notices(fake, world, job_id)), "the notice to the managers")
    [notice] = notices(fake, world, job_id)
    assert f"<@{world.alice.id}>" in notice.content and "Send again" in notice.content
    status = status_of(fake, world, job_id)
    await until(
        fake,
        lambda: "Waiting for a manager" in str(status_of(fake, world, job_id).embeds),
        "the status to say it waits for a manager",
    )
    status = status_of(fake, world, job_id)
    assert "may have received it" in str(status.embeds) and f"likeness:unsure:release:{job_id}" in str(
        status.components
    )

    # a restart does not send it again; another shot gets the provider's one slot meanwhile
    await restart(runner, paid)
    other = await animate(fake, world, "a second shot", provider=paid.name)
    await until(fake, lambda: bool(result_of(fake, world, other)), "the other shot's clip")
    assert await is_state(runner, job_id, JobState.UNSURE)
    assert paid.submits() == 2  # the other shot's only

    refused = await fake.press(status, f"likeness:unsure:resend:{job_id}", world.bob)
    await refused.wait_settled()
    assert refused.ephemeral and "Only a manager" in refused.content
    assert await is_state(runner, job_id, JobState.UNSURE) and paid.submits() == 2

    press = await fake.press(notice, f"likeness:unsure:resend:{job_id}", world.mo)  # Mo has Manage Server
    await press.wait_settled()
    assert press.ephemeral and "sent to" in press.content and "once more" in press.content, press.content
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip sent again")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
    assert paid.submits() == 3 and len(result_of(fake, world, job_id)) == 1

    again = await fake.press(notice, f"likeness:unsure:resend:{job_id}", world.mo)  # a late second press
    await again.wait_settled()
    assert again.ephemeral and "no longer waiting for a manager" in again.content
    assert paid.submits() == 3


async def test_a_manager_releases_a_shot_the_provider_may_have(
    fake: FakeDiscord, world: World, runner: BotRunner, paid: Remote
) -> None:
    helpers = fake.add_role(world.studio_a, "Helpers")  # a manager role, without Manage Server
    carol = fake.add_user("carol")
    fake.add_member(world.studio_a, carol, roles=[helpers])
    h = await fake.slash(world.studio_a, world.mo, "settings managers", {"action": "add", "role": helpers})
    await h.wait_settled()
    assert h.content == f"Manager roles: <@&{helpers.id}>."
    job_id = await unsure_shot(fake, world, runner, paid)
    await until(fake, lambda: bool(notices(fake, world, job_id)), "the notice to the managers")
    [notice] = notices(fake, world, job_id)
    assert f"<@&{helpers.id}>" in notice.content and f"<@{world.alice.id}>" in notice.content

    canceled = await fake.slash(world.studio_a, world.alice, "queue cancel", {"job": job_id})
    await canceled.wait_settled()
    assert canceled.ephemeral and "a manager decides" in canceled.content
    assert await is_state(runner, job_id, JobState.UNSURE)

    press = await fake.press(notice, f"likeness:unsure:release:{job_id}", carol)  # a manager by role
    await press.wait_settled()
    assert press.ephemeral and press.content.startswith(f"Released shot #{job_id}"), press.content
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the shot to be released")
    assert await held(runner, world, job_id) == 0  # released, nothing charged
    assert runner.bot is not None
    entries = [e for e in await runner.bot.services.storage.ledger.entries(world.studio_a.id) if e.job_id == job_id]
    assert sorted(e.entry for e in entries) == ["release", "reserve"]
    await until(fake, lambda: "Released by" in str(status_of(fake, world, job_id).embeds), "the released status")
    assert paid.submits() == 1


async def test_a_crash_while_sending_leaves_the_shot_to_a_manager(
    fake: FakeDiscord, world: World, runner: BotRunner, paid: Remote
) -> None:
    """The process stops while the submit is out (sent, no answer): on resume it is not sent again."""
    await ava_with_front_view(fake, world)
    paid.lose_next_answer()
    use(runner, paid, timeout=60.0)  # a long read timeout: the bot stops while it still waits for the answer
    job_id = await animate(fake, world, "stopped mid-send", provider=paid.name)
    await until(fake, lambda: paid.submits() == 1, "the submit to reach the provider")
    assert await is_state(runner, job_id, JobState.SUBMITTING)
    await restart(runner, paid)
    await eventually(lambda: is_state(runner, job_id, JobState.UNSURE), "the resumed shot to wait for a manager")
    assert paid.submits() == 1
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and "stopped while this shot was being sent" in (job.error or "")
    assert await held(runner, world, job_id) == job.cost_estimate.micros


async def test_kling_looks_a_timed_out_submit_up_and_never_pays_twice(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """Kling can be asked (external_task_id = the job id): a submit whose answer timed out is found, not re-sent."""
    async with running_kling() as kling:
        provider = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET, timeout=0.5)
        provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)
        runner.providers[:] = [provider]
        assert runner.bot is not None
        runner.bot.services.providers.register(provider)
        await ava_with_front_view(fake, world)
        kling.hold_submits.clear()  # Kling creates the task; its answer comes too late for the client
        job_id = await animate(fake, world, "answer lost", provider="kling")
        await until(fake, lambda: len(kling.tasks) == 1, "the task at Kling")
        await eventually(lambda: is_state(runner, job_id, JobState.RUNNING), "the task to be found by its job id")
        kling.hold_submits.set()
        await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip")
        await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
        assert kling.create_attempts == 1 and len(kling.tasks) == 1
        entries = [e for e in await runner.bot.services.storage.ledger.entries(world.studio_a.id) if e.job_id == job_id]
        assert sorted(e.entry for e in entries) == ["charge", "release", "reserve"]  # charged once
