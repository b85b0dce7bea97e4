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

from bot.config import Settings
from bot.instance_lock import InstanceLock, InstanceLockedError
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
            for stale in data_dir.glob(".restore-*"):  # left by a restore that was killed (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            staging = data_dir / f".restore-{stamp}-{os.getpid()}"
            try:
                _extract_verified(archive, manifest, staging)
                _keep_ids_moving_forward(staging / "likeness.sqlite3", _id_counters(settings.db_path))
                moved_aside = _swap_in(settings, staging, stamp)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(manifest, moved_aside, time.monotonic() - started)


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


def _swap_in(settings: Settings, staging: Path, stamp: str) -> Path | None:
    """Move the current database (with its -wal/-shm) and blobs aside, then the staged ones into place."""
    db_path = settings.db_path
    current = [
        p for p in (db_path, *(db_path.with_name(db_path.name + s) for s in ("-wal", "-shm", "-journal"))) if p.exists()
    ]
    if settings.blob_dir.exists():
        current.append(settings.blob_dir)
    aside: Path | None = None
    moved: list[tuple[Path, Path]] = []
    try:
        if current:
            aside = _fresh_dir(settings.data_dir / f"before-restore-{stamp}")
            for item in current:
                destination = aside / item.name
                shutil.move(item, destination)
                moved.append((destination, item))
        db_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / "likeness.sqlite3", db_path)
        if (staging / "blobs").exists():
            shutil.move(staging / "blobs", settings.blob_dir)
        _fsync_dir(settings.data_dir)
        _fsync_dir(db_path.parent)
    except OSError as exc:
        # Put back what was moved, so the bot finds its data as it was.
        for destination, original in reversed(moved):
            with contextlib.suppress(OSError):
                if original.exists() and original.is_file():
                    original.unlink()
                elif original.exists():
                    shutil.rmtree(original)
                shutil.move(destination, original)
        raise RestoreError(
            f"Putting the restored files in place failed ({exc.strerror or exc}); the previous database and "
            f"images were put back" + (f" (if anything is missing, it is in {aside})" if aside else "") + "."
        ) from exc
    return aside


def _fresh_dir(base: Path) -> Path:
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise RestoreError(f"Too many folders named {base.name}-*; tidy {base.parent} first.")


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
    except (InstanceLockedError, RestoreError) as exc:
        print(f"Refusing to restore: {exc}", file=sys.stderr)
        return 2
    print(f"Restored {path} into {data_dir} in {result.seconds:.1f} s; it was {result.manifest.describe()}.")
    if result.moved_aside is not None:
        print(f"The previous database and images are in {result.moved_aside.resolve()}.")
    print("Start the bot as usual; it brings the database schema up to date if the backup is older.")
    return 0
