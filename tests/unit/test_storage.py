"""Migrations (fresh and from every earlier version), repositories' guild scoping, and the blob store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage import Storage
from storage.blobs import BlobNotFoundError, BlobStore
from storage.characters import NameTakenError
from storage.db import Database, Migration, SchemaTooNewError, bundled_migrations

MIGRATIONS = bundled_migrations()
LATEST = MIGRATIONS[-1].version


async def schema_of(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetchall(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [(str(row[0]), " ".join(str(row[1]).split())) for row in rows]


async def test_fresh_database_reaches_latest_version(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "fresh.sqlite3")
    applied = await db.migrate()
    assert applied == list(range(1, LATEST + 1))
    assert await db.schema_version() == LATEST
    assert await db.migrate() == []  # a second start applies nothing
    journal = await db.fetchone("PRAGMA journal_mode")
    foreign_keys = await db.fetchone("PRAGMA foreign_keys")
    assert journal is not None and journal[0] == "wal"
    assert foreign_keys is not None and foreign_keys[0] == 1
    await db.close()


# Rows that each schema version can hold, to prove an upgrade keeps the data.
SEED_AT: dict[int, list[str]] = {
    1: [
        "INSERT INTO guild_settings (guild_id, provider) VALUES (1, 'local')",
        "INSERT INTO characters (id, guild_id, name, name_key, description, owner_id) "
        "VALUES (7, 1, 'Ava', 'ava', 'tall, red hair', 42)",
    ],
    2: [
        "INSERT INTO reference_views (guild_id, character_id, view, original_blob, uploaded_by) "
        "VALUES (1, 7, 'front', 'abc', 42)",
    ],
}


@pytest.mark.parametrize("start", range(LATEST))
async def test_upgrade_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    fresh = await Database.open(tmp_path / "fresh.sqlite3")
    await fresh.migrate()
    expected_schema = await schema_of(fresh)
    await fresh.close()

    db = await Database.open(tmp_path / "old.sqlite3")
    await db.migrate(MIGRATIONS[:start])
    assert await db.schema_version() == start
    for version in range(1, start + 1):
        for statement in SEED_AT.get(version, []):
            await db.execute(statement)

    assert await db.migrate() == list(range(start + 1, LATEST + 1))
    assert await db.schema_version() == LATEST
    assert await schema_of(db) == expected_schema
    if start >= 1:
        row = await db.fetchone("SELECT name, owner_id FROM characters WHERE id = 7")
        assert row is not None and tuple(row) == ("Ava", 42)
    await db.close()


async def test_the_jobs_rebuild_keeps_jobs_and_their_money(tmp_path: Path) -> None:
    """Migration 011 rebuilds the jobs table the ledger refers to: rows, ledger links and foreign keys survive, and a
    job caught mid-submit is marked as possibly sent (looked up, or left to a manager, never simply re-sent)."""
    db = await Database.open(tmp_path / "db.sqlite3")
    await db.migrate(MIGRATIONS[:10])
    for statement in SEED_AT[1]:
        await db.execute(statement)
    columns = (
        "guild_id, channel_id, user_id, character_id, character_name, character_version, kind, provider, model, "
        "action, prompt, params, bound, cost_estimate, state, created_at"
    )
    for job_id, state in ((1, "submitting"), (2, "running"), (3, "done")):
        await db.execute(
            f"INSERT INTO jobs (id, {columns}) VALUES (?, 1, 5, 42, 7, 'Ava', 1, 'animate', 'fal', 'm', 'waves', "
            "'p', '{}', '[]', '0.56', ?, 1.0)",
            (job_id, state),
        )
        await db.execute(
            "INSERT INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
            "VALUES (1, 42, ?, 'reserve', 560000, '2026-12-03', 1.0)",
            (job_id,),
        )
    assert await db.migrate() == [11]
    rows = await db.fetchall("SELECT id, state, submit_sent, waiting_since FROM jobs ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "submitting", 1, None), (2, "running", 0, None), (3, "done", 0, None)]
    assert await db.fetchall("PRAGMA foreign_key_check") == []
    assert (await db.fetchone("PRAGMA foreign_keys") or [0])[0] == 1
    await db.execute("UPDATE jobs SET state = 'unsure' WHERE id = 1")  # the new state is allowed
    with pytest.raises(Exception, match="FOREIGN KEY"):
        await db.execute(
            "INSERT INTO ledger (guild_id, user_id, job_id, entry, micros, day, created_at) "
            "VALUES (1, 42, 99, 'reserve', 1, '2026-12-03', 1.0)"
        )
    with pytest.raises(Exception, match="CHECK"):
        await db.execute("UPDATE jobs SET state = 'lost' WHERE id = 2")
    await db.close()


async def test_failed_migration_rolls_back_whole(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "db.sqlite3")
    await db.migrate(MIGRATIONS[:1])
    broken = Migration(2, "002_broken.sql", "CREATE TABLE half_done (id INTEGER);\nTHIS IS NOT SQL;")
    with pytest.raises(Exception, match="syntax error"):
        await db.migrate([*MIGRATIONS[:1], broken])
    assert await db.schema_version() == 1
    assert await db.fetchone("SELECT name FROM sqlite_master WHERE name = 'half_done'") is None
    await db.close()


async def test_database_from_newer_likeness_is_refused(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "db.sqlite3")
    await db.migrate()
    await db.execute(f"PRAGMA user_version = {LATEST + 5}")
    with pytest.raises(SchemaTooNewError, match="newer than this Likeness"):
        await db.migrate()
    await db.close()


async def test_character_names_unique_per_guild_any_case(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    with pytest.raises(NameTakenError):
        await storage.characters.create(1, "AVA", "short", owner_id=11)
    other = await storage.characters.create(2, "ava", "short", owner_id=11)  # another server: fine
    assert (await storage.characters.get_by_name(1, "aVa")) == ava
    # scoped by guild: guessing another server's id finds nothing, and changes nothing
    assert await storage.characters.get(1, other.id) is None
    assert await storage.characters.update(1, other.id, description="hijacked") is None
    assert await storage.characters.delete(1, other.id) is False
    still = await storage.characters.get(2, other.id)
    assert still is not None and still.description == "short"
    await storage.close()


async def test_character_names_unique_per_guild_by_look(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    for look_alike in ("\u0410va", "\u0391VA", "\uff21va"):  # a Cyrillic A, a Greek Alpha, a full-width A
        with pytest.raises(NameTakenError):
            await storage.characters.create(1, look_alike, "short", owner_id=11)
        assert await storage.characters.clashing(1, look_alike) == ava
    await storage.characters.create(2, "\u0410va", "short", owner_id=11)  # another server: fine
    bea = await storage.characters.create(1, "Bea", "short", owner_id=11)
    with pytest.raises(NameTakenError):  # a rename too
        await storage.characters.update(1, bea.id, name="\u0410va")
    assert await storage.characters.clashing(1, "Bea", other_than=bea.id) is None
    assert await storage.characters.count(1) == 2
    await storage.close()


async def test_the_name_skeleton_migration_fills_existing_rows(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "db.sqlite3")
    before = next(index for index, migration in enumerate(MIGRATIONS) if migration.name.endswith("_name_skeletons.sql"))
    await db.migrate(MIGRATIONS[:before])
    for number, (guild, name) in enumerate([(1, "Ava"), (1, "\u0410va"), (1, "Bob"), (2, "\u0410VA")], start=1):
        await db.execute(
            "INSERT INTO characters (id, guild_id, name, name_key, description, owner_id) VALUES (?, ?, ?, ?, '', 1)",
            (number, guild, name, name.casefold()),
        )
    await db.migrate()
    rows = await db.fetchall("SELECT id, name_skeleton FROM characters ORDER BY id")
    # look-alikes made before the rule both stay: the oldest holds the skeleton
    assert [tuple(row) for row in rows] == [(1, "ava"), (2, None), (3, "bob"), (4, "ava")]
    await db.close()
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    with pytest.raises(NameTakenError):
        await storage.characters.create(1, "\u0391va", "new", owner_id=1)
    await storage.close()


def test_blob_store_is_content_addressed_and_atomic(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(4096)
    digest = store.put_sync(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_sync(digest) == data
    assert store.put_sync(data) == digest  # same bytes, same blob
    path = store.path_for(digest)
    assert path.parent.parent.name == digest[:2]
    # no temporary files are left behind
    assert [p.name for p in path.parent.iterdir()] == [digest]


def test_blob_store_detects_missing_and_corrupt_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_sync(b"hello")
    with pytest.raises(BlobNotFoundError):
        store.get_sync("0" * 64)
    store.path_for(digest).write_bytes(b"tampered")
    with pytest.raises(BlobNotFoundError, match="corrupt"):
        store.get_sync(digest)
    with pytest.raises(ValueError, match="sha256"):
        store.path_for("../../etc/passwd")


async def test_blob_store_async_api(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = await store.put(b"async bytes")
    assert await store.get(digest) == b"async bytes"


async def test_guild_settings_round_trip_and_defaults(tmp_path: Path) -> None:
    from bot.domain import GuildSettings

    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    assert await storage.guilds.get(5) == GuildSettings(guild_id=5)
    saved = GuildSettings(guild_id=5, provider="local", negative_presets=["hands"], negative_extra="blur")
    await storage.guilds.save(saved)
    assert await storage.guilds.get(5) == saved
    await storage.guilds.save(saved.model_copy(update={"negative_presets": []}))
    assert (await storage.guilds.get(5)).negative_presets == []  # none at all is not the same as the defaults
    await storage.close()
