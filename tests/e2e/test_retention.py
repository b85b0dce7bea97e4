"""Deleting what nothing refers to any more: a deleted character's images go from the disk, images another
character (or a shot still rendering) uses stay, and nothing stored in the last hour is touched."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain import Actor, BoundImage, JobState, ShotParams, StoredImage, View
from bot.jobs.retention import Janitor, drop_old_audit, drop_posted_clips, sweep_unreferenced
from bot.library.characters import Library
from storage import Storage
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import TRAITS, ava_with_front_view
from tests.support.factories import new_job, open_storage
from tests.support.fake_discord import FakeDiscord, FakeGuild, FakeUser
from tests.support.figures import figure_png
from tests.support.shots import animate, is_state, result_of
from tests.support.waiting import eventually, until

OWNER = Actor(guild_id=1, user_id=10)
HOUR = 3600.0


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async for storage in open_storage(tmp_path):
        yield storage


def age(storage: Storage, *digests: str, seconds: float = 2 * HOUR) -> None:
    """Make blobs look stored `seconds` ago."""
    then = time.time() - seconds
    for digest in digests:
        os.utime(storage.blobs.path_for(digest), (then, then))


def on_disk(storage: Storage) -> set[str]:
    return {digest for digest, _path in storage.blobs.files()}


async def test_only_unnamed_blobs_stored_before_the_grace_period_are_deleted(storage: Storage) -> None:
    character = await Library(storage).create(OWNER, "Ava", "traits")
    named = await storage.blobs.put(b"named" * 200)
    orphan = await storage.blobs.put(b"orphan" * 200)
    fresh_orphan = await storage.blobs.put(b"fresh" * 200)
    await storage.sheets.save(1, character.id, 1, named)
    age(storage, named, orphan)
    (storage.blobs.root / "ab").mkdir(exist_ok=True)
    stray = storage.blobs.root / "ab" / "not-a-blob.txt"  # not the store's: never touched
    stray.write_text("mine")

    swept = await sweep_unreferenced(storage)

    assert (swept.deleted, swept.freed_bytes, swept.kept) == (1, 1200, 2)
    assert on_disk(storage) == {named, fresh_orphan} and stray.exists()
    assert await storage.blobs.get(named) == b"named" * 200


async def test_storing_bytes_already_there_restarts_the_grace_period(storage: Storage) -> None:
    """An upload identical to an image nothing names any more is about to be named again: it must survive."""
    digest = await storage.blobs.put(b"same bytes" * 100)
    age(storage, digest)
    assert await storage.blobs.put(b"same bytes" * 100) == digest
    assert (await sweep_unreferenced(storage)).deleted == 0
    assert on_disk(storage) == {digest}


async def test_a_shot_still_rendering_keeps_the_images_it_was_sent_with(storage: Storage) -> None:
    library = Library(storage)
    character = await library.create(OWNER, "Ava", "traits")
    view = StoredImage(
        original=await storage.blobs.put(b"original"),
        cleaned=await storage.blobs.put(b"cleaned"),
        cutout=await storage.blobs.put(b"cutout"),
    )
    await storage.references.set_view(1, character.id, View.FRONT, view, uploaded_by=OWNER.user_id)
    job = await new_job(
        storage,
        guild_id=1,
        user_id=OWNER.user_id,
        character_id=character.id,
        bound=[BoundImage(label="front", role="view", blob=view.cleaned)],
    )
    age(storage, view.original, view.cleaned, view.cutout)
    assert await storage.characters.delete(1, character.id)

    swept = await sweep_unreferenced(storage)
    assert swept.deleted == 2 and on_disk(storage) == {view.cleaned}  # the queued shot still sends it

    await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.CANCELED)
    assert (await sweep_unreferenced(storage)).deleted == 1 and on_disk(storage) == set()


async def test_a_shots_start_and_end_frames_stay_while_its_job_or_its_confirmation_is_kept(storage: Storage) -> None:
    """A member's frames belong to the shot: kept while it waits (even for hours at a full provider), for a re-roll
    after it, and while it waits for its Confirm press."""
    character = await Library(storage).create(OWNER, "Ava", "traits")
    start, end, waiting = [await storage.blobs.put(data * 300) for data in (b"start", b"end", b"wait")]
    params = ShotParams(duration=5, aspect_ratio="16:9", camera="static", start_frame=start, end_frame=end)
    job = await new_job(storage, guild_id=1, user_id=OWNER.user_id, character_id=character.id, params=params)
    payload = {"shot": {"action": "x", "end_frame": waiting, "start_frame": None}, "parent_job_id": None}
    await storage.pending.create(
        guild_id=1, user_id=OWNER.user_id, channel_id=5, character_id=character.id, shot=json.dumps(payload)
    )
    orphan = await storage.blobs.put(b"orphan" * 300)
    age(storage, start, end, waiting, orphan)

    assert (await sweep_unreferenced(storage)).deleted == 1 and on_disk(storage) == {start, end, waiting}
    await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.CANCELED)
    assert (await sweep_unreferenced(storage)).deleted == 0  # a finished shot can be taken again, frames and all


async def test_the_janitor_sweeps_while_the_bot_runs(storage: Storage) -> None:
    orphan = await storage.blobs.put(b"orphan")
    age(storage, orphan)
    janitor = Janitor(storage, interval=0.01)
    janitor.start()
    try:
        for _ in range(500):
            if janitor.last is not None and not on_disk(storage):
                break
            await asyncio.sleep(0.01)
    finally:
        await janitor.stop()
    assert janitor.last is not None and on_disk(storage) == set()


async def test_audit_entries_older_than_the_days_set_are_deleted(storage: Storage) -> None:
    now = time.time()
    for guild_id, days_ago in ((1, 100), (1, 10), (2, 95), (2, 0)):
        await storage.audit.record(guild_id=guild_id, user_id=5, action="refused.word", detail=f"{days_ago} days")
        await storage.db.execute(
            "UPDATE audit_log SET created_at = ? WHERE id = (SELECT MAX(id) FROM audit_log)", (now - days_ago * 86400,)
        )
    assert await drop_old_audit(storage, 0, clock=lambda: now) == 0  # the default keeps everything
    assert await drop_old_audit(storage, 90, clock=lambda: now) == 2  # every server's
    kept = [(e.guild_id, e.detail) for g in (1, 2) for e in await storage.audit.recent(g)]
    assert kept == [(1, "10 days"), (2, "0 days")]
    assert await drop_old_audit(storage, 90, clock=lambda: now) == 0


# ---------------------------------------------------------------------------------------------------- end to end


async def add_front(fake: FakeDiscord, guild: FakeGuild, user: FakeUser, name: str, png: bytes) -> None:
    h = await fake.slash(guild, user, "character create", {"name": name, "description": TRAITS})
    await h.wait_settled()
    attachment = fake.upload(png, "front.png", "image/png")
    h = await fake.slash(guild, user, "character view add", {"character": name, "view": "front", "image": attachment})
    await h.wait_settled(timeout=30)
    assert h.embeds and h.embeds[0]["title"].startswith("Saved"), h.content


async def delete(fake: FakeDiscord, guild: FakeGuild, user: FakeUser, name: str) -> None:
    """/character delete, then its red "Delete for everyone" button."""
    h = await fake.slash(guild, user, "character delete", {"character": name})
    await h.wait_settled()
    assert h.message is not None
    delete_id = next(c["custom_id"] for row in h.components for c in row["components"] if c["style"] == 4)
    press = await fake.press(h.message, delete_id, user)
    await press.wait_settled()
    assert f"**{name}** was deleted" in press.content


async def test_deleting_a_character_removes_its_images_from_the_disk(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    assert runner.bot is not None
    storage = runner.bot.services.storage
    janitor = runner.bot.services.janitor
    await fake.wait_until(lambda: janitor.last is not None, 15, "the sweep the bot makes once it is ready")
    await add_front(fake, world.studio_a, world.alice, "Ava", figure_png((200, 40, 40)))
    ava_only = on_disk(storage)
    await add_front(fake, world.studio_a, world.alice, "Bo", figure_png((40, 160, 40)))
    await add_front(fake, world.studio_a, world.bob, "Twin", figure_png((200, 40, 40)))  # the same upload as Ava's
    everything = on_disk(storage)
    assert len(ava_only) == 3 and len(everything) == 6
    age(storage, *everything)

    await delete(fake, world.studio_a, world.alice, "Ava")
    assert (await sweep_unreferenced(storage)).deleted == 0  # Twin uses the very same images

    await delete(fake, world.studio_a, world.bob, "Twin")

    swept = await sweep_unreferenced(storage)
    assert swept.deleted == 3 and swept.freed_bytes > 0
    assert on_disk(storage) == everything - ava_only
    h = await fake.slash(world.studio_a, world.alice, "character show", {"character": "Bo"})
    await h.wait_settled()
    assert h.embeds and h.embeds[0]["title"] == "Bo"  # the others' images are untouched


async def days_later(storage: Storage, days: float, keep_clips_days: int) -> int:
    """What the janitor does `days` from now with LIKENESS_KEEP_CLIPS_DAYS=`keep_clips_days`: clips let go of."""
    later = time.time() + days * 86400
    dropped = await drop_posted_clips(storage, keep_clips_days, clock=lambda: later)
    await sweep_unreferenced(storage, clock=lambda: later)
    return dropped


async def test_only_clips_posted_whole_leave_after_the_days_the_admin_set(storage: Storage) -> None:
    character = await Library(storage).create(OWNER, "Ava", "traits")
    clips: dict[str, str] = {}
    for name, whole, kind in (("whole", True, "animate"), ("re-encoded", False, "animate"), ("sheet", True, "sheet")):
        job = await new_job(storage, guild_id=1, user_id=OWNER.user_id, character_id=character.id)
        clips[name] = await storage.blobs.put(name.encode() * 100)
        await storage.db.execute("UPDATE jobs SET kind = ? WHERE id = ?", (kind, job.id))
        await storage.jobs.transition(
            job.id,
            [JobState.QUEUED],
            JobState.DONE,
            result_blob=clips[name],
            result_posted_whole=whole,
            finished_at=time.time(),
        )

    assert await days_later(storage, 40, keep_clips_days=0) == 0  # the default keeps every clip
    assert await days_later(storage, 20, keep_clips_days=30) == 0  # not yet
    assert on_disk(storage) == set(clips.values())
    assert await days_later(storage, 31, keep_clips_days=30) == 1
    assert on_disk(storage) == {clips["re-encoded"], clips["sheet"]}


async def test_a_clip_posted_whole_leaves_the_data_folder_after_the_days_set(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await ava_with_front_view(fake, world)
    job_id = await animate(fake, world, "waves at the camera")
    await until(fake, lambda: bool(result_of(fake, world, job_id)), "the clip")
    assert runner.bot is not None
    storage = runner.bot.services.storage
    await eventually(lambda: is_state(runner, job_id, JobState.DONE), "done")  # posted, then done
    job = await storage.jobs.get(job_id)
    assert job is not None and job.result_blob is not None and job.result_posted_whole
    views = on_disk(storage) - {job.result_blob}

    assert await days_later(storage, 31, keep_clips_days=30) == 1
    assert on_disk(storage) == views  # the clip went; the character's images stay
    job = await storage.jobs.get(job_id)
    assert job is not None and job.result_blob is None and job.state is JobState.DONE
    assert len(result_of(fake, world, job_id)) == 1  # the channel still has it


async def test_the_audit_log_forgets_refused_words_after_the_days_set(
    fake: FakeDiscord, world: World, runner: BotRunner
) -> None:
    await runner.stop()
    runner.settings = runner.settings.model_copy(update={"keep_audit_days": 90})
    bot = await runner.start()
    await ava_with_front_view(fake, world)

    async def audit() -> str:
        h = await fake.slash(world.studio_a, world.mo, "settings audit", {})
        await h.wait_settled()
        return h.embeds[0]["description"]

    h = await fake.slash(
        world.studio_a, world.mo, "settings blocklist", {"action": "add", "kind": "word", "value": "gore"}
    )
    await h.wait_settled()
    h = await fake.slash(world.studio_a, world.alice, "animate", {"character": "Ava", "prompt": "walks in gore"})
    await h.wait_settled()
    assert h.ephemeral and "block list does not allow the prompt" in h.content, h.content
    assert "walks in gore" in await audit()

    bot.services.janitor.clock = lambda: time.time() + 89 * 86400
    await bot.services.janitor.run_once()
    assert "walks in gore" in await audit()  # not yet
    bot.services.janitor.clock = lambda: time.time() + 91 * 86400
    await bot.services.janitor.run_once()
    assert await audit() == "Nothing yet: refusals and settings changes show here."
    settings = await bot.services.storage.guilds.get(world.studio_a.id)
    assert settings.rules.blocked_words == ["gore"]  # the log is forgotten, not the setting it recorded
