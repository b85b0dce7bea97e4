"""Reference views, elements and composed sheets of a character, scoped by guild_id like everything else.

Every change to a view or element bumps the character's version in the same transaction, so a shot or
a sheet always records exactly what it was bound to.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.domain import Character, Element, ElementKind, ReferenceView, StoredImage, View
from storage.characters import CharacterRepository, NameTakenError, name_key
from storage.db import Database, Transaction

_VIEW_COLUMNS = "id, character_id, view, original_blob, cleaned_blob, cutout_blob, uploaded_by, created_at"
_ELEMENT_COLUMNS = "id, character_id, name, kind, original_blob, cleaned_blob, cutout_blob, bound, created_at"
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _view(row: sqlite3.Row) -> ReferenceView:
    return ReferenceView.model_validate(dict(row))


def _element(row: sqlite3.Row) -> Element:
    return Element.model_validate(dict(row))


@dataclass(frozen=True)
class NewElement:
    name: str
    kind: ElementKind
    image: StoredImage
    bound: bool = True


async def _insert_view(
    tx: Transaction, guild_id: int, character_id: int, view: View, image: StoredImage, uploaded_by: int
) -> int:
    return await tx.execute(
        "INSERT INTO reference_views (guild_id, character_id, view, original_blob, cleaned_blob, "
        "cutout_blob, uploaded_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (guild_id, character_id, view.value, image.original, image.cleaned, image.cutout, uploaded_by),
    )


async def _insert_element(tx: Transaction, guild_id: int, character_id: int, element: NewElement) -> int:
    image = element.image
    return await tx.execute(
        "INSERT INTO elements (guild_id, character_id, name, name_key, kind, original_blob, "
        "cleaned_blob, cutout_blob, bound) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            guild_id,
            character_id,
            element.name,
            name_key(element.name),
            element.kind.value,
            image.original,
            image.cleaned,
            image.cutout,
            int(element.bound),
        ),
    )


class ReferenceRepository:
    def __init__(self, db: Database, characters: CharacterRepository) -> None:
        self._db = db
        self._characters = characters  # each change bumps its character's version through it

    async def current_views(self, guild_id: int, character_id: int) -> list[ReferenceView]:
        rows = await self._db.fetchall(
            f"SELECT {_VIEW_COLUMNS} FROM reference_views "
            "WHERE guild_id = ? AND character_id = ? AND replaced_at IS NULL ORDER BY id",
            (guild_id, character_id),
        )
        return [_view(row) for row in rows]

    async def current(self, guild_id: int, character_id: int) -> tuple[list[ReferenceView], list[Element]]:
        """The current views (by id) and the elements (by name) of a character, in one statement: one round trip,
        and one snapshot of both (a change racing it lands wholly before or after)."""
        rows = await self._db.fetchall(
            # the two tables' columns side by side; `part` tells them apart and sorts views after elements
            "SELECT 'element' AS part, id, character_id, name, kind, original_blob, cleaned_blob, cutout_blob, "
            "bound, created_at, name_key AS sort FROM elements WHERE guild_id = ? AND character_id = ? "
            "UNION ALL SELECT 'view', id, character_id, view, NULL, original_blob, cleaned_blob, cutout_blob, "
            "uploaded_by, created_at, id FROM reference_views "
            "WHERE guild_id = ? AND character_id = ? AND replaced_at IS NULL ORDER BY part, sort",
            (guild_id, character_id, guild_id, character_id),
        )
        views: list[ReferenceView] = []
        elements: list[Element] = []
        for row in rows:
            shared = {
                "id": row["id"],
                "character_id": row["character_id"],
                "original_blob": row["original_blob"],
                "cleaned_blob": row["cleaned_blob"],
                "cutout_blob": row["cutout_blob"],
                "created_at": row["created_at"],
            }
            if row["part"] == "view":
                views.append(ReferenceView.model_validate({**shared, "view": row["name"], "uploaded_by": row["bound"]}))
            else:
                elements.append(
                    Element.model_validate({**shared, "name": row["name"], "kind": row["kind"], "bound": row["bound"]})
                )
        return views, elements

    async def view_history(self, guild_id: int, character_id: int, view: View) -> list[ReferenceView]:
        """Every image a view has had, newest first (the current one included)."""
        rows = await self._db.fetchall(
            f"SELECT {_VIEW_COLUMNS} FROM reference_views "
            "WHERE guild_id = ? AND character_id = ? AND view = ? ORDER BY id DESC",
            (guild_id, character_id, view.value),
        )
        return [_view(row) for row in rows]

    async def set_view(
        self, guild_id: int, character_id: int, view: View, image: StoredImage, uploaded_by: int
    ) -> ReferenceView:
        """Make `image` the current `view`; the previous image stays in the history."""
        async with self._db.transaction() as tx:
            await tx.execute(
                f"UPDATE reference_views SET replaced_at = {_NOW} "
                "WHERE guild_id = ? AND character_id = ? AND view = ? AND replaced_at IS NULL",
                (guild_id, character_id, view.value),
            )
            new_id = await _insert_view(tx, guild_id, character_id, view, image, uploaded_by)
            await self._characters.bump_version_in(tx, guild_id, character_id)
            row = await tx.fetchone(f"SELECT {_VIEW_COLUMNS} FROM reference_views WHERE id = ?", (new_id,))
        assert row is not None
        return _view(row)

    async def remove_view(self, guild_id: int, character_id: int, view: View) -> bool:
        """Retire the current image of a view (kept in history). False if the view had none."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE reference_views SET replaced_at = {_NOW} "
                "WHERE guild_id = ? AND character_id = ? AND view = ? AND replaced_at IS NULL",
                (guild_id, character_id, view.value),
            )
            if changed:
                await self._characters.bump_version_in(tx, guild_id, character_id)
        return changed > 0

    async def elements(self, guild_id: int, character_id: int) -> list[Element]:
        rows = await self._db.fetchall(
            f"SELECT {_ELEMENT_COLUMNS} FROM elements WHERE guild_id = ? AND character_id = ? ORDER BY name_key",
            (guild_id, character_id),
        )
        return [_element(row) for row in rows]

    async def element(self, guild_id: int, character_id: int, name: str) -> Element | None:
        row = await self._db.fetchone(
            f"SELECT {_ELEMENT_COLUMNS} FROM elements WHERE guild_id = ? AND character_id = ? AND name_key = ?",
            (guild_id, character_id, name_key(name)),
        )
        return _element(row) if row else None

    async def add_element(
        self, guild_id: int, character_id: int, name: str, kind: ElementKind, image: StoredImage
    ) -> Element:
        try:
            async with self._db.transaction() as tx:
                new_id = await _insert_element(tx, guild_id, character_id, NewElement(name, kind, image))
                await self._characters.bump_version_in(tx, guild_id, character_id)
                row = await tx.fetchone(f"SELECT {_ELEMENT_COLUMNS} FROM elements WHERE id = ?", (new_id,))
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        assert row is not None
        return _element(row)

    async def create_character_with(
        self,
        guild_id: int,
        name: str,
        description: str,
        owner_id: int,
        views: list[tuple[View, StoredImage]],
        elements: list[NewElement],
    ) -> Character:
        """A new character with its views and elements, all in one transaction (an import): a failure leaves
        no half character. Raises NameTakenError when the name (or an element name) is taken."""
        try:
            async with self._db.transaction() as tx:
                character = await self._characters.create_in(tx, guild_id, name, description, owner_id)
                for view, image in views:
                    await _insert_view(tx, guild_id, character.id, view, image, owner_id)
                for element in elements:
                    await _insert_element(tx, guild_id, character.id, element)
        except sqlite3.IntegrityError as exc:
            raise NameTakenError(name) from exc
        return character

    async def remove_element(self, guild_id: int, character_id: int, name: str) -> bool:
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM elements WHERE guild_id = ? AND character_id = ? AND name_key = ?",
                (guild_id, character_id, name_key(name)),
            )
            if changed:
                await self._characters.bump_version_in(tx, guild_id, character_id)
        return changed > 0

    async def set_bound(self, guild_id: int, character_id: int, name: str, bound: bool) -> Element | None:
        """Toggle Element Binding. The version moves only when the binding really changes."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE elements SET bound = ? WHERE guild_id = ? AND character_id = ? AND name_key = ? AND bound != ?",
                (int(bound), guild_id, character_id, name_key(name), int(bound)),
            )
            if changed:
                await self._characters.bump_version_in(tx, guild_id, character_id)
        return await self.element(guild_id, character_id, name)


class SheetRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, guild_id: int, character_id: int, version: int) -> str | None:
        row = await self._db.fetchone(
            "SELECT blob FROM sheets WHERE guild_id = ? AND character_id = ? AND version = ?",
            (guild_id, character_id, version),
        )
        return str(row[0]) if row else None

    async def save(self, guild_id: int, character_id: int, version: int, blob: str) -> None:
        await self._db.execute(
            "INSERT INTO sheets (guild_id, character_id, version, blob) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (character_id, version) DO NOTHING",
            (guild_id, character_id, version, blob),
        )
