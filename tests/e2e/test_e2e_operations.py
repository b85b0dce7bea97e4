"""Running it in production: a graceful SIGTERM (nothing lost, uploads finish), /info, the metrics endpoint."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bot.discord_io.client import LikenessBot, serve
from bot.discord_io.errors import RESTARTING
from bot.domain import JobState
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png
from tests.support.shots import animate, is_state, job_state, result_of, status_of
from tests.support.waiting import eventually, until


async def serve_in_background(runner: BotRunner, fake: FakeDiscord) -> tuple[LikenessBot, asyncio.Task[None]]:
    """`likeness run` in this process (its signal handlers on this loop), on the runner's data directory."""
    bot = LikenessBot(runner.settings)

    async def run() -> None:  # what `likeness run` does (bot.discord_io.client.run_bot), with the bot in our hands
        async with bot:
            await serve(bot, fake.token)

    task = asyncio.create_task(run())
    await fake.wait_until(bot.is_ready, 10, "the bot to be ready")
    return bot, task


async def sigterm(task: asyncio.Task[None], timeout: float = 15) -> None:  # noqa: ASYNC109
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, timeout)


async def test_sigterm_during_delivery_loses_nothing(
    fake: FakeDiscord, world: World, runner: BotRunner, caplog: pytest.LogCaptureFixture
) -> None:
    await ava_with_front_view(fake, world)
    await runner.stop()
    bot, task = await serve_in_background(runner, fake)

    job_id = await animate(fake, world, "waves goodbye")
    await until(fake, lambda: bool(status_of(fake, world, job_id)), "the status message")
    # Discord makes the result's post wait (429, retry in 30 s): the job is mid-delivery when the stop comes
    fake.rate_limit("POST", r"/channels/\d+/messages", times=1, retry_after=30)
    await until(fake, lambda: bool(fake.rate_limited), "the result post to be held", timeout=60)
    job = await bot.services.storage.jobs.get(job_id)
    assert job is not None and job.state is JobState.DELIVERING

    await sigterm(task)
    assert bot.is_closed()
    assert "stopping: no new commands" in caplog.text
    assert result_of(fake, world, job_id) == []  # not posted yet

    await runner.start()  # the next start finishes the delivery: once
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result after the restart")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "done")
    await asyncio.sleep(0.3)
    assert len(result_of(fake, world, job_id)) == 1


