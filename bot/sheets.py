"""Character sheets: composed from the cut-outs of a character version, stored, and reused while unchanged."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image

from bot.domain import Character, View
from bot.imaging.sheet import compose_sheet, next_view_hint, sheet_png
from bot.library import Actor
from storage import Storage


@dataclass(frozen=True)
class SheetResult:
    character: Character
    png: bytes
    reused: bool  # True when the stored sheet of this version was posted again
    hint: str | None  # which view to add next, if any is missing


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


class SheetService:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def sheet(self, actor: Actor, character: Character) -> SheetResult:
        views = [v for v in await self._storage.references.current_views(actor.guild_id, character.id) if v.cutout_blob]
        hint = next_view_hint({view.view for view in views})

        stored = await self._storage.sheets.get(actor.guild_id, character.id, character.version)
        if stored is not None:
            return SheetResult(character, await self._storage.blobs.get(stored), True, hint)

        present: dict[View, Image.Image | None] = dict.fromkeys(View)
        for view in views:
            assert view.cutout_blob is not None
            present[view.view] = await asyncio.to_thread(_open, await self._storage.blobs.get(view.cutout_blob))
        elements = [
            (
                element.name,
                element.kind,
                await asyncio.to_thread(_open, await self._storage.blobs.get(element.cutout_blob)),
            )
            for element in await self._storage.references.elements(actor.guild_id, character.id)
            if element.bound and element.cutout_blob
        ]

        def render() -> bytes:
            return sheet_png(compose_sheet(character.name, character.description, present, elements))

        png = await asyncio.to_thread(render)
        digest = await self._storage.blobs.put(png)
        await self._storage.sheets.save(actor.guild_id, character.id, character.version, digest)
        return SheetResult(character, png, False, hint)
