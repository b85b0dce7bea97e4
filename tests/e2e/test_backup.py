"""`likeness backup` / `likeness restore` and the instance lock: an online backup taken while the real bot writes,
restored into a fresh data directory and over a live one; refusals (bot running, tampered archives, path
traversal, newer schema); the CLI as an admin runs it."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.domain import StoredImage, View
from bot.infra.config import Settings
from bot.infra.instance_lock import InstanceLock, InstanceLockedError
from bot.ops import backup as backup_module
from bot.ops.backup import (
    DB_MEMBER,
    MANIFEST,
    RestoreCanceledError,
    RestoreError,
    backup,
    backup_async,
    latest_schema,
    read_manifest,
    restore,
    restore_command,
)
from storage import Storage
from tests.support.bot_runner import BotRunner, World
from tests.support.characters import add_view, new_character
from tests.support.cli import run_likeness
from tests.support.factories import new_job
from tests.support.fake_discord import FakeDiscord
from tests.support.figures import figure_png

Rows = dict[str, set[tuple[Any, ...]]]


# ---------------------------------------------------------------------------------------------------- helpers


def table_rows(db: Path) -> Rows:
    """Every row of every table, read through a connection of its own (as another process would)."""
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: set(conn.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names}


def integrity(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")] + [
            f"fk {row}" for row in conn.execute("PRAGMA foreign_key_check")
        ]


def blob_files(root: Path) -> dict[str, Path]:
    return {p.name: p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def referenced_blobs(rows: Rows) -> set[str]:
    """Every blob digest the database refers to (views, elements, sheets)."""
    found: set[str] = set()
    for table in ("reference_views", "elements"):
        for row in rows.get(table, set()):
            found.update(value for value in row if isinstance(value, str) and len(value) == 64)
    found.update(row[4] for row in rows.get("sheets", set()))
    return found


async def seed_data_dir(data_dir: Path, *, blobs: int = 5, characters: int = 2) -> Settings:
    """A data directory as a stopped bot leaves it: a migrated database, a few characters and blobs."""
    settings = Settings(data_dir=data_dir)
    storage = await Storage.open(settings.db_path, settings.blob_dir)
    try:
        digests = [await storage.blobs.put(os.urandom(2000) + bytes([i])) for i in range(blobs)]
        for i in range(characters):
            image = StoredImage(original=digests[i % blobs], cleaned=digests[i % blobs], cutout=digests[i % blobs])
            await storage.references.create_character_with(1, f"Seed {i}", "traits", 7, [(View.FRONT, image)], [])
    finally:
        await storage.close()
    return settings


def rewrite(
    archive: Path,
    out: Path,
    change: Callable[[str, bytes], tuple[str, bytes] | None] = lambda name, data: (name, data),
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A copy of the archive with members changed (None drops one) and extra members added: a tampered backup."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            changed = change(info.filename, source.read(info))
            if changed is not None:
                target.writestr(changed[0], changed[1])
        for name, data in (extra or {}).items():
            target.writestr(name, data)
    return out


def flip_byte(data: bytes, at: int | None = None) -> bytes:
    position = len(data) // 2 if at is None else at
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]


def snapshot_dir(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes (the lock file excluded): to show a refused restore changed nothing."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "likeness.lock"
    }


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Settings, Path]:
    """A seeded data directory and a backup of it."""
    settings = asyncio.run(seed_data_dir(tmp_path / "data"))
    result = backup(settings, tmp_path / "backup.zip")
    return settings, result.path


# ---------------------------------------------------------------------------------------------------- online backup


async def test_backup_while_the_bot_writes_restores_a_consistent_snapshot(
    fake: FakeDiscord, world: World, runner: BotRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = runner.bot
    assert bot is not None
    storage = bot.services.storage
    guild, alice = world.studio_a.id, world.alice.id
    db_path, blob_dir = runner.settings.db_path, runner.settings.blob_dir

    # Members' work through Discord: a character with a real uploaded, cleaned view.
    await new_character(fake, world)
    await add_view(fake, world, "front", figure_png())
    # Bulk, so the copy takes long enough to overlap writes: ~35 MB of rows and 12 MB of images.
    await storage.db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000) "
        "INSERT INTO audit_log (guild_id, user_id, action, detail, created_at) "
        "SELECT ?, ?, 'filler', hex(randomblob(250)), ? FROM n",
        (guild, alice, time.time()),
    )
    for _ in range(150):
        await storage.blobs.put(os.urandom(80_000))

    committed: list[float] = []  # when each writer transaction committed
    copying: list[float] = []  # when the database copy (the backup API step) started and ended
    real_copy = backup_module._online_copy

    def timed_copy(source: Path, copy: Path) -> None:
        copying.append(time.monotonic())
        real_copy(source, copy)
        copying.append(time.monotonic())
        # The backup goes on (blobs, manifest) only once the bot has committed again: so a write certainly lands
        # while the backup runs and after its snapshot, and the restore below must not have it.
        seen, deadline = len(committed), time.monotonic() + 30
        while len(committed) == seen and time.monotonic() < deadline:
            time.sleep(0.005)

    monkeypatch.setattr(backup_module, "_online_copy", timed_copy)
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            original = await storage.blobs.put(os.urandom(30_000))
            cleaned = await storage.blobs.put(os.urandom(20_000))
            cutout = await storage.blobs.put(os.urandom(20_000))
            image = StoredImage(original=original, cleaned=cleaned, cutout=cutout)
            await storage.references.create_character_with(
                guild, f"Bulk {i:04d}", "traits", alice, [(View.FRONT, image)], []
            )
            committed.append(time.monotonic())
            if i % 10 == 0:  # and members keep using the bot
                h = await fake.slash(
                    world.studio_a, world.alice, "character create", {"name": f"Slash {i:04d}", "description": "x"}
                )
                await h.wait_settled()
            i += 1
            await asyncio.sleep(0)

    writing = asyncio.create_task(writer())
    await fake.wait_until(lambda: len(committed) >= 5, 10, "the writer to get going")
    before = await asyncio.to_thread(table_rows, db_path)
    blobs_before = set(blob_files(blob_dir))
    (tmp_path / "backups").mkdir()
    started = time.monotonic()
    result = await backup_async(runner.settings, tmp_path / "backups")
    finished = time.monotonic()
    await fake.wait_until(lambda: committed[-1] > finished, 10, "a write after the backup")
    stop.set()
    await writing
    after = await asyncio.to_thread(table_rows, db_path)

    during = [t for t in committed if started < t < finished]
    assert during, "the bot committed writes while the backup ran"
    assert [t for t in during if t > copying[1]], "including after the database was copied, before the backup ended"
    print(
        f"\nbackup: {result.seconds:.2f} s, archive {result.archive_bytes / 1e6:.1f} MB "
        f"(database {result.manifest.database.bytes / 1e6:.1f} MB, {len(result.manifest.blobs)} blobs "
        f"{result.manifest.blob_bytes / 1e6:.1f} MB), {len(during)} writer commits during it, "
        f"database copy {copying[1] - copying[0]:.3f} s, "
        f"{len([t for t in committed if copying[0] < t < copying[1]])} commits during the copy itself"
    )
    assert result.path.parent == tmp_path / "backups" and result.path.name.startswith("likeness-backup-")
    assert result.damaged_blobs == []

    # Restore into a fresh data directory.
    fresh = Settings(data_dir=tmp_path / "restored")
    restored_result = restore(fresh, result.path)
    assert restored_result.moved_aside is None  # nothing was there
    assert integrity(fresh.db_path) == ["ok"]
    restored = table_rows(fresh.db_path)
    assert set(restored) == set(before) == set(after)

    # A consistent snapshot: everything committed before the backup started, nothing that was never committed,
    # and the writer's characters form a prefix (no later write without the earlier ones).
    for table in restored:
        if table == "sqlite_sequence":  # AUTOINCREMENT counters only grow
            counters = [dict(rows[table]) for rows in (before, restored, after)]
            for name, value in counters[1].items():
                assert counters[0].get(name, 0) <= value <= counters[2][name], name
            continue
        assert before[table] <= restored[table], f"{table}: rows committed before the backup are missing"
        assert restored[table] <= after[table], f"{table}: rows that the live database never had"
    bulk = sorted(row[2] for row in restored["characters"] if row[2].startswith("Bulk "))
    assert bulk == [f"Bulk {i:04d}" for i in range(len(bulk))]
    assert len(bulk) >= len([row for row in before["characters"] if row[2].startswith("Bulk ")])
    assert len(bulk) < len([row for row in after["characters"] if row[2].startswith("Bulk ")])
    assert result.manifest.tables == {name: len(rows) for name, rows in restored.items() if name != "sqlite_sequence"}

    # Every blob: byte for byte, everything the snapshot refers to, everything there was before.
    restored_blobs = blob_files(fresh.blob_dir)
    live_blobs = blob_files(blob_dir)
    assert set(restored_blobs) == set(result.manifest.blobs)
    assert blobs_before <= set(restored_blobs)
    assert referenced_blobs(restored) <= set(restored_blobs)
    for digest, path in restored_blobs.items():
        assert filecmp.cmp(path, live_blobs[digest], shallow=False), digest
        assert path.relative_to(fresh.blob_dir) == live_blobs[digest].relative_to(blob_dir)

    # Restore over the live data directory once the bot is stopped: the newer data is moved aside, and the bot
    # starts on the restored library (migrations as usual).
    await runner.stop()
    live_before_restore = table_rows(db_path)
    over = restore(runner.settings, result.path)
    assert over.moved_aside is not None and over.moved_aside.parent == runner.settings.data_dir
    assert over.moved_aside.name.startswith("before-restore-")
    assert table_rows(over.moved_aside / "likeness.sqlite3") == live_before_restore
    assert set(blob_files(over.moved_aside / "blobs")) == set(live_blobs)
    now = table_rows(db_path)
    assert {t: rows for t, rows in now.items() if t != "sqlite_sequence"} == {
        t: rows for t, rows in restored.items() if t != "sqlite_sequence"
    }
    # Ids go on from where the replaced database was: none handed out after the backup is handed out again.
    assert dict(now["sqlite_sequence"]) == dict(live_before_restore["sqlite_sequence"])
    assert dict(live_before_restore["sqlite_sequence"])["characters"] > dict(restored["sqlite_sequence"])["characters"]
    await runner.start()
    assert runner.bot is not None
    names = {c.name for c in await runner.bot.services.storage.characters.all(guild)}
    assert names == {row[2] for row in restored["characters"] if row[1] == guild}
    newest = f"Bulk {len(bulk):04d}"  # committed after the snapshot: gone from the restored library
    h = await fake.slash(world.studio_a, world.alice, "character show", {"character": "Ava"})
    await h.wait_settled()
    assert h.embeds and "Ava" in str(h.embeds[0].get("title", ""))
    assert newest not in names


def test_the_database_copy_neither_waits_for_a_writer_nor_takes_its_uncommitted_rows(
    tmp_path: Path, seeded: tuple[Settings, Path]
) -> None:
    """What lets the bot keep writing through a backup: the copy is one read transaction in WAL mode. A writer
    holding its transaction open does not hold the copy up, and what it has not committed is not in the copy;
    once it commits, the writer's row is in the live database and the copy is still the snapshot."""
    settings, _ = seeded
    with contextlib.closing(sqlite3.connect(settings.db_path, isolation_level=None)) as writer:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.execute("BEGIN IMMEDIATE")  # the write lock, held through the copy
        writer.execute(
            "INSERT INTO audit_log (guild_id, user_id, action, detail, created_at) VALUES (1, 2, 'mid-copy', '', 0)"
        )
        copy = tmp_path / "copy.sqlite3"
        # Were it to wait for the write lock, it would fail with "database is locked" after its busy timeout.
        backup_module._online_copy(settings.db_path, copy)  # pyright: ignore[reportPrivateUsage]
        writer.execute("COMMIT")
    copied, live = table_rows(copy), table_rows(settings.db_path)
    assert [row for row in copied["audit_log"] if row[3] == "mid-copy"] == []
    assert len([row for row in live["audit_log"] if row[3] == "mid-copy"]) == 1
    untouched = set(live) - {"audit_log", "sqlite_sequence"}  # the write's table and its AUTOINCREMENT counter
    assert {name: live[name] for name in untouched} == {name: copied[name] for name in untouched}


