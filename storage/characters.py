"""Characters of the subject library. Every query is scoped by guild_id (the read at start, `warm`, puts each row in
its own server's copy): no row crosses servers.

Every interaction that names a character reads it, so each server's characters are kept in memory once read
(`_Library`): the bot is the only writer of its database (a restore from the shell runs only while it is stopped,
under the instance lock), and every write goes through this repository, which updates the server's copy as the
write returns (a write inside a transaction: once it commits). A read racing a write never keeps what it read
(see `_generation`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence

from bot.domain import Character, Visibility
from bot.domain.text import name_skeleton
from storage.db import Database, Transaction

_COLUMNS = (
    "id, guild_id, name, description, owner_id, locked, version, created_at, updated_at, visibility, visible_role_ids"
)
# what the in-memory copy is read with: the stored key and skeleton, as the SQL lookups and the unique indexes use them
_KEYED = f"{_COLUMNS}, name_key, name_skeleton"
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
SERVERS_KEPT = 1024  # servers whose characters stay in memory (the least recently used are dropped)


class NameTakenError(Exception):
    """The name is already used in this guild, whatever its case, or one that looks the same (its confusables
    skeleton, `bot.domain.text.name_skeleton`)."""


def name_key(name: str) -> str:
    return name.casefold()


def _character(row: sqlite3.Row) -> Character:
    data = dict(row)
    data.pop("name_key", None)
    data.pop("name_skeleton", None)
    data["visible_role_ids"] = json.loads(data["visible_role_ids"] or "[]")
    return Character.model_validate(data)


_INSERT = (
    "INSERT INTO characters (guild_id, name, name_key, name_skeleton, description, owner_id) "
    f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_KEYED}"
)


def _insert_params(guild_id: int, name: str, description: str, owner_id: int) -> tuple[object, ...]:
    return (guild_id, name, name_key(name), name_skeleton(name), description, owner_id)


class _Library:
    """One server's characters as the database has them: by id, by stored name key and skeleton, in name order."""

    def __init__(self, rows: Sequence[sqlite3.Row]) -> None:
        self.by_id: dict[int, Character] = {}
        self.ids_by_key: dict[str, int] = {}
        self.skeletons: set[str] = set()  # unique per server, as the key (NULL for old look-alikes: never clashes)
        self._names_of: dict[int, tuple[str, str | None]] = {}
        self._ordered: list[Character] | None = None
        for row in rows:
            self.put(row)

    def put(self, row: sqlite3.Row) -> Character:
        character, key = _character(row), str(row["name_key"])
        skeleton: str | None = row["name_skeleton"]
        self.remove(character.id)
        self.by_id[character.id] = character
        self.ids_by_key[key] = character.id
        if skeleton is not None:
            self.skeletons.add(skeleton)
        self._names_of[character.id] = (key, skeleton)
        return character

    def remove(self, character_id: int) -> None:
        if self.by_id.pop(character_id, None) is not None:
            key, skeleton = self._names_of.pop(character_id)
            del self.ids_by_key[key]
            if skeleton is not None:
                self.skeletons.discard(skeleton)
        self._ordered = None

    def ordered(self) -> list[Character]:
        """By name key, as `ORDER BY name_key` (SQLite's binary order of UTF-8 is code point order)."""
        if self._ordered is None:
            self._ordered = [self.by_id[i] for _, i in sorted(self.ids_by_key.items())]
        return self._ordered


class CharacterRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._libraries: OrderedDict[int, _Library] = OrderedDict()
        # Bumped by every write of a server: a read that started before a write does not keep what it read.
        self._generation: dict[int, int] = {}
        self._loading: dict[int, asyncio.Future[_Library]] = {}

    async def warm(self) -> None:
        """Read every server's characters now, in one read (at start: no first command of a server waits for it)."""
        rows = await self._db.fetchall(f"SELECT {_KEYED} FROM characters ORDER BY guild_id")
        by_guild: dict[int, list[sqlite3.Row]] = {}
        for row in rows:
            by_guild.setdefault(int(row["guild_id"]), []).append(row)
        for guild_id in list(by_guild)[:SERVERS_KEPT]:
            self._libraries.setdefault(guild_id, _Library(by_guild[guild_id]))

    async def _library(self, guild_id: int) -> _Library:
        """The server's characters, from memory, or read once (one round trip, shared by every command that asks
        meanwhile) and kept."""
        library = self._libraries.get(guild_id)
        if library is not None:
            self._libraries.move_to_end(guild_id)
            return library
        loading = self._loading.get(guild_id)
        if loading is None:
            loading = self._loading[guild_id] = asyncio.ensure_future(self._load(guild_id))
            loading.add_done_callback(lambda _: self._loading.pop(guild_id, None))
        return await asyncio.shield(loading)  # one asker giving up does not cancel the read for the others

    async def _load(self, guild_id: int) -> _Library:
        generation = self._generation.get(guild_id, 0)
        rows = await self._db.fetchall(f"SELECT {_KEYED} FROM characters WHERE guild_id = ?", (guild_id,))
        library = _Library(rows)
        if self._generation.get(guild_id, 0) == generation:
            self._libraries[guild_id] = library
            while len(self._libraries) > SERVERS_KEPT:
                self._libraries.popitem(last=False)
        return library

    def _changed(self, guild_id: int) -> _Library | None:
        """A write of the server returned (or runs, inside a transaction): reads in flight keep nothing; returns the
        server's copy to update, if one is kept."""
        self._generation[guild_id] = self._generation.get(guild_id, 0) + 1
        return self._libraries.get(guild_id)

    def _written(self, guild_id: int, row: sqlite3.Row) -> Character:
        library = self._changed(guild_id)
        return library.put(row) if library is not None else _character(row)

    async def create(self, guild_id: int, name: str, description: str, owner_id: int) -> Character:
        try:  # one statement, one round trip to the database thread (no BEGIN/COMMIT of its own)
            rows = await self._db.execute_returning(_INSERT, _insert_params(guild_id, name, description, owner_id))
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        return self._written(guild_id, rows[0])

    async def create_in(self, tx: Transaction, guild_id: int, name: str, description: str, owner_id: int) -> Character:
        """Insert a character inside a larger transaction (an import adds its views and elements with it)."""
        self._changed(guild_id)
        try:
            rows = await tx.fetchall(_INSERT, _insert_params(guild_id, name, description, owner_id))
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        tx.after_commit(lambda: self._written(guild_id, rows[0]))
        return _character(rows[0])

    async def get(self, guild_id: int, character_id: int) -> Character | None:
        return (await self._library(guild_id)).by_id.get(character_id)

    async def get_by_name(self, guild_id: int, name: str) -> Character | None:
        library = await self._library(guild_id)
        found = library.ids_by_key.get(name_key(name))
        return library.by_id[found] if found is not None else None

    async def is_taken(self, guild_id: int, name: str) -> bool:
        """Whether a new character may not take `name` (the rule of the unique indexes), from memory."""
        library = await self._library(guild_id)
        return name_key(name) in library.ids_by_key or name_skeleton(name) in library.skeletons

    async def clashing(self, guild_id: int, name: str, *, other_than: int | None = None) -> Character | None:
        """The character whose name `name` may not take: the same name in another case, or a look-alike
        (`other_than`: a character to leave out, the one being renamed). Read from the database: only asked
        when a name is refused."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND id IS NOT ? "
            "AND (name_key = ? OR name_skeleton = ?) ORDER BY name_key = ? DESC LIMIT 1",
            (guild_id, other_than, name_key(name), name_skeleton(name), name_key(name)),
        )
        return _character(row) if row else None

    async def count(self, guild_id: int) -> int:
        return len((await self._library(guild_id)).by_id)

    async def all(self, guild_id: int) -> list[Character]:
        """Every character of the server, by name. Who may see which is the library's rule, applied on these."""
        return list((await self._library(guild_id)).ordered())

    async def update(
        self,
        guild_id: int,
        character_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        locked: bool | None = None,
        visibility: Visibility | None = None,
        visible_role_ids: Sequence[int] | None = None,
        bump_version: bool = False,
    ) -> Character | None:
        assignments: list[str] = [f"updated_at = {_NOW}"]
        params: list[object] = []
        if name is not None:
            assignments += ["name = ?", "name_key = ?", "name_skeleton = ?"]
            params += [name, name_key(name), name_skeleton(name)]
        if description is not None:
            assignments.append("description = ?")
            params.append(description)
        if locked is not None:
            assignments.append("locked = ?")
            params.append(int(locked))
        if visibility is not None:
            assignments.append("visibility = ?")
            params.append(visibility.value)
        if visible_role_ids is not None:
            assignments.append("visible_role_ids = ?")
            params.append(json.dumps(list(visible_role_ids)))
        if bump_version:
            assignments.append("version = version + 1")
        try:
            rows = await self._db.execute_returning(
                f"UPDATE characters SET {', '.join(assignments)} WHERE guild_id = ? AND id = ? RETURNING {_KEYED}",
                (*params, guild_id, character_id),
            )
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name or "") from exc
        return self._written(guild_id, rows[0]) if rows else None

    async def delete(self, guild_id: int, character_id: int) -> bool:
        deleted = await self._db.execute(
            "DELETE FROM characters WHERE guild_id = ? AND id = ?", (guild_id, character_id)
        )
        library = self._changed(guild_id)
        if library is not None:
            library.remove(character_id)
        return deleted > 0

    async def bump_version_in(self, tx: Transaction, guild_id: int, character_id: int) -> None:
        """Bump the version inside a larger transaction (a view or element changed). Until it commits, the
        server's copy in memory keeps what is committed (and reads racing it keep nothing)."""
        self._changed(guild_id)
        rows = await tx.fetchall(
            f"UPDATE characters SET version = version + 1, updated_at = {_NOW} WHERE guild_id = ? AND id = ? "
            f"RETURNING {_KEYED}",
            (guild_id, character_id),
        )
        if rows:
            tx.after_commit(lambda: self._written(guild_id, rows[0]))
