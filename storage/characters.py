"""Characters of the subject library. Every query is scoped by guild_id: no row crosses servers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from bot.domain import Character, Visibility
from bot.domain.text import name_skeleton
from storage.db import Database, Transaction

_COLUMNS = (
    "id, guild_id, name, description, owner_id, locked, version, created_at, updated_at, visibility, visible_role_ids"
)
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class NameTakenError(Exception):
    """The name is already used in this guild, whatever its case, or one that looks the same (its confusables
    skeleton, `bot.domain.text.name_skeleton`)."""


def name_key(name: str) -> str:
    return name.casefold()


def _character(row: sqlite3.Row) -> Character:
    data = dict(row)
    data["visible_role_ids"] = json.loads(data["visible_role_ids"] or "[]")
    return Character.model_validate(data)


_INSERT = (
    "INSERT INTO characters (guild_id, name, name_key, name_skeleton, description, owner_id) "
    f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
)


def _insert_params(guild_id: int, name: str, description: str, owner_id: int) -> tuple[object, ...]:
    return (guild_id, name, name_key(name), name_skeleton(name), description, owner_id)


class CharacterRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, guild_id: int, name: str, description: str, owner_id: int) -> Character:
        try:  # one statement, one round trip to the database thread (no BEGIN/COMMIT of its own)
            rows = await self._db.execute_returning(_INSERT, _insert_params(guild_id, name, description, owner_id))
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        return _character(rows[0])

    @staticmethod
    async def create_in(tx: Transaction, guild_id: int, name: str, description: str, owner_id: int) -> Character:
        """Insert a character inside a larger transaction (an import adds its views and elements with it)."""
        try:
            rows = await tx.fetchall(_INSERT, _insert_params(guild_id, name, description, owner_id))
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        return _character(rows[0])

    async def get(self, guild_id: int, character_id: int) -> Character | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND id = ?", (guild_id, character_id)
        )
        return _character(row) if row else None

    async def get_by_name(self, guild_id: int, name: str) -> Character | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND name_key = ?",
            (guild_id, name_key(name)),
        )
        return _character(row) if row else None

    async def clashing(self, guild_id: int, name: str, *, other_than: int | None = None) -> Character | None:
        """The character whose name `name` may not take: the same name in another case, or a look-alike
        (`other_than`: a character to leave out, the one being renamed)."""
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? AND id IS NOT ? "
            "AND (name_key = ? OR name_skeleton = ?) ORDER BY name_key = ? DESC LIMIT 1",
            (guild_id, other_than, name_key(name), name_skeleton(name), name_key(name)),
        )
        return _character(row) if row else None

    async def count(self, guild_id: int) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM characters WHERE guild_id = ?", (guild_id,))
        return int(row[0]) if row else 0

    async def all(self, guild_id: int) -> list[Character]:
        """Every character of the server, by name. Who may see which is the library's rule, applied on these."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM characters WHERE guild_id = ? ORDER BY name_key", (guild_id,)
        )
        return [_character(row) for row in rows]

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
                f"UPDATE characters SET {', '.join(assignments)} WHERE guild_id = ? AND id = ? RETURNING {_COLUMNS}",
                (*params, guild_id, character_id),
            )
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name or "") from exc
        return _character(rows[0]) if rows else None

    async def delete(self, guild_id: int, character_id: int) -> bool:
        return (
            await self._db.execute("DELETE FROM characters WHERE guild_id = ? AND id = ?", (guild_id, character_id)) > 0
        )

    @staticmethod
    async def bump_version_in(tx: Transaction, guild_id: int, character_id: int) -> None:
        """Bump the version inside a larger transaction (a view or element changed)."""
        await tx.execute(
            f"UPDATE characters SET version = version + 1, updated_at = {_NOW} WHERE guild_id = ? AND id = ?",
            (guild_id, character_id),
        )
