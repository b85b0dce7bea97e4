"""`likeness backup` and `likeness restore`: the database and the blob store in one archive.

```
manifest.json                      format, Likeness and schema versions, created time, row counts per table,
                                   sha256 and size of the database copy, every blob's sha256 and size
database/likeness.sqlite3          an online copy (SQLite backup API), deflated
blobs/<aa>/<bb>/<sha256>           the blob store's files exactly, as stored (no recompression)
```

Why zip and not tar.gz: the members are compressed one by one, so the database is deflated while images and
clips (already PNG/JPEG/MP4) are stored as they are instead of being gzipped again for nothing; the central
directory lets restore read and check the manifest and every member's name and size before it extracts a
byte; each member carries a CRC; and every system opens it (character cards are zips too).

Backup is online: the database copy is one step of SQLite's backup API, a single read transaction, so it is
a consistent snapshot while the bot keeps writing (WAL: readers and the writer do not block each other; a
multi-step backup would restart whenever another connection writes). Blobs are listed *after* the snapshot:
a blob is stored before the row that names it commits, and blobs are never deleted, so every blob the
snapshot refers to is on disk by then. Files are streamed, never held in memory. The archive is written
under a temporary name beside its destination, fsynced, then renamed: it is whole or absent.

Restore takes the instance lock (the bot must be stopped), checks the whole archive into a staging folder
inside the data directory (names, manifest, schema, the database's sha256 and integrity, every blob's
content against its name), and only then moves the current database and blobs to
`<data_dir>/before-restore-<time>/` and the restored ones into place. Nothing is deleted. Ids continue from
the replaced database's counters, never reused (see `_keep_ids_moving_forward`). Migrations run as usual at
the next start.

The swap is crash-safe. Before the first file moves, `<data_dir>/restore-in-progress.json` is written
atomically (the restore mark: the verified staged copy, its sha256 and image count, every move planned); every
move is a rename, skipped when already done; the mark goes last. So a restore killed at any point leaves the
mark, and while it exists nothing opens the database: `likeness run` finishes the swap from the staged copy
(after checking it is the verified one) and a new restore finishes it first; doctor and backup refuse. A staged
copy that is no longer whole is never used nor deleted: `likeness run` refuses, naming the restore to run again,
which puts back what was moved and keeps that copy (`restore-interrupted-<time>/`). And a start that finds
stored images but no database refuses instead of creating an empty one (`ensure_database_present`).

Both are blocking: from async code use `backup_async` (a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.infra.config import Settings
from bot.infra.instance_lock import InstanceLock, InstanceLockedError
from storage.blobs import BlobStore
from storage.db import bundled_migrations

FORMAT = "likeness-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_MEMBER = "database/likeness.sqlite3"
_BLOB_MEMBER = re.compile(r"^blobs/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 256 << 10  # small enough that a slow filesystem's short reads never add up to much memory
_MAX_MANIFEST_BYTES = 256 << 20  # a manifest lists every blob: ~100 bytes each


class BackupError(Exception):
    """The backup could not be made; the message says why and what to do."""


class RestoreError(Exception):
    """The archive was refused or the restore failed; nothing was changed unless the message says otherwise."""


class RestoreCanceledError(RestoreError):
    """The admin answered no."""


Sha256 = str


class DatabaseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(BaseModel):
    """What `manifest.json` holds; parsed strictly on restore (the archive may have been altered)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["likeness-backup"]
    format_version: int
    likeness_version: str
    schema_version: int = Field(ge=0)
    created_at: str
    database: DatabaseEntry
    tables: dict[str, int]
    blobs: dict[Sha256, int]
    damaged_blobs: list[Sha256] = []

    @property
    def blob_bytes(self) -> int:
        return sum(self.blobs.values())

    def describe(self) -> str:
        characters = self.tables.get("characters", 0)
        jobs = self.tables.get("jobs", 0)
        return (
            f"made {self.created_at} by Likeness {self.likeness_version}, schema {self.schema_version}: "
            f"{characters} characters, {jobs} jobs, {len(self.blobs)} images and clips, "
            f"{_size(self.database.bytes + self.blob_bytes)}"
        )


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    archive_bytes: int
    seconds: float
    damaged_blobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest
    moved_aside: Path | None  # where the previous database and blobs are now; None when there were none
    seconds: float
    finished_interrupted: RestoreMark | None = None  # an interrupted restore this one finished first


