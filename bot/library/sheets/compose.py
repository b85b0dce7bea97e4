"""Character sheets: composed from the cut-outs of a character version, stored, and reused while unchanged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from PIL import Image

from bot.domain import Actor, Character, View
from bot.imaging.scale import open_thumbnail
from bot.imaging.sheet import compose_sheet, next_view_hint, sheet_png, slot_sizes, strip_room
from bot.imaging.upload_gate import UploadGate
from storage import Storage


@dataclass(frozen=True)
class SheetResult:
    character: Character
    png: bytes
    reused: bool  # True when the stored sheet of this version was posted again
    hint: str | None  # which view to add next, if any is missing


class SheetService:
    def __init__(self, storage: Storage, gate: UploadGate | None = None) -> None:
        self._storage = storage
        self._gate = gate or UploadGate(1)

    async def sheet(self, actor: Actor, character: Character) -> SheetResult:
        views = [v for v in await self._storage.references.current_views(actor.guild_id, character.id) if v.cutout_blob]
        hint = next_view_hint({view.view for view in views})

        stored = await self._storage.sheets.get(actor.guild_id, character.id, character.version)
        if stored is not None:
            return SheetResult(character, await self._storage.blobs.get(stored), True, hint)

        bound = [
            element
            for element in await self._storage.references.elements(actor.guild_id, character.id)
            if element.bound and element.cutout_blob
        ]
        view_slot, tile = slot_sizes()
        async with self._gate.slot():  # memory: decoding the stored images is image work like an upload's
            # every image is loaded as a thumbnail of the slot it is drawn in, and hidden elements not at all
            present: dict[View, Image.Image | None] = dict.fromkeys(View)
            for view in views:
                assert view.cutout_blob is not None
                box = tile if view.view is View.FACE else view_slot
                present[view.view] = await self._thumbnail(view.cutout_blob, box)
            shown = strip_room(len(bound))
            elements = [
                (
                    element.name,
                    element.kind,
                    await self._thumbnail(element.cutout_blob, tile) if index < shown else None,
                )
                for index, element in enumerate(bound)
                if element.cutout_blob
            ]

            def render() -> bytes:
                return sheet_png(compose_sheet(character.name, character.description, present, elements))

            png = await asyncio.to_thread(render)
        digest = await self._storage.blobs.put(png)
        await self._storage.sheets.save(actor.guild_id, character.id, character.version, digest)
        return SheetResult(character, png, False, hint)

    async def _thumbnail(self, digest: str, box: tuple[int, int]) -> Image.Image:
        return await asyncio.to_thread(open_thumbnail, await self._storage.blobs.get(digest), box)
