"""What the storage keeps in memory (each server's characters, every server's settings) always says what the
database says: a write is seen by the next read, in its own server only, whatever path it took (a single
statement, a transaction, one that rolled back, one racing a read); and single statements queued at once never
slip into another task's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain import Character, ElementKind, GuildSettings, ServerRules, StoredImage, View
from storage import Storage
from storage.characters import CharacterRepository, NameTakenError
from storage.references import NewElement

IMAGE = StoredImage(original="a" * 64, cleaned="b" * 64, cutout="c" * 64)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    yield opened
    await opened.close()


async def from_database(storage: Storage, guild_id: int) -> list[Character]:
    """The server's characters read afresh (a repository with nothing in memory)."""
    return await CharacterRepository(storage.db).all(guild_id)


async def assert_coherent(storage: Storage, *guild_ids: int) -> None:
    for guild_id in guild_ids:
        assert await storage.characters.all(guild_id) == await from_database(storage, guild_id)


async def test_a_write_is_seen_by_the_next_read_in_its_server_only(storage: Storage) -> None:
    assert await storage.characters.all(1) == []  # read (and kept) before any write
    assert await storage.characters.all(2) == []
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    assert await storage.characters.get_by_name(1, "AVA") == ava
    assert await storage.characters.get(1, ava.id) == ava
    assert await storage.characters.count(1) == 1
    assert await storage.characters.get(2, ava.id) is None  # another server never sees it
    assert await storage.characters.get_by_name(2, "Ava") is None
    assert await storage.characters.all(2) == []

    renamed = await storage.characters.update(1, ava.id, name="Bea", description="short", bump_version=True)
    assert renamed is not None and renamed.version == 2
    assert await storage.characters.get_by_name(1, "Ava") is None
    assert await storage.characters.get_by_name(1, "bea") == renamed
    assert await storage.characters.update(2, ava.id, locked=True) is None  # another server's id changes nothing
    assert await storage.characters.get(1, ava.id) == renamed
    await assert_coherent(storage, 1, 2)

    assert await storage.characters.delete(1, ava.id) is True
    assert await storage.characters.get(1, ava.id) is None
    assert await storage.characters.get_by_name(1, "Bea") is None
    assert await storage.characters.count(1) == 0
    await assert_coherent(storage, 1, 2)


async def test_the_read_at_start_puts_each_server_in_its_own_copy(storage: Storage) -> None:
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    bea = await storage.characters.create(2, "Bea", "short", owner_id=11)
    warmed = CharacterRepository(storage.db)
    await warmed.warm()
    assert await warmed.all(1) == [ava]
    assert await warmed.all(2) == [bea]
    assert await warmed.get(1, bea.id) is None
    assert await warmed.all(3) == []