async def test_sigterm_lets_an_upload_finish_and_refuses_new_commands(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": "Ava", "description": "traits"})
    await h.wait_settled()
    await runner.stop()
    bot, task = await serve_in_background(runner, fake)
    release = hold_uploads(bot)

    upload = fake.upload(figure_png(), "front.png", "image/png")
    h = await fake.slash(
        world.studio_a, world.alice, "character view add", {"character": "Ava", "view": "front", "image": upload}
    )
    await until(fake, lambda: h.first_callback is not None, "the upload's deferral")
    await until(fake, lambda: bot.inflight.count == 1, "the upload in progress")
    os.kill(os.getpid(), signal.SIGTERM)
    await until(fake, lambda: bot.draining, "the stop to begin")

    late = await fake.slash(world.studio_a, world.bob, "character list", {})
    await late.wait_settled()
    assert late.ephemeral and late.content == RESTARTING
    assert not task.done()  # still waiting for the upload

    release.set()
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content
    await asyncio.wait_for(task, 15)

    await runner.start()  # the upload that finished during the stop was kept
    assert runner.bot is not None
    [ava] = [c for c in await runner.bot.services.storage.characters.all(world.studio_a.id) if c.name == "Ava"]
    assert [v.view.value for v in await runner.bot.services.storage.references.current_views(ava.guild_id, ava.id)] == [
        "front"
    ]


async def test_the_grace_period_is_bounded(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    h = await fake.slash(world.studio_a, world.alice, "character create", {"name": "Ava", "description": "traits"})
    await h.wait_settled()
    await runner.stop()
    runner.settings = runner.settings.model_copy(update={"shutdown_grace": 0.3})
    bot, task = await serve_in_background(runner, fake)
    hold_uploads(bot)  # never released
    upload = fake.upload(figure_png(), "front.png", "image/png")
    await fake.slash(
        world.studio_a, world.alice, "character view add", {"character": "Ava", "view": "front", "image": upload}
    )
    await until(fake, lambda: bot.inflight.count == 1, "the upload in progress")
    started = asyncio.get_running_loop().time()
    await sigterm(task)
    assert asyncio.get_running_loop().time() - started < 10


def hold_uploads(bot: LikenessBot) -> asyncio.Event:
    """Make uploads wait (inside the bot, after the deferral) until the returned event is set."""
    release = asyncio.Event()
    references = bot.services.references
    original: Callable[..., Awaitable[Any]] = references.add_view

    async def add_view(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await original(*args, **kwargs)

    references.add_view = add_view  # type: ignore[method-assign]
    return release


async def test_info_shows_version_uptime_queue_and_providers(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result")
    # The result is posted before the job is marked done; until then it rightly counts as in progress.
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "done")
    h = await fake.slash(world.studio_a, world.bob, "info", {})
    await h.wait_settled()
    assert h.ephemeral
    fields = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}
    assert fields["Version"] == "0.1.0"
    assert fields["Queue"] == "0 waiting, 0 in progress (all servers)"
    assert "**local**: ✅ answering" in fields["Providers"]
    assert fields["Latency"].endswith(" ms") or fields["Latency"] == "measuring"


async def test_metrics_endpoint_on_localhost(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await runner.stop()
    runner.settings = runner.settings.model_copy(update={"metrics_port": 0})
    bot = await runner.start()
    server = bot.services.metrics_server
    assert server is not None
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "for the dashboard")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "done")

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
        missing = await client.get(f"http://127.0.0.1:{server.port}/other")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    body = response.text
    assert 'likeness_queue_jobs{state="queued"} 0' in body
    assert 'likeness_jobs_finished_total{provider="local",state="done"} 1' in body
    assert 'likeness_job_duration_seconds_count{provider="local"} 1' in body
    assert 'likeness_provider_healthy{provider="local"} 1' in body
    assert missing.status_code == 404
    for line in body.splitlines():  # every sample line is `name{labels} value`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


async def test_a_result_the_channel_refuses_is_kept_and_posted_once_allowed(
    fake: FakeDiscord, world: World, runner: BotRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No paid result is lost to a permission slip: it waits (the job stays in delivery) until an admin fixes it."""
    from bot.discord_io import delivery
    from tests.support.fake_discord.world import Overwrite, Perm

    monkeypatch.setattr(delivery, "POST_RETRY_SECONDS", 0.2)
    await ava_with_front_view(fake, world)
    locked = Overwrite(id=fake.bot_user.id, type=1, deny=Perm.SEND_MESSAGES)
    studio = fake.add_channel(world.studio_a, "locked", overwrites=[locked])
    h = await fake.slash(world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "waves"}, studio)
    await h.wait_settled(timeout=30)
    assert h.content.startswith("Queued shot #"), h.content
    assert "I can't post in this channel" in h.content  # the member knows why nothing appears yet
    job_id = int(h.content.split("#")[1].split(" ")[0])
    assert runner.bot is not None
    await eventually(lambda: waiting_to_post(runner, job_id), "a refused post")  # a wait, not a failed attempt
    assert await job_state(runner, job_id) is JobState.DELIVERING

    fake.world.channels[studio].overwrites.clear()  # an admin grants the permission
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the post once allowed")
    posted = [
        m
        for m in fake.channel_messages(studio)
        if m.attachments and f"likeness:job:reroll:{job_id}" in str(m.components)
    ]
    assert len(posted) == 1


async def waiting_to_post(runner: BotRunner, job_id: int) -> bool:
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    return job is not None and job.state is JobState.DELIVERING and job.waiting_since is not None


async def test_a_stop_while_the_bot_starts_its_worker_leaves_nothing_running(
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A SIGTERM right after connecting: the first ready is still settling money when the database closes."""
    from bot.governance.budget import Budget

    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "queued while the bot starts")
    await runner.stop()
    settling, settled = asyncio.Event(), asyncio.Event()

    async def slow_reconcile(self: Budget, now: float | None = None) -> int:
        settling.set()
        await settled.wait()  # done only after the stop: unless the stop cut it short, the worker starts then
        return 0

    with monkeypatch.context() as patched:
        patched.setattr(Budget, "reconcile", slow_reconcile)
        bot = await runner.start()
        await asyncio.wait_for(settling.wait(), 10)
        await runner.stop()
        stopped = len(caplog.records)
        settled.set()
        await asyncio.sleep(0.3)
    assert bot.services.worker._loop_task is None and bot.services.janitor._task is None  # pyright: ignore[reportPrivateUsage]
    after = caplog.records[stopped:]
    assert not [r for r in after if r.levelname == "ERROR"], caplog.text  # nothing ran on the closed database

    await runner.start()  # the next start does it all
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result")


async def test_healthz_says_whether_the_bot_is_up(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    """GET /healthz on the metrics listener (for Docker and orchestrators): 200 while connected, 503 once stopping."""
    await runner.stop()
    runner.settings = runner.settings.model_copy(update={"metrics_port": 0})
    bot = await runner.start()
    server = bot.services.metrics_server
    assert server is not None
    async with httpx.AsyncClient() as client:
        up = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        bot.draining = True  # what a SIGTERM sets first
        stopping = await client.get(f"http://127.0.0.1:{server.port}/healthz")
        bot.draining = False
    assert up.status_code == 200 and up.json() == {"status": "ok"}
    assert stopping.status_code == 503 and stopping.json() == {"status": "unavailable"}


async def test_started_is_set_once_the_first_ready_has_started_the_worker(runner: BotRunner) -> None:
    """`LikenessBot.started` (what the ack bench waits for) means the worker runs and the start's collection is done."""
    assert runner.bot is not None
    await asyncio.wait_for(runner.bot.started.wait(), timeout=30)
    assert any(t.get_name() == "likeness-worker" and not t.done() for t in asyncio.all_tasks())
    assert gc.get_freeze_count() > 0
