"""Rows the storage-level tests need, made the way the bot makes them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bot.domain import BoundImage, Job, Money, ShotParams
from storage import Storage
from storage.db import Transaction


async def open_storage(folder: Path) -> AsyncIterator[Storage]:
    """A migrated database and blob store in `folder` (for a fixture: `yield from`-style async generator)."""
    storage = await Storage.open(folder / "db.sqlite3", folder / "blobs")
    try:
        yield storage
    finally:
        await storage.close()


async def new_job(
    storage: Storage,
    *,
    guild_id: int,
    user_id: int,
    character_id: int,
    provider: str = "scripted",
    model: str = "m",
    cost: Money = Money.ZERO,
    bound: Sequence[BoundImage] = (),
    tx: Transaction | None = None,
    params: ShotParams | None = None,
) -> Job:
    """A queued animation shot of a character called Ava."""
    return await storage.jobs.create(
        guild_id=guild_id,
        channel_id=5,
        user_id=user_id,
        character_id=character_id,
        character_name="Ava",
        character_version=1,
        kind="animate",
        provider=provider,
        model=model,
        action="a",
        prompt="p",
        negative_prompt=None,
        params=params or ShotParams(duration=5, aspect_ratio="16:9", camera="static"),
        bound=list(bound),
        cost_estimate=cost,
        tx=tx,
    )
