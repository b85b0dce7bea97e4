"""One aiosqlite connection: WAL, foreign keys, busy timeout, and numbered plain-SQL migrations.

The schema version lives in `PRAGMA user_version`; migration N is `migrations/NNN_name.sql` and is
applied, with the version bump, in one transaction.

All access goes through one connection, and a transaction holds a lock, so a transaction opened by one task is
never interleaved with statements of another (a single statement waits for the lock only while it is held, see
`Database._single`). (A second, read-only connection was measured under a burst of
interactions and was not faster: SQLite reads here take microseconds.)
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.domain.text import name_skeleton

Params = Sequence[Any] | dict[str, Any]
T = TypeVar("T")

FOREIGN_KEYS_OFF = "-- migrate: foreign_keys off"  # the first line of a migration that rebuilds a referred-to table
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in `storage/migrations`, in order, checked to be numbered 1..N."""
    found: list[Migration] = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"migration {migration.name} is out of sequence (expected {expected:03d}_...)")
    return found


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer Likeness than this one."""


class Database:
    def __init__(self, conn: aiosqlite.Connection, path: Path | str) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions are explicit (BEGIN IMMEDIATE) below.
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 5000")
        await conn.execute("PRAGMA synchronous = NORMAL")
        # migration 010 fills the look-alike key of existing names with the same function the code uses
        await conn.create_function("likeness_name_skeleton", 1, name_skeleton, deterministic=True)
        return cls(conn, path)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def migrate(self, migrations: Iterable[Migration] | None = None) -> list[int]:
        """Apply every migration newer than the database; returns the versions applied."""
        pending = list(bundled_migrations() if migrations is None else migrations)
        latest = pending[-1].version if pending else 0
        current = await self.schema_version()
        if current > latest:
            raise SchemaTooNewError(
                f"the database {self.path} is at schema version {current}, newer than this Likeness "
                f"({latest}); upgrade Likeness or restore a backup"
            )
        applied: list[int] = []
        for migration in pending:
            if migration.version <= current:
                continue
            async with self._lock:
                await self._apply(migration)
            applied.append(migration.version)
        return applied

    async def _apply(self, migration: Migration) -> None:
        # executescript commits on its own, so the script runs inside its own BEGIN/COMMIT. A migration that rebuilds
        # a table others refer to runs with foreign keys off and checks them before committing (SQLite's documented
        # procedure for changing a table's constraints); the pragma only takes effect outside a transaction.
        rebuild = migration.sql.startswith(FOREIGN_KEYS_OFF)
        if rebuild:
            await self._conn.execute("PRAGMA foreign_keys = OFF")
        try:
            await self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{migration.sql}\nPRAGMA user_version = {migration.version};"
            )
            if rebuild and await self._conn.execute_fetchall("PRAGMA foreign_key_check"):
                raise RuntimeError(f"migration {migration.name} would break the database's foreign keys")
            await self._conn.commit()
        except Exception:
            if self._conn.in_transaction:
                await self._conn.rollback()
            raise
        finally:
            if rebuild:
                await self._conn.execute("PRAGMA foreign_keys = ON")

    async def _single(self, statement: Callable[[Transaction], Awaitable[T]]) -> T:
        """One statement outside any transaction. While a transaction holds the lock, it waits for it; otherwise it
        is queued at once (aiosqlite queues it before its first await): aiosqlite runs its queue in order, so it
        runs before any transaction that opens later, and a burst of statements runs back to back on the
        database thread instead of each waiting for the previous one's round trip."""
        if self._lock.locked():
            async with self._lock:
                return await statement(Transaction(self._conn))
        return await statement(Transaction(self._conn))

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns lastrowid for inserts, else the rows changed."""
        return await self._single(lambda tx: tx.execute(sql, params))

    async def execute_returning(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """One write statement with a RETURNING clause; its rows."""
        return await self._single(lambda tx: tx.fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._single(lambda tx: tx.fetchall(sql, params))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Several statements that commit together or not at all."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            try:
                yield tx
            except BaseException:
                await self._conn.rollback()
                raise
            else:
                await self._conn.commit()
                for callback in tx.committed:
                    callback()


class Transaction:
    """Statements inside `Database.transaction()`; the lock is already held."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.committed: list[Callable[[], object]] = []  # run once the transaction committed (caches of its rows)

    def after_commit(self, callback: Callable[[], object]) -> None:
        self.committed.append(callback)

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._conn.execute(sql, params)
        try:
            if sql.lstrip().upper().startswith("INSERT"):
                return cursor.lastrowid or 0
            return cursor.rowcount
        finally:
            await cursor.close()

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        # one round trip to the database thread, not three (execute, fetch, close)
        return list(await self._conn.execute_fetchall(sql, params))
