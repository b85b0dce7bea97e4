"""/animate through the durable queue, as members use it: status, results, caps, restarts, failures, buttons."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bot.domain import JobState
from bot.imaging.video import probe
from bot.providers.base import FinalError
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import ava_with_front_view
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png
from tests.support.scripted_provider import Backend, ScriptedProvider
from tests.support.shots import animate, fields, is_state, job_state, result_of, results, status_of
from tests.support.waiting import eventually, until


async def test_animate_delivers_a_playable_clip(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves at the camera and smiles")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip")
    [result] = result_of(fake, world, job_id)
    assert f"<@{world.alice.id}> **Ava** (v2) · 5 s · local/local-v1" in result.content
    [(filename, data, _type)] = result.attachments
    assert filename == f"ava-shot-{job_id}.mp4"
    info = probe(data)
    assert (info.width, info.height) == (1280, 720)
    assert abs(info.duration - 5.0) < 0.1
    status = status_of(fake, world, job_id)
    assert result.reply_to == status.id
    await until(fake, lambda: status_of(fake, world, job_id).embeds[0]["title"].startswith("✅"), "the done status")
    assert await job_state(runner, job_id) is JobState.DONE


async def test_queue_position_and_cap_of_one(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend(render_seconds=0.05)
    backend.hold_render.clear()
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(backend, max_concurrency=1))
    await ava_with_front_view(fake, world)
    ids = [await animate(fake, world, f"shot {n}", provider="scripted") for n in range(3)]
    await until(fake, lambda: "position 2" in fields(status_of(fake, world, ids[2]))["Stage"], "queue positions")
    assert "position 1" in fields(status_of(fake, world, ids[1]))["Stage"]
    await until(fake, lambda: backend.running_now == 1, "the first shot to render")

    h = await fake.slash(world.studio_a, world.alice, "queue show", {})
    await h.wait_settled()
    mine = {f["name"]: f["value"] for f in h.embeds[0]["fields"]}["Your shots"]
    assert f"#{ids[1]} **Ava** · position 1" in mine and f"#{ids[2]} **Ava** · position 2" in mine

    backend.hold_render.set()
    await until(fake, lambda: all(result_of(fake, world, i) for i in ids), "three results")
    assert backend.max_running == 1  # one at a time: the cap is a queue, not an error
    assert all(backend.submits[i] == 1 for i in ids)


async def test_restart_at_every_stage_completes_each_job_once(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend(render_seconds=0.05)
    runner.providers.append(ScriptedProvider(backend, max_concurrency=2))
    assert runner.bot is not None
    runner.bot.services.providers.register(runner.providers[0])
    await ava_with_front_view(fake, world)

    backend.hold_render.clear()
    running = await animate(fake, world, "running when the bot stops", provider="scripted")
    await until(fake, lambda: backend.submits.get(running) == 1, "the first submit")
    backend.hold_submit.clear()  # the provider accepts the next task but the bot never hears back
    submitting = await animate(fake, world, "submitting when the bot stops", provider="scripted", user=world.bob)
    await until(fake, lambda: backend.submits.get(submitting) == 1, "the second submit")
    queued = await animate(fake, world, "queued when the bot stops", provider="scripted")
    assert await job_state(runner, running) is JobState.RUNNING
    assert await job_state(runner, submitting) is JobState.SUBMITTING
    assert await job_state(runner, queued) is JobState.QUEUED

    await runner.stop()
    backend.hold_submit.set()
    backend.hold_render.set()
    await runner.start()

    await until(fake, lambda: all(result_of(fake, world, j) for j in (running, submitting, queued)), "every result")
    for job_id in (running, submitting, queued):
        await eventually(lambda job_id=job_id: is_state(runner, job_id, JobState.DONE), f"job {job_id} done")
    await asyncio.sleep(0.3)  # nothing more arrives late
    for job_id in (running, submitting, queued):
        assert len(result_of(fake, world, job_id)) == 1, f"job {job_id} posted more than once"
        assert backend.submits[job_id] == 1, f"job {job_id} was submitted twice"


async def test_final_error_is_reported_with_the_providers_reason(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    backend = Backend(fail_with=FinalError("The provider refused this content.", detail="risk control (1301)"))
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(backend))
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "something refused", provider="scripted")
    await until(fake, lambda: status_of(fake, world, job_id).embeds[0]["title"].startswith("❌"), "the failure")
    reason = fields(status_of(fake, world, job_id))["Why it failed"]
    assert reason == "The provider refused this content. (provider said: risk control (1301)) Nothing was charged."
    assert result_of(fake, world, job_id) == []


async def test_retryable_errors_are_retried(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend(retryable_submits=2)
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(backend))
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "busy provider", provider="scripted")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result after retries")
    assert backend.retryable_submits == 0 and backend.submits[job_id] == 1


async def test_cancel_queued_and_running(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    backend = Backend()
    backend.hold_render.clear()
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(backend, max_concurrency=1))
    await ava_with_front_view(fake, world)
    running = await animate(fake, world, "will be canceled while rendering", provider="scripted")
    queued = await animate(fake, world, "will be canceled in the queue", provider="scripted")
    await until(fake, lambda: backend.submits.get(running) == 1, "the render to start")

    h = await fake.slash(world.studio_a, world.bob, "queue cancel", {"job": queued})
    await h.wait_settled()
    assert h.ephemeral and "Only <@" in h.content  # not Bob's shot
    h = await fake.slash(world.studio_a, world.alice, "queue cancel", {"job": queued})
    await h.wait_settled()
    assert h.content == f"Canceled shot #{queued}."
    h = await fake.slash(world.studio_a, world.mo, "queue cancel", {"job": running})  # Manage Server may
    await h.wait_settled()
    assert "being stopped at the provider" in h.content
    await until(fake, lambda: running in backend.canceled, "the provider-side cancel")
    await until(fake, lambda: status_of(fake, world, running).embeds[0]["title"].startswith("🚫"), "canceled status")
    assert await job_state(runner, queued) is JobState.CANCELED
    assert results(fake, world) == []


async def test_buttons_work_after_restart_and_refuse_the_wrong_member(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "first take")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the first result")
    [result] = result_of(fake, world, job_id)

    await runner.restart()
    press = await fake.press(result, f"likeness:job:reroll:{job_id}", world.bob)
    await press.wait_settled()
    assert press.ephemeral and f"Only <@{world.alice.id}>" in press.content
    press = await fake.press(result, f"likeness:job:reroll:{job_id}", world.alice)
    await press.wait_settled()
    assert press.ephemeral and press.content.startswith("Re-rolling: queued shot #")
    reroll = int(press.content.split("#")[1].split(" ")[0])
    await until(fake, lambda: bool(result_of(fake, world, reroll)), "the re-roll")
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(reroll)
    assert job is not None and job.parent_job_id == job_id and job.action == "first take"

    press = await fake.press(result, f"likeness:job:next:{job_id}", world.alice)
    await press.wait_settled()
    assert press.modal is not None
    modal_field = press.modal["components"][0]["components"][0]["custom_id"]
    await runner.restart()  # the member is still typing when the bot restarts: the form still works
    submitted = await fake.submit_modal(
        world.studio_a, world.alice, press.modal["custom_id"], {modal_field: "walks away"}, message=result
    )
    await submitted.wait_settled()
    assert submitted.content.startswith("Queued shot #"), submitted.content
    next_id = int(submitted.content.split("#")[1].split(" ")[0])
    assert runner.bot is not None
    next_job = await runner.bot.services.storage.jobs.get(next_id)
    assert next_job is not None and next_job.action == "walks away" and next_job.parent_job_id == job_id

    press = await fake.press(result, f"likeness:job:edit:{job_id}", world.alice)  # without a restart: once
    await press.wait_settled()
    assert press.modal is not None and press.modal["components"][0]["components"][0]["value"] == "first take"
    edited = await fake.submit_modal(
        world.studio_a, world.alice, press.modal["custom_id"], {modal_field: "first take, slower"}, message=result
    )
    await edited.wait_settled()
    assert edited.content.startswith("Queued shot #"), edited.content
    await asyncio.sleep(0.2)
    assert (
        len(
            [
                j
                for j in await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id)
                if j.action == "first take, slower"
            ]
        )
        == 1
    )

    press = await fake.press(result, f"likeness:job:delete:{job_id}", world.alice)
    await press.wait_settled()
    assert press.content == f"Deleted the result of shot #{job_id}."
    assert result_of(fake, world, job_id) == []


async def test_a_clip_over_the_upload_limit_is_reencoded_to_fit(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    world.studio_a.upload_limit = 70 * 1024  # a 10 s clip of this character is ~85 KB
    job_id = await animate(fake, world, "a detailed shot", duration=10)
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the re-encoded result", timeout=60)
    [result] = result_of(fake, world, job_id)
    [(_name, data, _type)] = result.attachments
    assert len(data) <= 70 * 1024
    assert abs(probe(data).duration - 10.0) < 0.2
    refused = [r for r in fake.requests if r.status == 413]
    assert refused, "the first, full-size upload should have been refused"
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.result_blob is not None
    assert len(await runner.bot.services.storage.blobs.get(job.result_blob)) > 70 * 1024  # the original is kept
    assert not job.result_posted_whole  # ... even past LIKENESS_KEEP_CLIPS_DAYS: the channel has a lesser copy


async def test_a_clip_that_cannot_fit_is_posted_as_a_still_with_a_note(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    world.studio_a.upload_limit = 20 * 1024
    job_id = await animate(fake, world, "too big for this server")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the fallback", timeout=60)
    [result] = result_of(fake, world, job_id)
    [(name, data, _type)] = result.attachments
    assert name == f"ava-shot-{job_id}.jpg" and data[:3] == b"\xff\xd8\xff"
    assert "too large to post in this server even re-encoded" in result.content
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.result_blob is not None and not job.result_posted_whole  # only here: kept


async def test_status_edits_are_throttled_and_the_last_state_always_shows(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await runner.stop()
    runner.settings = runner.settings.model_copy(update={"status_edit_interval": 0.4})
    backend = Backend(render_seconds=1.2)
    runner.providers.append(ScriptedProvider(backend))
    await runner.start()
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "many polls", provider="scripted")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result")
    await until(fake, lambda: status_of(fake, world, job_id).embeds[0]["title"].startswith("✅"), "the done status")
    status = status_of(fake, world, job_id)
    edits = [r.timestamp for r in fake.requests if r.method == "PATCH" and r.path.endswith(f"/messages/{status.id}")]
    assert len(edits) >= 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(edits)]
    assert min(gaps) >= 0.35, gaps  # never faster than the interval (timer slack allowed)


async def test_server_negative_presets_are_used_and_only_admins_change_them(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    from tests.support.fake_discord import CommandUnavailable

    with pytest.raises(CommandUnavailable):  # hidden from members by default_permissions
        await fake.slash(world.studio_a, world.bob, "settings negative", {"presets": "hands"})
    h = await fake.slash(world.studio_a, world.mo, "settings negative", {"presets": "hands, bogus"})
    await h.wait_settled()
    assert h.ephemeral and "bogus" in h.content  # unknown preset named, nothing changed
    h = await fake.slash(world.studio_a, world.mo, "settings negative", {"presets": "hands", "extra": "lens flare"})
    await h.wait_settled()
    assert h.content == "Negative presets for new shots: Hands; extra terms: lens flare."

    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "hands on hips")
    assert runner.bot is not None
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.negative_prompt is not None
    assert "extra fingers" in job.negative_prompt and "lens flare" in job.negative_prompt
    assert "melting" not in job.negative_prompt  # the face preset is off for this server


async def test_a_crash_after_posting_but_before_recording_does_not_post_twice(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "posted just before the crash")
    await until(fake, lambda: status_of(fake, world, job_id).embeds[0]["title"].startswith("✅"), "done")
    assert runner.bot is not None
    # The crash window: the message exists in the channel, the database never heard of it.
    await runner.bot.services.storage.jobs.update(job_id, state=JobState.DELIVERING.value, result_message_id=None)
    fake.nonce_window = fake.nonce_window * 0  # long after: Discord's nonce memory is gone too
    looks_before = sum(1 for r in fake.requests if r.method == "GET" and r.query.get("after"))
    await runner.restart()
    await until(
        fake,
        lambda: sum(1 for r in fake.requests if r.method == "GET" and r.query.get("after")) > looks_before,
        "the bot to look for the result in the channel",
    )
    async with asyncio.timeout(10):
        while await job_state(runner, job_id) is not JobState.DONE:  # noqa: ASYNC110 - state is in the DB
            await asyncio.sleep(0.02)
    [result] = result_of(fake, world, job_id)
    job = await runner.bot.services.storage.jobs.get(job_id)
    assert job is not None and job.result_message_id == result.id


async def test_options_follow_the_providers_capabilities(fake: FakeDiscord, world: World, runner: BotRunner) -> None:
    assert runner.bot is not None
    runner.bot.services.providers.register(ScriptedProvider(Backend()))
    await ava_with_front_view(fake, world)
    choices = await fake.autocomplete(
        world.studio_a,
        world.alice,
        "animate",
        {"character": "Ava", "prompt": "x", "provider": "scripted", "duration": ""},
        focused="duration",
    )
    assert [c["value"] for c in choices] == [5, 10]
    choices = await fake.autocomplete(
        world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "x", "aspect": ""}, focused="aspect"
    )
    assert [c["value"] for c in choices] == ["16:9", "9:16", "1:1"]
    for options, refusal in (
        ({"duration": 7}, "renders 5 or 10 s clips, not 7 s"),
        ({"audio": True}, "renders no audio"),
        ({"end_frame": fake.upload(figure_png(), "end.png", "image/png")}, "takes no end frame"),
        ({"start_frame": fake.upload(figure_png(), "start.png", "image/png")}, "takes no start frame"),
        ({"aspect": "4:3"}, "takes the aspect ratios"),
        ({"mode": "pro"}, "has the quality modes: none"),
        ({"model": "gen-9"}, "has the models local-v1, not `gen-9`"),
        ({"provider": "kling"}, "The provider **kling** is not set up on this bot"),
    ):
        h = await fake.slash(world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "x", **options})
        await h.wait_settled()
        assert h.ephemeral and refusal in h.content, (options, h.content)
    assert runner.bot is not None
    assert (
        await runner.bot.services.storage.jobs.recent_in_guild(world.studio_a.id) == []
    )  # nothing queued, nothing spent


async def test_a_full_provider_is_waited_for_longer_than_a_failing_one(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    """Seven rate-limit answers in a row (more than the plain retry limit) still end in a delivered clip."""
    from bot.providers.base import RetryableError

    class AlwaysFullForAWhile(ScriptedProvider):
        refusals = 7

        async def submit(self, request):  # type: ignore[no-untyped-def]
            if self.refusals > 0:
                self.refusals -= 1
                raise RetryableError("Full.", code="rate_limited", retry_after=0.01, rate_limited=True)
            return await super().submit(request)

    assert runner.bot is not None
    provider = AlwaysFullForAWhile(Backend())
    runner.bot.services.providers.register(provider)
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "patient", provider="scripted")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the result after a long wait")
    assert provider.refusals == 0