# ---------------------------------------------------------------------------------------------------- restore


def test_restore_moves_the_current_data_aside(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    settings, archive = seeded
    target = asyncio.run(seed_data_dir(tmp_path / "other", blobs=3, characters=1))
    (target.db_path.parent / "likeness.sqlite3-wal").write_bytes(b"")  # a crashed bot's WAL goes aside with it
    old_db, old_blobs = target.db_path.read_bytes(), set(blob_files(target.blob_dir))
    killed = target.data_dir / ".restore-20260101T000000Z-1"  # what a restore killed partway leaves
    (killed / "blobs").mkdir(parents=True)
    (killed / "likeness.sqlite3").write_bytes(b"half a database")

    result = restore(target, archive)

    assert result.moved_aside is not None
    assert sorted(p.name for p in result.moved_aside.iterdir()) == [
        "blobs",
        "likeness.sqlite3",
        "likeness.sqlite3-shm",  # made by reading its id counters (SQLite's WAL index)
        "likeness.sqlite3-wal",
    ]
    assert (result.moved_aside / "likeness.sqlite3").read_bytes() == old_db
    assert set(blob_files(result.moved_aside / "blobs")) == old_blobs
    assert not (target.db_path.parent / "likeness.sqlite3-wal").exists()
    assert table_rows(target.db_path) == table_rows(settings.db_path)
    assert set(blob_files(target.blob_dir)) == set(blob_files(settings.blob_dir))
    assert [p.name for p in target.data_dir.iterdir() if p.name.startswith(".restore")] == []  # staging removed,
    # and the one a killed restore left behind


def test_ids_handed_out_after_the_backup_are_not_handed_out_again(
    tmp_path: Path, seeded: tuple[Settings, Path]
) -> None:
    """Shots made after the backup went to providers (Kling finds a task by its shot's id) and have buttons in
    Discord carrying their ids: after a restore, new shots must not take those ids again."""
    settings, archive = seeded

    async def shots(count: int) -> list[int]:
        storage = await Storage.open(settings.db_path, settings.blob_dir)
        try:
            character = (await storage.characters.all(1))[0]
            return [(await new_job(storage, guild_id=1, user_id=7, character_id=character.id)).id for _ in range(count)]
        finally:
            await storage.close()

    after_backup = asyncio.run(shots(3))  # sent to a provider, posted with buttons ...
    restore(settings, archive)  # ... then the admin restores the backup made before them
    [first_new] = asyncio.run(shots(1))
    assert first_new > max(after_backup)


def test_restored_database_is_migrated_at_next_start(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    fresh = Settings(data_dir=tmp_path / "fresh")
    restore(fresh, archive)

    async def open_it() -> list[str]:
        storage = await Storage.open(fresh.db_path, fresh.blob_dir)
        try:
            return [c.name for c in await storage.characters.all(1)]
        finally:
            await storage.close()

    assert sorted(asyncio.run(open_it())) == ["Seed 0", "Seed 1"]


def test_restore_refused_while_the_bot_holds_the_lock(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    before = snapshot_dir(target.data_dir)
    holder = subprocess.Popen(  # what `likeness run` does for its whole life, in another process
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from bot.infra.instance_lock import InstanceLock\n"
            f"lock = InstanceLock(Path({str(target.data_dir)!r})); lock.acquire(); print('locked', flush=True)\n"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLockedError) as caught:
            restore(target, archive)
        assert caught.value.pid == holder.pid
        assert str(caught.value).startswith(f"Likeness is already running on {target.data_dir.resolve()}")

        cli = run_likeness(tmp_path, "restore", str(archive), "--yes", env={"LIKENESS_DATA_DIR": str(target.data_dir)})
        assert cli.returncode == 2
        assert cli.stderr.startswith("Refusing to restore: Likeness is already running on ")
        assert f"process {holder.pid}" in cli.stderr and "Stop it first" in cli.stderr
        assert snapshot_dir(target.data_dir) == before
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    # the holder exited: its lock went with it, and the restore goes through
    assert restore(target, archive).moved_aside is not None


def test_tampered_database_is_refused(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    before = snapshot_dir(target.data_dir)
    tampered = rewrite(archive, tmp_path / "t.zip", lambda n, d: (n, flip_byte(d) if n == DB_MEMBER else d))
    with pytest.raises(RestoreError, match=r"^The database in the archive has sha256 [0-9a-f]{64}, but the manifest"):
        restore(target, tampered)
    assert snapshot_dir(target.data_dir) == before  # nothing moved, no staging folder left


def test_a_blob_that_does_not_match_its_name_is_refused(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    target = Settings(data_dir=tmp_path / "live")
    tampered = rewrite(archive, tmp_path / "t.zip", lambda n, d: (n, flip_byte(d) if n.startswith("blobs/") else d))
    with pytest.raises(RestoreError, match=r"^The blob [0-9a-f]{64} in the archive has different content"):
        restore(target, tampered)
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["likeness.lock"]


@pytest.mark.parametrize(
    "evil", ["../evil.txt", "blobs/../../evil.txt", "/tmp/likeness-evil.txt", "database\\..\\..\\evil"]
)
def test_paths_escaping_the_data_dir_are_refused(tmp_path: Path, seeded: tuple[Settings, Path], evil: str) -> None:
    _, archive = seeded
    target = Settings(data_dir=tmp_path / "deep" / "live")
    tampered = rewrite(archive, tmp_path / "t.zip", extra={evil: b"owned"})
    with pytest.raises(RestoreError, match=r"points outside the data directory; refusing this archive"):
        restore(target, tampered)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/likeness-evil.txt").exists()
    assert not target.db_path.exists()


def test_unlisted_members_and_a_newer_schema_are_refused(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    target = Settings(data_dir=tmp_path / "live")
    digest = hashlib.sha256(b"smuggled").hexdigest()
    extra = rewrite(archive, tmp_path / "x.zip", extra={f"blobs/{digest[:2]}/{digest[2:4]}/{digest}": b"smuggled"})
    with pytest.raises(RestoreError, match=r"blobs do not match its manifest \(0 missing, 1 not listed\)"):
        restore(target, extra)
    stray = rewrite(archive, tmp_path / "s.zip", extra={"notes.txt": b"hi"})
    with pytest.raises(RestoreError, match=r"unexpected member 'notes.txt'"):
        restore(target, stray)

    def newer(name: str, data: bytes) -> tuple[str, bytes]:
        if name != MANIFEST:
            return name, data
        manifest = json.loads(data)
        manifest["schema_version"] = latest_schema() + 1
        return name, json.dumps(manifest).encode()

    with pytest.raises(RestoreError, match=rf"database schema {latest_schema() + 1}, newer than this Likeness knows"):
        restore(target, rewrite(archive, tmp_path / "n.zip", newer))

    def future(name: str, data: bytes) -> tuple[str, bytes]:
        if name != MANIFEST:
            return name, data
        manifest = json.loads(data)
        manifest["format_version"] += 1
        manifest["something_new"] = True
        return name, json.dumps(manifest).encode()

    with pytest.raises(RestoreError, match=r"uses archive format 2, newer than this Likeness reads \(1\)"):
        restore(target, rewrite(archive, tmp_path / "f.zip", future))
    broken = rewrite(
        archive, tmp_path / "b.zip", lambda n, d: (n, b'{"format": "likeness-backup"}' if n == MANIFEST else d)
    )
    with pytest.raises(RestoreError, match=r"manifest.json is not valid \(format_version: Field required\)"):
        restore(target, broken)
    no_manifest = rewrite(archive, tmp_path / "m.zip", lambda n, d: None if n == MANIFEST else (n, d))
    with pytest.raises(RestoreError, match=r"no manifest.json or no database"):
        restore(target, no_manifest)
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(RestoreError, match=r"is not a Likeness backup \(not a readable zip archive"):
        restore(target, tmp_path / "junk.zip")
    assert not target.db_path.exists()


def test_confirmation_declined_changes_nothing(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    _, archive = seeded
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    before = snapshot_dir(target.data_dir)
    with pytest.raises(RestoreCanceledError):
        restore(target, archive, confirm=lambda manifest: False)
    assert snapshot_dir(target.data_dir) == before


# ---------------------------------------------------------------------------------------------------- backup


def test_backup_streams_large_blobs(tmp_path: Path) -> None:
    settings = asyncio.run(seed_data_dir(tmp_path / "data", blobs=1, characters=1))
    size = 48 << 20
    digest = hashlib.sha256()
    partial = tmp_path / "big"
    with partial.open("wb") as out:
        for i in range(size >> 20):
            block = bytes([i]) * (1 << 20)
            digest.update(block)
            out.write(block)
    target = settings.blob_dir / digest.hexdigest()[:2] / digest.hexdigest()[2:4] / digest.hexdigest()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)

    tracemalloc.start()
    try:
        result = backup(settings, tmp_path / "big.zip")
        _, backup_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        restore(Settings(data_dir=tmp_path / "restored"), result.path)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.manifest.blobs[digest.hexdigest()] == size
    # Streaming means memory stays far below the blob's size (a fraction of a MB here; the bound leaves room for
    # whatever else the process allocates meanwhile).
    assert backup_peak < size // 4 and restore_peak < size // 4, (backup_peak, restore_peak)
    assert filecmp.cmp(tmp_path / "restored" / "blobs" / target.relative_to(settings.blob_dir), target, shallow=False)


def test_backup_is_atomic_and_private(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    settings, archive = seeded
    assert archive.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in archive.parent.iterdir() if p.name.startswith(".")) == []  # no partial left
    manifest = read_manifest(archive)
    assert manifest.format == "likeness-backup" and manifest.schema_version == latest_schema()
    assert manifest.tables["characters"] == 2 and len(manifest.blobs) == 5
    with zipfile.ZipFile(archive) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        assert hashlib.sha256(zf.read(DB_MEMBER)).hexdigest() == manifest.database.sha256
    assert infos[DB_MEMBER].compress_type == zipfile.ZIP_DEFLATED
    assert {i.compress_type for n, i in infos.items() if n.startswith("blobs/")} == {zipfile.ZIP_STORED}

    # a failure leaves nothing behind: here the database is gone
    settings.db_path.unlink()
    from bot.ops.backup import BackupError

    with pytest.raises(BackupError, match=r"^There is no database at "):
        backup(settings, tmp_path / "again.zip")
    assert not (tmp_path / "again.zip").exists()


def test_a_damaged_blob_is_left_out_with_a_warning(tmp_path: Path, seeded: tuple[Settings, Path]) -> None:
    settings, _ = seeded
    victim = next(iter(blob_files(settings.blob_dir).values()))
    victim.write_bytes(flip_byte(victim.read_bytes()))
    result = backup(settings, tmp_path / "damaged.zip")
    assert result.damaged_blobs == [victim.name]
    assert victim.name not in result.manifest.blobs and result.manifest.damaged_blobs == [victim.name]
    restore(Settings(data_dir=tmp_path / "restored"), result.path)  # the rest restores


# ---------------------------------------------------------------------------------------------------- the lock


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with InstanceLock(tmp_path) as lock:
        assert (tmp_path / "likeness.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(InstanceLockedError) as caught:
            InstanceLock(tmp_path).acquire()  # a second open file description: flock conflicts in-process too
        assert caught.value.pid == os.getpid()
        assert lock.held
    InstanceLock(tmp_path).acquire()  # released (and a fresh object's lock is freed when it is collected)


def test_likeness_run_holds_the_lock_for_its_whole_life(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.discord_io import client as app
    from bot.ops.cli import main

    data = tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(data))
    seen: list[bool] = []

    async def fake_run_bot(settings: Settings, token: str) -> None:
        try:
            InstanceLock(settings.data_dir).acquire()
        except InstanceLockedError:
            seen.append(True)

    monkeypatch.setattr(app, "run_bot", fake_run_bot)
    monkeypatch.setattr("bot.ops.cli.setup_logging", lambda *args, **kwargs: None)  # leave pytest's logging be
    assert main(["run"]) == 0
    assert seen == [True]
    with InstanceLock(data):  # free again once `run` returned
        pass


def test_a_second_likeness_run_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with InstanceLock(data):
        completed = run_likeness(
            tmp_path, "run", env={"DISCORD_TOKEN": "not-a-real-token", "LIKENESS_DATA_DIR": str(data)}
        )
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith(
        f"Likeness is already running on {data.resolve()} (process {os.getpid()}"
    )
    assert "Stop it first" in completed.stderr


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    settings = asyncio.run(seed_data_dir(tmp_path / "data"))
    env = {"LIKENESS_DATA_DIR": str(settings.data_dir)}
    out = tmp_path / "backups"  # a folder that exists
    out.mkdir()
    made = run_likeness(tmp_path, "backup", str(out), env=env)
    assert made.returncode == 0, made.stderr
    [archive] = out.iterdir()
    assert made.stdout.startswith(f"Wrote {archive} (")
    assert "2 characters) and 5 images and clips, in " in made.stdout

    again = run_likeness(tmp_path, "backup", str(archive), env=env)
    assert again.returncode == 2 and "already exists; choose another name" in again.stderr

    empty = run_likeness(tmp_path, "backup", str(out), env={"LIKENESS_DATA_DIR": str(tmp_path / "nothing")})
    assert empty.returncode == 2 and empty.stderr.startswith("There is no database at ")

    fresh_env = {"LIKENESS_DATA_DIR": str(tmp_path / "fresh")}
    unasked = run_likeness(tmp_path, "restore", str(archive), env=fresh_env)  # stdin is not a terminal
    assert unasked.returncode == 2 and "add --yes to confirm" in unasked.stderr
    assert not (tmp_path / "fresh" / "likeness.sqlite3").exists()

    done = run_likeness(tmp_path, "restore", str(archive), "--yes", env=fresh_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Restored {archive} into {tmp_path / 'fresh'} in ")
    assert (
        "; it was made " in done.stdout
        and f"schema {latest_schema()}: 2 characters, 0 jobs, 5 images and clips" in done.stdout
    )
    assert "Start the bot as usual" in done.stdout
    assert table_rows(tmp_path / "fresh" / "likeness.sqlite3") == table_rows(settings.db_path)

    over = run_likeness(tmp_path, "restore", str(archive), "--yes", env=env)
    assert over.returncode == 0 and "The previous database and images are in " in over.stdout

    bad = run_likeness(tmp_path, "restore", str(tmp_path / "missing.zip"), "--yes", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("Refusing to restore: ")


def test_restore_asks_on_a_terminal(
    tmp_path: Path, seeded: tuple[Settings, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, archive = seeded
    target = Settings(data_dir=tmp_path / "live")
    questions: list[str] = []

    def answer(reply: str) -> Callable[[str], str]:
        def ask(prompt: str) -> str:
            questions.append(prompt)
            return reply

        return ask

    assert restore_command(target, archive, assume_yes=False, interactive=True, ask=answer("n")) == 2
    said = capsys.readouterr()
    assert "2 characters, 0 jobs, 5 images and clips" in said.out
    assert "the current ones are moved to" in said.out and "nothing is deleted" in said.out
    assert said.err.strip() == "Restore canceled; nothing was changed."
    assert not target.db_path.exists()

    assert restore_command(target, archive, assume_yes=False, interactive=True, ask=answer("yes")) == 0
    assert questions == ["Restore it? [y/N] "] * 2
    assert target.db_path.exists()


def test_cli_refuses_a_path_that_is_neither_a_folder_nor_a_zip_name(tmp_path: Path) -> None:
    """`likeness backup x.tar` used to make a folder named x.tar with the archive inside: now only the two forms it
    names are taken, and anything else is refused with both; restore says what it wants when given a folder or a
    missing file."""
    settings = asyncio.run(seed_data_dir(tmp_path / "data"))
    env = {"LIKENESS_DATA_DIR": str(settings.data_dir)}
    (tmp_path / "notes.txt").write_text("mine")
    for wrong, what in (("x.tar", "does not exist"), ("backups", "does not exist"), ("notes.txt", "is not a folder")):
        refused = run_likeness(tmp_path, "backup", wrong, env=env)
        assert refused.returncode == 2, refused.stdout
        assert refused.stderr.strip() == (
            f"{wrong} {what} and is not a .zip name. Give either a folder that exists (likeness-backup-<time>.zip is "
            f"written in it; `mkdir -p {wrong}` first to make one) or a file name ending in .zip (that file is "
            "written)."
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]  # nothing made
    assert (tmp_path / "notes.txt").read_text() == "mine"
    made = run_likeness(tmp_path, "backup", "nightly.ZIP", env=env)
    assert made.returncode == 0 and (tmp_path / "nightly.ZIP").is_file(), made.stderr

    folder = run_likeness(tmp_path, "restore", "data", "--yes", env=env)
    assert folder.returncode == 2 and folder.stderr.strip() == (
        "Refusing to restore: data is a folder; give the archive itself, a .zip file written by `likeness backup` "
        "(such as data/likeness-backup-<time>.zip)."
    )
    missing = run_likeness(tmp_path, "restore", "x.zip", "--yes", env=env)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        "Refusing to restore: x.zip does not exist; give the path of a .zip archive written by `likeness backup`."
    )


# ---------------------------------------------------------------------------------------------------- crash safety

# Restores `argv[2]` into the data folder `argv[1]`, and dies (as a kill would: no cleanup, no finally) at one point:
# just before its n-th file move ("move", n), whatever moves files (shutil.move or os.rename), or at a named step of
# the swap ("step", name).
DIE_DURING_RESTORE = """
import os, shutil, sys
from pathlib import Path
import bot.ops.backup as backup
from bot.infra.config import Settings

data, archive, kind, at = sys.argv[1:5]
moves, depth = 0, 0

def counted(real):
    def move(*args, **kwargs):
        global moves, depth
        if depth == 0:  # shutil.move renames too: one move, counted once
            moves += 1
            if kind == "move" and moves == int(at):
                os._exit(9)
        depth += 1
        try:
            return real(*args, **kwargs)
        finally:
            depth -= 1
    return move

os.rename, shutil.move = counted(os.rename), counted(shutil.move)
if kind == "step":
    backup._reached = lambda point: os._exit(9) if point == at else None
backup.restore(Settings(data_dir=Path(data)), Path(archive))
"""


def restore_and_die(cwd: Path, data_dir: Path, archive: Path, kind: str, at: str) -> int:
    clean = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("LIKENESS_")}
    done = subprocess.run(
        [sys.executable, "-c", DIE_DURING_RESTORE, str(data_dir), str(archive), kind, at],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 9), done.stderr  # died where told, or finished (no n-th move / no such step)
    return done.returncode


def likeness_run(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """`likeness run` as the admin starts it after the crash, up to the bot opening its database; returns its exit
    status and the names of the characters the bot found (none when it refused to start)."""
    from bot.discord_io import client as app
    from bot.ops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(data_dir))
    found: list[str] = []

    async def open_the_database(settings: Settings, token: str) -> None:
        storage = await Storage.open(settings.db_path, settings.blob_dir)
        try:
            found.extend(sorted(c.name for c in await storage.characters.all(1)))
        finally:
            await storage.close()

    monkeypatch.setattr(app, "run_bot", open_the_database)
    monkeypatch.setattr("bot.ops.cli.setup_logging", lambda *args, **kwargs: None)
    return main(["run"]), found


THREE = ["Seed 0", "Seed 1", "Seed 2"]


@pytest.fixture
def three_characters(tmp_path: Path) -> Path:
    """A backup of a library of three characters."""
    settings = asyncio.run(seed_data_dir(tmp_path / "source", blobs=4, characters=3))
    return backup(settings, tmp_path / "three.zip").path


@pytest.mark.parametrize(
    ("kind", "at"),
    [
        *(("move", str(n)) for n in range(1, 6)),  # database, its -shm and the images aside; the restored ones in
        ("step", "marked"),
        ("step", "aside likeness.sqlite3"),
        ("step", "database in"),
        ("step", "images in"),
        ("step", "synced"),
        ("step", "staging removed"),
    ],
)
def test_a_restore_killed_at_any_point_of_the_swap_is_finished_by_the_next_start(
    tmp_path: Path, three_characters: Path, monkeypatch: pytest.MonkeyPatch, kind: str, at: str
) -> None:
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    old_db = table_rows(target.db_path)
    restore_and_die(tmp_path, target.data_dir, three_characters, kind, at)

    status, characters = likeness_run(tmp_path, target.data_dir, monkeypatch)

    assert (status, characters) == (0, THREE)  # the swap was finished: never an empty database
    assert not (target.data_dir / "restore-in-progress.json").exists()
    assert [p.name for p in target.data_dir.iterdir() if p.name.startswith(".restore")] == []
    [aside] = target.data_dir.glob("before-restore-*")  # nothing lost: the replaced library is kept
    assert table_rows(aside / "likeness.sqlite3") == old_db
    assert len(blob_files(aside / "blobs")) == 2 and len(blob_files(target.blob_dir)) == 4


def test_while_a_restore_is_marked_nothing_opens_the_database_and_a_damaged_staged_copy_is_refused(
    tmp_path: Path, three_characters: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    restore_and_die(tmp_path, target.data_dir, three_characters, "step", "aside blobs")  # no database in place now
    mark = json.loads((target.data_dir / "restore-in-progress.json").read_text())
    assert mark["archive"] == str(three_characters.resolve()) and mark["db_path"] == str(target.db_path.resolve())
    assert Path(mark["staged_db"]).is_file() and Path(mark["staging"]).is_dir() and not target.db_path.exists()
    env = {"LIKENESS_DATA_DIR": str(target.data_dir)}

    doctor = run_likeness(tmp_path, "doctor", "--quick", env={**env, "DISCORD_TOKEN": "x" * 70})
    assert doctor.returncode == 1 and "is in progress or was interrupted" in doctor.stdout, doctor.stdout
    (tmp_path / "backups").mkdir()
    made = run_likeness(tmp_path, "backup", str(tmp_path / "backups"), env=env)
    assert made.returncode == 2 and "is in progress or was interrupted" in made.stderr
    assert list((tmp_path / "backups").iterdir()) == [] and not target.db_path.exists()

    # The staged copy is damaged meanwhile: the start refuses, names the command, and creates no database.
    with Path(mark["staged_db"]).open("ab") as staged:
        staged.write(b"damage")
    status, characters = likeness_run(tmp_path, target.data_dir, monkeypatch)
    assert (status, characters) == (2, [])
    assert not target.db_path.exists()
    again = run_likeness(tmp_path, "run", env={**env, "DISCORD_TOKEN": "not-a-real-token"})
    assert again.returncode == 2 and f"Run `likeness restore {three_characters.resolve()} --yes`" in again.stderr
    assert "it cannot be finished: the staged database" in again.stderr and not target.db_path.exists()

    # The command it names: the previous data is put back, the damaged staged copy kept, the backup restored.
    done = run_likeness(tmp_path, "restore", str(three_characters.resolve()), "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert likeness_run(tmp_path, target.data_dir, monkeypatch) == (0, THREE)
    [kept] = target.data_dir.glob("restore-interrupted-*")
    assert (kept / "likeness.sqlite3").read_bytes().endswith(b"damage")
    [aside] = target.data_dir.glob("before-restore-*")
    assert [row[2] for row in table_rows(aside / "likeness.sqlite3")["characters"]] == ["Seed 0"]


def test_a_second_restore_finishes_the_interrupted_one_first_and_loses_nothing(
    tmp_path: Path, three_characters: Path
) -> None:
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    two = backup(asyncio.run(seed_data_dir(tmp_path / "two", blobs=1, characters=2)), tmp_path / "two.zip").path
    restore_and_die(tmp_path, target.data_dir, three_characters, "step", "database in")
    staged = Path(json.loads((target.data_dir / "restore-in-progress.json").read_text())["staged_blobs"])
    assert staged.is_dir()

    done = run_likeness(tmp_path, "restore", str(two), "--yes", env={"LIKENESS_DATA_DIR": str(target.data_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"First finished the restore of {three_characters.resolve()} started ")
    assert len(table_rows(target.db_path)["characters"]) == 2
    asides = sorted(target.data_dir.glob("before-restore-*"))
    assert sorted(len(table_rows(a / "likeness.sqlite3")["characters"]) for a in asides) == [1, 3]
    assert not (target.data_dir / "restore-in-progress.json").exists()


def test_a_start_never_makes_an_empty_database_where_one_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    target.db_path.unlink()  # lost: deleted by hand, a bad volume mount, a restore killed by an older Likeness
    status, characters = likeness_run(tmp_path, target.data_dir, monkeypatch)
    assert (status, characters) == (2, []) and not target.db_path.exists()
    said = run_likeness(tmp_path, "run", env={"LIKENESS_DATA_DIR": str(target.data_dir), "DISCORD_TOKEN": "x" * 70})
    assert said.returncode == 2 and not target.db_path.exists()
    assert said.stderr.strip().startswith(f"There is no database at {target.db_path.resolve()}, but ")
    assert (
        "starting would create an empty one" in said.stderr
        and "likeness restore <the backup .zip> --yes" in said.stderr
    )

    from bot.ops.backup import MissingDatabaseError
    from bot.runtime import Offline, Services

    async def open_services() -> None:
        async with Services.open(target, Offline()):
            pass

    with pytest.raises(MissingDatabaseError):  # the bot's own start refuses too, whoever calls it
        asyncio.run(open_services())
    assert not target.db_path.exists()
    doctor = run_likeness(tmp_path, "doctor", "--quick", env={"LIKENESS_DATA_DIR": str(target.data_dir)})
    assert doctor.returncode == 1 and "the database is missing" in doctor.stdout, doctor.stdout


def test_a_database_on_another_disk_is_staged_beside_it_and_survives_a_kill_too(
    tmp_path: Path, three_characters: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LIKENESS_DATABASE_PATH on another disk than the data folder: a rename between them would be a copy, so the
    staged database is copied beside the live one first and the old one goes aside there; the swap stays renames."""
    live = asyncio.run(seed_data_dir(tmp_path / "live", blobs=2, characters=1))
    elsewhere = tmp_path / "db-disk" / "likeness.sqlite3"
    elsewhere.parent.mkdir()
    live.db_path.rename(elsewhere)
    target = Settings(data_dir=live.data_dir, database_path=elsewhere)
    old_db = table_rows(elsewhere)
    monkeypatch.setattr(backup_module, "_same_disk", lambda a, b: False)

    def killed(point: str) -> None:
        if point == "database in":
            raise SystemExit(9)  # no cleanup of the staged copy: it is marked

    monkeypatch.setattr(backup_module, "_reached", killed)
    with pytest.raises(SystemExit):
        restore(target, three_characters)
    mark = json.loads((target.data_dir / "restore-in-progress.json").read_text())
    assert Path(mark["staged_db"]).parent == elsewhere.parent.resolve() and not Path(mark["staged_db"]).exists()

    monkeypatch.setattr(backup_module, "_reached", lambda point: None)
    finished = backup_module.finish_interrupted_restore(target)
    assert finished is not None and sorted(row[2] for row in table_rows(elsewhere)["characters"]) == THREE
    [db_aside] = elsewhere.parent.glob("before-restore-*")
    assert table_rows(db_aside / "likeness.sqlite3") == old_db
    [aside] = target.data_dir.glob("before-restore-*")
    assert len(blob_files(aside / "blobs")) == 2 and len(blob_files(target.blob_dir)) == 4
    assert not (target.data_dir / "restore-in-progress.json").exists()
    assert [p.name for p in elsewhere.parent.iterdir() if p.name.startswith(".")] == []