async def test_commands_asking_at_once_share_one_read(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    fresh = CharacterRepository(storage.db)
    reads: list[str] = []
    read = storage.db.fetchall

    async def counted(sql: str, params: tuple[object, ...] = ()) -> list[object]:
        reads.append(sql)
        return list(await read(sql, params))

    monkeypatch.setattr(storage.db, "fetchall", counted)
    found = await asyncio.gather(*(fresh.get_by_name(1, "Ava") for _ in range(10)), fresh.all(2))
    assert found == [ava] * 10 + [[]]
    assert len(reads) == 2  # one per server
    assert await fresh.get(1, ava.id) == ava and len(reads) == 2


async def test_the_library_is_in_name_order_like_the_database(storage: Storage) -> None:
    for name in ("zed", "Émile", "ava", "Bea", "ava 2"):
        await storage.characters.create(1, name, "traits", owner_id=10)
    assert [c.name for c in await storage.characters.all(1)] == [c.name for c in await from_database(storage, 1)]
    await assert_coherent(storage, 1)


async def test_transactions_are_seen_once_committed_and_not_when_rolled_back(storage: Storage) -> None:
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    await storage.references.set_view(1, ava.id, View.FRONT, IMAGE, uploaded_by=10)  # bumps the version
    after_view = await storage.characters.get(1, ava.id)
    assert after_view is not None and after_view.version == ava.version + 1
    await storage.references.add_element(1, ava.id, "jacket", ElementKind.OUTFIT, IMAGE)
    with pytest.raises(NameTakenError):  # the same element again: the transaction rolls back, version and all
        await storage.references.add_element(1, ava.id, "Jacket", ElementKind.OUTFIT, IMAGE)
    after_element = await storage.characters.get(1, ava.id)
    assert after_element is not None and after_element.version == ava.version + 2
    await assert_coherent(storage, 1)

    imported = await storage.references.create_character_with(
        1, "Cleo", "short", 11, [(View.FRONT, IMAGE)], [NewElement("hat", ElementKind.PROP, IMAGE)]
    )
    assert await storage.characters.get_by_name(1, "cleo") == imported
    with pytest.raises(NameTakenError):  # a second import of the same name leaves no trace
        await storage.references.create_character_with(
            1, "Dora", "x", 11, [], [NewElement("a", ElementKind.PROP, IMAGE)] * 2
        )
    assert await storage.characters.get_by_name(1, "Dora") is None
    assert await storage.characters.all(2) == []
    await assert_coherent(storage, 1, 2)


async def test_reads_racing_writes_never_keep_an_old_copy(storage: Storage) -> None:
    await storage.characters.create(1, "Ava", "tall", owner_id=10)
    for round_ in range(20):
        fresh = CharacterRepository(storage.db)  # nothing in memory: its first read races the writes
        characters_before = await from_database(storage, 3)
        writes = [fresh.create(3, f"C{round_}-{i}", "x", owner_id=1) for i in range(3)]
        reads = [fresh.all(3), fresh.get_by_name(3, f"C{round_}-0"), fresh.count(3)]
        await asyncio.gather(*reads[:1], *writes, *reads[1:])
        assert len(await fresh.all(3)) == len(characters_before) + 3
        assert await fresh.all(3) == await from_database(storage, 3)


async def test_a_single_statement_never_lands_inside_another_tasks_transaction(storage: Storage) -> None:
    await storage.db.execute("CREATE TABLE t (x INTEGER)")
    seen_inside: list[int] = []

    async def transaction() -> None:
        async with storage.db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            await asyncio.sleep(0)  # let the other task run while the transaction is open
            row = await tx.fetchone("SELECT COUNT(*) FROM t")
            assert row is not None
            seen_inside.append(int(row[0]))
            raise_rollback()

    def raise_rollback() -> None:
        raise LookupError("roll back")

    async def single() -> None:
        await storage.db.execute("INSERT INTO t VALUES (2)")

    results = await asyncio.gather(transaction(), single(), return_exceptions=True)
    assert isinstance(results[0], LookupError)
    assert seen_inside == [1]  # the other task's insert was not inside the transaction ...
    rows = await storage.db.fetchall("SELECT x FROM t")
    assert [row[0] for row in rows] == [2]  # ... nor rolled back with it


async def test_server_settings_in_memory_follow_every_save(storage: Storage) -> None:
    await storage.guilds.save(GuildSettings(guild_id=1, provider="local"))
    await storage.guilds.load()
    assert storage.guilds.kept(1) == GuildSettings(guild_id=1, provider="local")
    assert storage.guilds.kept(2) is None
    assert await storage.guilds.get(2) == GuildSettings(guild_id=2)
    rules = ServerRules(blocked_words=["camera"], max_running=2)
    saved = GuildSettings(guild_id=2, rules=rules)
    await storage.guilds.save(saved)
    assert await storage.guilds.get(2) == saved
    assert storage.guilds.kept(2) == saved
    assert (await storage.guilds.get(1)).rules == ServerRules()  # another server keeps its own
    reread = await Storage.open(storage.db.path, Path(storage.db.path).parent / "blobs")
    try:
        assert await reread.guilds.get(2) == saved  # what memory says is what the database says
    finally:
        await reread.close()


async def test_a_taken_name_is_known_from_memory_as_the_unique_indexes_say(storage: Storage) -> None:
    ava = await storage.characters.create(1, "Ava", "tall", owner_id=10)
    assert await storage.characters.is_taken(1, "aVA")  # any case
    assert await storage.characters.is_taken(1, "\u0410va")  # a Cyrillic capital A: the same look
    assert not await storage.characters.is_taken(2, "Ava")  # another server's name is free
    await storage.characters.update(1, ava.id, name="Bea", description="tall", bump_version=True)
    assert not await storage.characters.is_taken(1, "Ava") and await storage.characters.is_taken(1, "bea")
    fresh = CharacterRepository(storage.db)  # read afresh: the same answers from the stored key and skeleton
    assert await fresh.is_taken(1, "BEA") and not await fresh.is_taken(1, "Ava")
    await storage.characters.delete(1, ava.id)
    assert not await storage.characters.is_taken(1, "Bea")
    for name in ("Bea", "Ava"):  # what memory calls free, the database takes
        await storage.characters.create(1, name, "again", owner_id=10)
