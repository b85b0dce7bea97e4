"""Reference views and elements of a character, scoped by guild_id like everything else."""

from __future__ import annotations

import sqlite3

from bot.domain import Element, ReferenceView
from storage.db import Database

_VIEW_COLUMNS = "id, character_id, view, original_blob, cleaned_blob, uploaded_by, created_at"
_ELEMENT_COLUMNS = "id, character_id, name, kind, original_blob, cleaned_blob, bound, created_at"


def _view(row: sqlite3.Row) -> ReferenceView:
    return ReferenceView.model_validate(dict(row))


def _element(row: sqlite3.Row) -> Element:
    return Element.model_validate(dict(row))


class ReferenceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def current_views(self, guild_id: int, character_id: int) -> list[ReferenceView]:
        rows = await self._db.fetchall(
            f"SELECT {_VIEW_COLUMNS} FROM reference_views "
            "WHERE guild_id = ? AND character_id = ? AND replaced_at IS NULL ORDER BY id",
            (guild_id, character_id),
        )
        return [_view(row) for row in rows]

    async def elements(self, guild_id: int, character_id: int) -> list[Element]:
        rows = await self._db.fetchall(
            f"SELECT {_ELEMENT_COLUMNS} FROM elements WHERE guild_id = ? AND character_id = ? ORDER BY name_key",
            (guild_id, character_id),
        )
        return [_element(row) for row in rows]
