"""Provider callbacks through the real bot: with LIKENESS_CALLBACK_URL set, Kling and fal.ai call the bot back when a
render ends, and the shot is picked up at once instead of at its next poll (here: minutes away), across a restart
too; a callback with a wrong token changes nothing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.domain import Job, JobState
from bot.infra.config import SettingsError
from bot.jobs.callbacks import CallbackUrls, callback_secret
from bot.jobs.delivery import Progress
from bot.providers.fal import FalProvider
from bot.providers.kling import KlingProvider
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_providers.fal import FakeFal
from tests.support.fake_providers.kling import IMAGE2VIDEO, FakeKling, sample_video
from tests.support.kling_keys import ACCESS, SECRET, running_kling
from tests.support.shots import animate, is_state, result_of
from tests.support.waiting import eventually, until

POLL_IN_TEN_MINUTES = 600.0  # the providers' first-guess render time: no poll comes during a test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def with_callbacks(runner: BotRunner) -> str:
    """Restart the bot as an admin would set it up behind a reverse proxy; returns the public base URL."""
    await runner.stop()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runner.settings = runner.settings.model_copy(update={"callback_url": base + "/", "callback_port": port})
    await runner.start()
    return base


def slow_kling(runner: BotRunner, kling: FakeKling) -> KlingProvider:
    provider = KlingProvider(base_url=kling.base_url, access_key=ACCESS, secret_key=SECRET)
    provider.capabilities = replace(provider.capabilities, typical_seconds=POLL_IN_TEN_MINUTES)
    runner.providers.append(provider)
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    return provider


@pytest.fixture
async def kling() -> AsyncIterator[FakeKling]:
    async with running_kling() as fake:
        yield fake


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    fake = FakeFal()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_kling_calls_back_and_the_clip_posts_at_once_even_across_a_restart(
    kling: FakeKling,
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
) -> None:
    base = await with_callbacks(runner)
    slow_kling(runner, kling)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves from the balcony", provider="kling")
    await eventually(lambda: is_state(runner, job_id, JobState.RUNNING), "the shot to be rendering at Kling")

    # The task carries this shot's own callback URL, signed with the secret kept in the data folder.
    [body] = kling.bodies(IMAGE2VIDEO)
    urls = CallbackUrls(base, callback_secret(runner.settings.data_dir))
    assert body["callback_url"] == urls.url_for("kling", job_id)
    assert body["callback_url"].startswith(f"{base}/callbacks/kling/{job_id}/")

    # Someone who guesses the route but not the token gets a 404, and the bot does not poll for it.
    async with httpx.AsyncClient() as client:
        forged = await client.post(f"{base}/callbacks/kling/{job_id}/{'0' * 32}", json={"task_status": "succeed"})
    assert forged.status_code == 404

    # A restart while it renders: the URL given to Kling before it still works after it.
    await runner.restart()
    slow_kling(runner, kling)
    [task] = kling.tasks.values()
    kling.end_now(task)  # the render ends; Kling calls back (processing, then succeed)

    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip, picked up on the callback")
    [result] = result_of(fake, world, job_id)
    assert [data for _name, data, _type in result.attachments] == [sample_video()]
    assert [status for url, _body, status in kling.callbacks if url == body["callback_url"]][-1] == 200
    queries = [r for r in kling.api_requests("GET", IMAGE2VIDEO) if r.path.endswith(f"/{task.task_id}")]
    assert len(queries) == 1  # one poll, on the callback; the scheduled one was ten minutes away
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")
    assert runner.bot is not None  # admins see the callbacks in the metrics (this bot's life: since the restart)
    metrics = await runner.bot.render_metrics()
    callbacks = samples(metrics, "likeness_callbacks_total")  # Prometheus sorts labels: read them, not the text
    assert callbacks[(("outcome", "polled"), ("provider", "kling"))] == 1
    assert callbacks[(("outcome", "progress"), ("provider", "kling"))] == 1  # "processing"


def samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of metric `name` in Prometheus text, by their (sorted) labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    }


async def test_fal_calls_back_on_completion_and_the_clip_posts_at_once(
    fal: FakeFal, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    base = await with_callbacks(runner)
    provider = FalProvider(key=fal.key, base_url=fal.url, timeout=15.0)
    provider.capabilities = replace(provider.capabilities, typical_seconds=POLL_IN_TEN_MINUTES)
    runner.providers.append(provider)
    assert runner.bot is not None
    runner.bot.services.providers.register(provider)
    fal.webhook_after = 0.3  # the request completes on its own and fal POSTs the result to the webhook
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "turns to the window", provider="fal")

    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the fal clip, picked up on the webhook")
    [submit] = [r for r in fal.requests if r.method == "POST" and "/requests/" not in r.path]
    urls = CallbackUrls(base, callback_secret(runner.settings.data_dir))
    assert submit.query["fal_webhook"] == urls.url_for("fal", job_id)
    assert fal.webhook_deliveries == [(urls.url_for("fal", job_id), 200)]
    statuses = [r for r in fal.requests if r.method == "GET" and r.path.endswith("/status")]
    assert len(statuses) == 1  # polled once, on the webhook
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the shot to be done")


async def test_without_a_callback_url_nothing_listens_and_no_url_is_sent(
    kling: FakeKling,
    fake: FakeDiscord,
    world: World,
    runner: BotRunner,
) -> None:
    assert runner.settings.callback_url is None
    provider = slow_kling(runner, kling)
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)  # polled, as ever
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves", provider="kling")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the polled clip")
    [body] = kling.bodies(IMAGE2VIDEO)
    assert "callback_url" not in body
    assert not (runner.settings.data_dir / "callback-secret").exists()
    assert runner.bot is not None and runner.bot.services.callback_server is None


async def test_a_callback_for_a_render_the_bot_gave_up_on_posts_it_without_waiting_for_the_late_check(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await with_callbacks(runner)
    provider = slow_kling(runner, kling)
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)  # polled at once
    kling.polls_to_finish = 10**6  # the render ends only when the test says
    assert runner.bot is not None
    worker = runner.bot.services.worker
    worker.config = replace(worker.config, max_render_seconds=0.3)  # the next late check is 5 minutes away
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "a very long take", provider="kling")
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the bot to give up waiting")
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.late_check_until is not None

    [task] = kling.tasks.values()
    kling.end_now(task)  # Kling finishes it after all, and calls back
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the late clip, picked up on the callback")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the late shot to be done")
    assert len(result_of(fake, world, job_id)) == 1


async def test_a_callback_while_the_bot_is_still_giving_up_is_not_lost(
    kling: FakeKling, fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """The callback lands while the job's driver is still finishing its give-up (its status edit is held): the
    late check it asks for runs once the driver is gone, instead of being dropped."""
    await with_callbacks(runner)
    provider = slow_kling(runner, kling)
    provider.capabilities = replace(provider.capabilities, typical_seconds=0.2)
    kling.polls_to_finish = 10**6
    assert runner.bot is not None
    worker = runner.bot.services.worker
    worker.config = replace(worker.config, max_render_seconds=0.3)
    release = asyncio.Event()
    announce = worker._announce  # pyright: ignore[reportPrivateUsage]

    async def held_when_failed(job: Job, progress: Progress | None = None) -> None:
        if job.state is JobState.FAILED:
            await release.wait()
        await announce(job, progress)

    worker._announce = held_when_failed  # pyright: ignore[reportPrivateUsage]
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "a very long take", provider="kling")
    await eventually(lambda: is_state(runner, job_id, JobState.FAILED), "the bot to give up waiting")
    assert job_id in worker._drivers  # pyright: ignore[reportPrivateUsage]  # still finishing

    [task] = kling.tasks.values()
    kling.end_now(task)
    nudges = worker._nudges  # pyright: ignore[reportPrivateUsage]

    async def called_back() -> bool:
        nudge = nudges.get(job_id)
        return nudge is not None and nudge.is_set()

    await eventually(called_back, "the callback to reach the finishing driver")
    release.set()
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the late clip, picked up on the callback")
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "the late shot to be done")


async def test_a_taken_callback_port_is_a_setting_to_fix(runner: BotRunner) -> None:
    await runner.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        runner.settings = runner.settings.model_copy(
            update={"callback_url": "https://likeness.example.org", "callback_port": port}
        )
        with pytest.raises(SettingsError) as refused:
            await runner.start()
    assert str(refused.value) == (
        f"Some settings are not valid:\n  LIKENESS_CALLBACK_PORT: cannot listen on 127.0.0.1:{port} (Address already "
        "in use); choose a free port, or stop what uses it."
    )