def likeness_version() -> str:
    try:
        return version("likeness")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def latest_schema() -> int:
    migrations = bundled_migrations()
    return migrations[-1].version if migrations else 0


# ---------------------------------------------------------------------------------------------------- backup


def backup(settings: Settings, path: Path) -> BackupResult:
    """Write one archive of the database and blobs to `path` (`.zip`), or into the folder `path`. Blocking."""
    started = time.monotonic()
    try:
        refuse_if_restore_pending(settings)
    except RestorePendingError as exc:
        raise BackupError(f"{exc} Back up once it is done.") from None
    db_path = settings.db_path
    if not db_path.is_file():
        raise BackupError(
            f"There is no database at {db_path.resolve()}, so there is nothing to back up. "
            "Is LIKENESS_DATA_DIR (or LIKENESS_DATABASE_PATH) the bot's?"
        )
    target = _archive_path(path)
    if target.exists():
        raise BackupError(f"{target} already exists; choose another name (a backup never overwrites another).")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.parent / f".{target.name}.{os.getpid()}.partial"
        scratch.mkdir(mode=0o700)  # the database copy waits here: the bot's user only
    except OSError as exc:
        raise BackupError(f"Cannot write in {target.parent}: {exc.strerror or exc}.") from exc
    try:
        copy = scratch / "likeness.sqlite3"
        snapshot_at = datetime.now(UTC)
        _online_copy(db_path, copy)
        schema, tables = _describe_copy(copy)
        db_sha, db_bytes = _sha256_of(copy)
        partial = scratch / "archive.zip"
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            archive.write(copy, DB_MEMBER, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
            copy.unlink()
            blobs, damaged = _add_blobs(archive, settings.blob_dir)
            manifest = Manifest(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                likeness_version=likeness_version(),
                schema_version=schema,
                created_at=snapshot_at.isoformat(timespec="seconds").replace("+00:00", "Z"),  # the data's time
                database=DatabaseEntry(sha256=db_sha, bytes=db_bytes),
                tables=tables,
                blobs=blobs,
                damaged_blobs=damaged,
            )
            archive.writestr(MANIFEST, manifest.model_dump_json(indent=1), compress_type=zipfile.ZIP_DEFLATED)
        os.chmod(partial, 0o600)  # the whole server's data: readable by the bot's user only
        _fsync_file(partial)
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise BackupError(f"Writing {target} failed: {exc.strerror or exc}. No archive was written.") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BackupResult(target, manifest, target.stat().st_size, time.monotonic() - started, damaged)


async def backup_async(settings: Settings, path: Path) -> BackupResult:
    """`backup` in a worker thread, for callers on the event loop."""
    return await asyncio.to_thread(backup, settings, path)


def _archive_path(path: Path) -> Path:
    """An existing folder gets a dated archive; `x.zip` is the archive itself. Anything else is refused rather
    than guessed at (`x.tar` is not made into a folder)."""
    if path.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return path / f"likeness-backup-{stamp}.zip"
    if path.suffix.lower() == ".zip":
        return path
    what = "is not a folder" if path.exists() else "does not exist"
    raise BackupError(
        f"{path} {what} and is not a .zip name. Give either a folder that exists (likeness-backup-<time>.zip is "
        f"written in it; `mkdir -p {path}` first to make one) or a file name ending in .zip (that file is written)."
    )


def _online_copy(source_path: Path, copy_path: Path) -> None:
    """A consistent copy of a live WAL database: the backup API in one step (one read transaction)."""
    try:
        with (
            contextlib.closing(sqlite3.connect(source_path, timeout=30)) as source,
            contextlib.closing(sqlite3.connect(copy_path)) as copy,
        ):
            source.execute("PRAGMA query_only = 1")
            # pages=-1: all pages in one step. With several steps SQLite restarts the copy whenever another
            # connection writes, which under a busy bot may never finish.
            source.backup(copy, pages=-1)
            # One self-contained file, whatever journal mode the source had; the bot sets WAL when it opens it.
            copy.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as exc:
        raise BackupError(f"Copying the database {source_path.resolve()} failed: {exc}.") from exc


def _describe_copy(copy_path: Path) -> tuple[int, dict[str, int]]:
    """Schema version and rows per table of the copy, after SQLite's own integrity check."""
    with contextlib.closing(sqlite3.connect(copy_path)) as conn:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(
                "The database is damaged (SQLite integrity check: " + "; ".join(problems[:3]) + "). "
                "Keep a copy of the data folder as it is and restore an earlier backup."
            )
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        tables = {
            name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
            for name in names
            if not name.startswith("sqlite_")
        }
    return schema, tables


def _add_blobs(archive: zipfile.ZipFile, root: Path) -> tuple[dict[str, int], list[str]]:
    """Stream every blob into the archive, stored as is. A blob whose bytes no longer match its name is left out."""
    blobs: dict[str, int] = {}
    damaged: list[str] = []
    for digest, path in BlobStore(root).files():
        actual, size = _sha256_of(path)  # read twice (check, then copy): a damaged blob never enters a backup
        if actual != digest:
            damaged.append(digest)
            continue
        archive.write(path, f"blobs/{digest[:2]}/{digest[2:4]}/{digest}", compress_type=zipfile.ZIP_STORED)
        blobs[digest] = size
    return blobs, damaged


# ---------------------------------------------------------------------------------------------------- restore


def restore(settings: Settings, path: Path, confirm: Callable[[Manifest], bool] | None = None) -> RestoreResult:
    """Replace the database and blobs with the archive's, keeping the current ones aside. Blocking.

    Raises InstanceLockedError when the bot runs on this data directory, RestoreError when the archive is
    refused, RestoreCanceledError when `confirm` (asked after the archive's manifest was checked) says no.
    """
    started = time.monotonic()
    if path.is_dir():
        raise RestoreError(
            f"{path} is a folder; give the archive itself, a .zip file written by `likeness backup` "
            f"(such as {path / 'likeness-backup-<time>.zip'})."
        )
    if not path.is_file():
        raise RestoreError(f"{path} does not exist; give the path of a .zip archive written by `likeness backup`.")
    data_dir = settings.data_dir
    with InstanceLock(data_dir):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise RestoreError(f"{path} is not a Likeness backup (not a readable zip archive: {exc}).") from exc
        with archive:
            manifest = _check_archive(archive)
            _check_free_space(data_dir, manifest)
            if confirm is not None and not confirm(manifest):
                raise RestoreCanceledError("Restore canceled; nothing was changed.")
            finished = _settle_interrupted_restore(settings)
            for stale in data_dir.glob(".restore-*"):  # unmarked: a killed extraction, never swapped (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            staging = data_dir / f".restore-{stamp}-{os.getpid()}"
            try:
                _extract_verified(archive, manifest, staging)
                _keep_ids_moving_forward(staging / "likeness.sqlite3", _id_counters(settings.db_path))
                mark = _mark_restore(settings, staging, stamp, path)
                moved_aside = _swap_in(mark)
            finally:
                if not restore_mark_path(data_dir).exists():  # a marked staging copy is never deleted here
                    shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(manifest, moved_aside, time.monotonic() - started, finished)


def read_manifest(path: Path) -> Manifest:
    """The archive's manifest, after the same checks restore makes before extracting (names, sizes, schema)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _check_archive(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RestoreError(f"{path} is not a Likeness backup (not a readable zip archive: {exc}).") from exc


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise RestoreError(
            f"The archive member {name!r} points outside the data directory; refusing this archive "
            "(it was not made by `likeness backup`, or it was altered)."
        )
    if name not in (MANIFEST, DB_MEMBER) and not _BLOB_MEMBER.match(name):
        raise RestoreError(f"The archive has an unexpected member {name!r}; refusing it (not made by likeness backup).")
    match = _BLOB_MEMBER.match(name)
    if match and (match.group(3)[:2], match.group(3)[2:4]) != (match.group(1), match.group(2)):
        raise RestoreError(f"The archive member {name!r} is not where its name says; refusing this archive.")


def _check_archive(archive: zipfile.ZipFile) -> Manifest:
    """Everything that can be checked without extracting: member names, the manifest, sizes, the schema."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    for name in names:
        _check_member_name(name)
    if len(set(names)) != len(names):
        raise RestoreError("The archive holds the same member twice; refusing it (it was altered).")
    if MANIFEST not in names or DB_MEMBER not in names:
        raise RestoreError("The archive has no manifest.json or no database: it is not a Likeness backup.")
    manifest_info = archive.getinfo(MANIFEST)
    if manifest_info.file_size > _MAX_MANIFEST_BYTES:
        raise RestoreError("The archive's manifest.json is implausibly large; refusing it.")
    try:
        with archive.open(manifest_info) as raw:
            text = raw.read(_MAX_MANIFEST_BYTES + 1)
        _refuse_newer_format(text)
        manifest = Manifest.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise RestoreError(f"The archive's manifest.json is not valid ({where}: {first['msg']}).") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise RestoreError(f"The archive's manifest.json cannot be read: {exc}.") from exc
    latest = latest_schema()
    if manifest.schema_version > latest:
        raise RestoreError(
            f"This backup was made by Likeness {manifest.likeness_version} with database schema "
            f"{manifest.schema_version}, newer than this Likeness knows ({latest}). Upgrade Likeness, then restore."
        )
    if any(not _DIGEST.match(digest) for digest in manifest.blobs):
        raise RestoreError("The archive's manifest lists a blob whose name is not a sha256; refusing it.")
    sizes = {info.filename: info.file_size for info in infos}
    if sizes[DB_MEMBER] != manifest.database.bytes:
        raise RestoreError("The database in the archive is not the size the manifest says; refusing it.")
    members = {name.rsplit("/", 1)[1] for name in names if name.startswith("blobs/")}
    if members != set(manifest.blobs):
        missing, extra = len(set(manifest.blobs) - members), len(members - set(manifest.blobs))
        raise RestoreError(
            f"The archive's blobs do not match its manifest ({missing} missing, {extra} not listed); refusing it."
        )
    for digest, size in manifest.blobs.items():
        if sizes[f"blobs/{digest[:2]}/{digest[2:4]}/{digest}"] != size:
            raise RestoreError(f"The blob {digest} is not the size the manifest says; refusing the archive.")
    return manifest


def _refuse_newer_format(text: bytes) -> None:
    """A newer archive format may have fields this Likeness does not know: say "upgrade", not "invalid"."""
    try:
        raw = json.loads(text)
        format_version = int(raw["format_version"]) if isinstance(raw, dict) else 0
    except (ValueError, KeyError, TypeError):
        return  # the strict validation that follows says what is wrong
    if format_version > FORMAT_VERSION:
        raise RestoreError(
            f"This backup uses archive format {format_version}, newer than this Likeness reads "
            f"({FORMAT_VERSION}). Upgrade Likeness, then restore."
        )


def _check_free_space(data_dir: Path, manifest: Manifest) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    needed = manifest.database.bytes + manifest.blob_bytes
    free = shutil.disk_usage(data_dir).free
    if needed > free:
        raise RestoreError(
            f"Restoring needs {_size(needed)} in {data_dir.resolve()} and only {_size(free)} is free; "
            "nothing was changed."
        )


def _extract_verified(archive: zipfile.ZipFile, manifest: Manifest, staging: Path) -> None:
    """Extract into the staging folder, checking every byte against the manifest and the blobs' names."""
    staging.mkdir(parents=True)
    database = staging / "likeness.sqlite3"
    try:
        digest = _copy_member(archive, DB_MEMBER, database)
        if digest != manifest.database.sha256:
            raise RestoreError(
                f"The database in the archive has sha256 {digest}, but the manifest says "
                f"{manifest.database.sha256}: the archive is damaged or was altered; refusing it."
            )
        blob_root = staging / "blobs"
        for expected in manifest.blobs:
            target = blob_root / expected[:2] / expected[2:4] / expected
            actual = _copy_member(archive, f"blobs/{expected[:2]}/{expected[2:4]}/{expected}", target)
            if actual != expected:
                raise RestoreError(
                    f"The blob {expected} in the archive has different content (sha256 {actual}): the archive "
                    "is damaged or was altered; refusing it."
                )
    except zipfile.BadZipFile as exc:  # a member's CRC or header does not match
        raise RestoreError(f"The archive is damaged ({exc}); refusing it.") from exc
    except OSError as exc:
        raise RestoreError(f"Extracting the archive failed: {exc.strerror or exc}. Nothing was changed.") from exc
    _check_restored_database(database, manifest)


def _copy_member(archive: zipfile.ZipFile, name: str, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(name) as source, target.open("wb") as out:
        digest = _stream(source, out)
        out.flush()
        os.fsync(out.fileno())
    return digest


def _check_restored_database(database: Path, manifest: Manifest) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise RestoreError(f"The database in the archive cannot be opened: {exc}; refusing it.") from exc
    if problems != ["ok"]:
        raise RestoreError("The database in the archive fails SQLite's integrity check; refusing it.")
    if schema != manifest.schema_version:
        raise RestoreError(
            f"The database in the archive is at schema {schema}, the manifest says {manifest.schema_version}; "
            "refusing it."
        )
    if schema > latest_schema():
        raise RestoreError(f"The database in the archive is at schema {schema}, newer than this Likeness knows.")


def _id_counters(db_path: Path) -> dict[str, int]:
    """The AUTOINCREMENT counters of the database being replaced (none if there is none, or it cannot be read)."""
    if not db_path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return {str(name): int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    except sqlite3.Error:
        return {}


def _keep_ids_moving_forward(restored: Path, replaced: dict[str, int]) -> None:
    """Ids never go back to ones already handed out: jobs made after the backup were sent to providers under
    their ids (Kling finds a task by it) and have buttons in Discord that carry them. So the restored database
    continues each counter from the higher of its own and the replaced database's."""
    if not replaced:
        return
    with contextlib.closing(sqlite3.connect(restored, isolation_level=None)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.execute("BEGIN")
        for name, seq in replaced.items():
            if name not in tables:
                continue
            if conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name)).rowcount == 0:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
        conn.execute("COMMIT")


def _fresh_dir(base: Path) -> Path:
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise RestoreError(f"Too many folders named {base.name}-*; tidy {base.parent} first.")


# ---------------------------------------------------------------------------------------------------- restore mark

MARK_NAME = "restore-in-progress.json"


class RestorePendingError(Exception):
    """A restore was interrupted and its swap cannot be finished here; the message says what to run."""


class MissingDatabaseError(Exception):
    """The data folder clearly had a database (images, a restore mark) and it is gone: never start on an empty one."""


class RestoreMark(BaseModel):
    """`<data_dir>/restore-in-progress.json`: written (atomically) once the staged copy is complete and verified,
    before anything is moved; removed once everything is in place. While it exists, nothing opens the database:
    `likeness run` and a new restore finish the swap from the staged copy, the rest refuse."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["likeness-restore-mark"] = "likeness-restore-mark"
    archive: str  # what was being restored
    started_at: str
    staging: str  # the staged copy's folder
    staged_db: str  # the verified restored database (in `staging`, or beside db_path if that is another disk)
    staged_blobs: str | None  # the restored blob store (None: the backup had no images)
    db_sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")  # of staged_db, ids already moved forward
    blob_count: int = Field(ge=0)
    blob_bytes: int = Field(ge=0)
    db_path: str
    blob_dir: str
    aside: str  # before-restore-<time>/: where the current files go
    moves: list[tuple[str, str]]  # (current path, where it goes aside), in order

    def describe(self) -> str:
        return f"the restore of {self.archive} started {self.started_at}"


def restore_mark_path(data_dir: Path) -> Path:
    return data_dir / MARK_NAME


def read_restore_mark(data_dir: Path) -> RestoreMark | None:
    """The mark of an interrupted (or running) restore, or None. Raises RestorePendingError if it is unreadable."""
    path = restore_mark_path(data_dir)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RestorePendingError(f"Cannot read the restore mark {path.resolve()}: {exc.strerror or exc}.") from exc
    try:
        return RestoreMark.model_validate_json(text)
    except ValidationError as exc:
        raise RestorePendingError(
            f"A restore was interrupted ({path.resolve()} exists) and its mark cannot be read ({exc.errors()[0]['msg']})."
            f" Look in {data_dir.resolve()} for before-restore-* (the previous database and images) and .restore-* "
            "(the staged copy); then run `likeness restore <the backup .zip> --yes` again, after removing the mark."
        ) from None


def _write_restore_mark(data_dir: Path, mark: RestoreMark) -> None:
    path = restore_mark_path(data_dir)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write(mark.model_dump_json(indent=1))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    _fsync_dir(data_dir)


def _remove_restore_mark(data_dir: Path) -> None:
    restore_mark_path(data_dir).unlink(missing_ok=True)
    _fsync_dir(data_dir)


def _reached(point: str) -> None:
    """Each step of the swap passes here; tests make a process die at one (see tests/e2e/test_backup.py)."""


def _same_disk(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _mark_restore(settings: Settings, staging: Path, stamp: str, archive: Path) -> RestoreMark:
    """Plan the swap of the verified staged copy and write it down before the first file moves."""
    data_dir, db_path = settings.data_dir, settings.db_path
    db_path.parent.mkdir(parents=True, exist_ok=True)
    staged_db = staging / "likeness.sqlite3"
    aside = _fresh_dir(data_dir / f"before-restore-{stamp}")
    db_aside = aside
    if not _same_disk(db_path.parent, data_dir):  # every move must be a rename, which is atomic: same disk
        beside = db_path.with_name(f".{db_path.name}.restore-{stamp}")
        shutil.copyfile(staged_db, beside)
        _fsync_file(beside)
        staged_db.unlink()
        staged_db = beside
        db_aside = _fresh_dir(db_path.parent / f"before-restore-{stamp}")
    db_sha, _ = _sha256_of(staged_db)
    blobs = list(BlobStore(staging / "blobs").files())
    current = [
        p for p in (db_path, *(db_path.with_name(db_path.name + s) for s in ("-wal", "-shm", "-journal"))) if p.exists()
    ]
    moves = [(str(p), str(db_aside / p.name)) for p in current]
    if settings.blob_dir.exists():
        moves.append((str(settings.blob_dir), str(aside / settings.blob_dir.name)))
    mark = RestoreMark(
        archive=str(archive.resolve()),
        started_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        staging=str(staging.resolve()),
        staged_db=str(staged_db.resolve()),
        staged_blobs=str((staging / "blobs").resolve()) if (staging / "blobs").exists() else None,
        db_sha256=db_sha,
        blob_count=len(blobs),
        blob_bytes=sum(path.stat().st_size for _, path in blobs),
        db_path=str(db_path.resolve()),
        blob_dir=str(settings.blob_dir.resolve()),
        aside=str(aside.resolve()),
        moves=moves,
    )
    _write_restore_mark(data_dir, mark)
    _reached("marked")
    return mark


def _swap_in(mark: RestoreMark) -> Path | None:
    """Move the current database (with its -wal/-shm) and blobs aside, then the staged ones into place; then
    remove the mark and the staging folder. Every step is a rename and is skipped when already done, so an
    interrupted swap is finished by running this again. On an error, what was moved is put back."""
    data_dir = Path(mark.aside).parent
    try:
        _move_pending(mark)
    except OSError as exc:
        try:
            _roll_back(mark)
        except OSError:  # the mark stays: the next start or restore finishes or reports it
            raise RestoreError(
                f"Putting the restored files in place failed ({exc.strerror or exc}), and so did putting the previous "
                f"ones back; nothing was deleted. {_pending_advice(mark)}"
            ) from exc
        _remove_restore_mark(data_dir)
        raise RestoreError(
            f"Putting the restored files in place failed ({exc.strerror or exc}); the previous database and "
            f"images were put back (if anything is missing, it is in {mark.aside})."
        ) from exc
    shutil.rmtree(mark.staging, ignore_errors=True)  # empty by now; before the mark goes, so none is ever left
    _reached("staging removed")
    _remove_restore_mark(data_dir)
    aside = Path(mark.aside)
    if not mark.moves and aside.is_dir() and not any(aside.iterdir()):  # nothing was there (a fresh data folder)
        aside.rmdir()
        return None
    return aside


def _move_pending(mark: RestoreMark) -> None:
    staged_db, db_path = Path(mark.staged_db), Path(mark.db_path)
    for current, aside in mark.moves:
        if Path(current).exists() and not Path(aside).exists():
            Path(aside).parent.mkdir(parents=True, exist_ok=True)
            os.rename(current, aside)
            _reached(f"aside {Path(current).name}")
    if staged_db.exists():
        if db_path.exists():  # the previous database was not moved aside: never overwrite it
            raise OSError(f"{db_path} is still there")
        os.rename(staged_db, db_path)
        _reached("database in")
    if mark.staged_blobs is not None and Path(mark.staged_blobs).exists():
        os.rename(mark.staged_blobs, mark.blob_dir)
        _reached("images in")
    for folder in {Path(mark.aside).parent, db_path.parent, Path(mark.blob_dir).parent}:
        _fsync_dir(folder)
    _reached("synced")


def _roll_back(mark: RestoreMark) -> None:
    """Undo the moves of a swap: restored files back to the staging copy, the previous ones back in place."""
    moved_aside = {current: Path(aside).exists() for current, aside in mark.moves}
    db_path, blob_dir = Path(mark.db_path), Path(mark.blob_dir)
    if db_path.exists() and not Path(mark.staged_db).exists() and moved_aside.get(mark.db_path, True):
        os.rename(db_path, mark.staged_db)
    blobs_moved = moved_aside.get(mark.blob_dir, True)
    if mark.staged_blobs and blob_dir.exists() and not Path(mark.staged_blobs).exists() and blobs_moved:
        os.rename(blob_dir, mark.staged_blobs)
    for current, aside in reversed(mark.moves):
        if Path(aside).exists() and not Path(current).exists():
            os.rename(aside, current)
    for folder in {Path(mark.aside), *(Path(aside).parent for _, aside in mark.moves)}:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: all was put back


def _staged_problem(mark: RestoreMark) -> str | None:
    """Why the staged copy (where it is now: staged, or already moved into place) cannot finish the swap, or None."""
    staged_db = Path(mark.staged_db)
    database = staged_db if staged_db.exists() else Path(mark.db_path)
    try:
        if not database.is_file() or _sha256_of(database)[0] != mark.db_sha256:
            return f"the staged database {staged_db} is missing or not the one that was verified"
        if mark.staged_blobs is not None:
            blobs = Path(mark.staged_blobs) if Path(mark.staged_blobs).exists() else Path(mark.blob_dir)
            found = list(BlobStore(blobs).files())
            if len(found) != mark.blob_count or sum(p.stat().st_size for _, p in found) != mark.blob_bytes:
                return f"the staged images in {mark.staged_blobs} are not all there"
    except OSError as exc:
        return f"the staged copy cannot be read ({exc.strerror or exc})"
    return None


def _pending_advice(mark: RestoreMark) -> str:
    return (
        f"The previous database and images are in {mark.aside} (whatever was moved so far). Run `likeness restore "
        f"{mark.archive} --yes` to restore that backup again (it first puts back what was moved), then start the bot."
    )


def finish_interrupted_restore(settings: Settings) -> RestoreMark | None:
    """At the start of `likeness run` (the instance lock held): finish the swap of an interrupted restore from its
    verified staged copy, and return its mark; None when there is none. Raises RestorePendingError, saying what to
    run, when the staged copy is not whole."""
    mark = read_restore_mark(settings.data_dir)
    if mark is None:
        return None
    problem = _staged_problem(mark)
    if problem is not None:
        raise RestorePendingError(
            f"{mark.describe().capitalize()} was interrupted, and it cannot be finished: {problem}. "
            + _pending_advice(mark)
        )
    try:
        _swap_in(mark)
    except RestoreError as exc:
        raise RestorePendingError(
            f"{mark.describe().capitalize()} was interrupted; finishing it failed: {exc}"
        ) from exc
    return mark


def _settle_interrupted_restore(settings: Settings) -> RestoreMark | None:
    """Before a new restore: finish an interrupted one if its staged copy is whole; otherwise put back what it moved
    and keep its staged copy (renamed restore-interrupted-<time>, never deleted). Returns the mark it finished."""
    mark = read_restore_mark(settings.data_dir)
    if mark is None:
        return None
    if _staged_problem(mark) is None:
        _swap_in(mark)
        return mark
    try:
        _roll_back(mark)
        if Path(mark.staging).exists():
            kept = _fresh_dir(settings.data_dir / f"restore-interrupted-{mark.started_at.replace(':', '')}")
            kept.rmdir()
            os.rename(mark.staging, kept)
    except OSError as exc:
        raise RestoreError(
            f"{mark.describe().capitalize()} was interrupted, and putting back what it moved failed "
            f"({exc.strerror or exc}); nothing was deleted. Put {mark.aside}'s files back in {settings.data_dir} by "
            f"hand, remove {restore_mark_path(settings.data_dir)}, then restore again."
        ) from exc
    _remove_restore_mark(settings.data_dir)
    return None


def refuse_if_restore_pending(settings: Settings) -> None:
    """For whatever opens the database without the instance lock (backup, the bot's services): a restore mark means
    the database is mid-swap."""
    mark = read_restore_mark(settings.data_dir)
    if mark is not None:
        raise RestorePendingError(
            f"{mark.describe().capitalize()} is in progress or was interrupted "
            f"({restore_mark_path(settings.data_dir).resolve()} exists), so the database is not opened. If no restore "
            "is running, `likeness run` finishes it from its verified staged copy when it starts."
        )


def had_a_database(settings: Settings) -> bool:
    """Whether the data folder shows it had a database: stored images, or a restore mark."""
    return restore_mark_path(settings.data_dir).exists() or next(BlobStore(settings.blob_dir).files(), None) is not None


def ensure_database_present(settings: Settings) -> None:
    """Refuse to start (and create an empty database) where the data folder clearly had one that is gone."""
    refuse_if_restore_pending(settings)
    if settings.db_path.exists() or not had_a_database(settings):
        return
    raise MissingDatabaseError(
        f"There is no database at {settings.db_path.resolve()}, but {settings.blob_dir.resolve()} holds stored images: "
        "the database is missing, and starting would create an empty one (every character gone). Restore a backup "
        "(`likeness restore <the backup .zip> --yes`), or put the database back (look for before-restore-* in "
        f"{settings.data_dir.resolve()}). To start afresh on purpose, move {settings.blob_dir.resolve()} away first."
    )


# ---------------------------------------------------------------------------------------------------- helpers


def _stream(source: IO[bytes], out: IO[bytes] | None = None) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: source.read(_CHUNK), b""):
        digest.update(block)
        if out is not None:
            out.write(block)
    return digest.hexdigest()


def _sha256_of(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        digest = _stream(handle)
        return digest, handle.tell()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


# ---------------------------------------------------------------------------------------------------- CLI


def backup_command(settings: Settings, path: Path) -> int:
    """`likeness backup PATH`: 0 when the archive was written, 2 otherwise."""
    try:
        result = backup(settings, path)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return 2
    m = result.manifest
    print(
        f"Wrote {result.path} ({_size(result.archive_bytes)}): the database (schema {m.schema_version}, "
        f"{m.tables.get('characters', 0)} characters) and {len(m.blobs)} images and clips, "
        f"in {result.seconds:.1f} s."
    )
    for digest in result.damaged_blobs:
        print(
            f"Warning: the stored file {digest} no longer matches its content (disk damage?) and was left out.",
            file=sys.stderr,
        )
    return 0


def restore_command(
    settings: Settings,
    path: Path,
    *,
    assume_yes: bool,
    interactive: bool | None = None,
    ask: Callable[[str], str] = input,
) -> int:
    """`likeness restore PATH [--yes]`: asks on a terminal unless --yes; off a terminal --yes is required."""
    data_dir = settings.data_dir.resolve()
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not assume_yes and not interactive:
        print(
            f"Restoring replaces the database and images in {data_dir}; there is no terminal to ask on, "
            "so add --yes to confirm.",
            file=sys.stderr,
        )
        return 2

    def confirm(manifest: Manifest) -> bool:
        if assume_yes:
            return True
        print(f"{path} was {manifest.describe()}.")
        print(
            f"Restoring it replaces the database and images in {data_dir}; the current ones are moved to "
            f"{data_dir}/before-restore-<time>/ (nothing is deleted)."
        )
        try:
            return ask("Restore it? [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False

    try:
        result = restore(settings, path, confirm=confirm)
    except RestoreCanceledError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (InstanceLockedError, RestoreError, RestorePendingError) as exc:
        print(f"Refusing to restore: {exc}", file=sys.stderr)
        return 2
    if result.finished_interrupted is not None:
        print(
            f"First finished {result.finished_interrupted.describe()}, which had been interrupted; what it replaced "
            f"is in {result.finished_interrupted.aside}."
        )
    print(f"Restored {path} into {data_dir} in {result.seconds:.1f} s; it was {result.manifest.describe()}.")
    if result.moved_aside is not None:
        print(f"The previous database and images are in {result.moved_aside.resolve()}.")
    print("Start the bot as usual; it brings the database schema up to date if the backup is older.")
    return 0
