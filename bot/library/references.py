"""Reference views and elements: intake, cleanup, storage and Element Binding, under the library's rules.

An upload is checked from what Discord declares before a byte is downloaded, then downloaded with a cap,
decoded safely and cleaned, all off the event loop. Only when every step passed are the blobs and the row
written, in that order, so a refused upload stores nothing and a crash leaves at most an unreferenced blob.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

import httpx
from PIL import Image

from bot.domain import Actor, Character, Element, ElementKind, StoredImage, View
from bot.domain.errors import ConflictError, NotFoundError
from bot.imaging.cleanup import BackgroundRemover, CleanupResult, preview
from bot.imaging.intake import DecodedImage, IntakeLimits, check_declared, decode, download, kept_bytes
from bot.imaging.upload_gate import UploadGate
from bot.library.characters import Library, checked_name
from storage import Storage
from storage.characters import NameTakenError

ELEMENT_NAME_MAX = 20


@dataclass(frozen=True)
class Upload:
    """What Discord tells us about an attachment, before it is downloaded."""

    url: str
    filename: str
    size: int
    content_type: str | None


@dataclass(frozen=True)
class UploadResult:
    character: Character  # as it is now, with its new version
    preview_png: bytes  # before/after, for the member to check
    method: str  # "flat-key" or "model"
    notes: list[str] = field(default_factory=list)  # what intake did (rotation, colour profile...)
    warnings: list[str] = field(default_factory=list)  # quality check of the cut-out


def clean_element_name(raw: str) -> str:
    return checked_name(
        raw,
        max_length=ELEMENT_NAME_MAX,
        empty="An element needs a name, for example `jacket` or `sword`.",
        too_long="Element names can be at most {max_length} characters (that one has {length}).",
        bad_characters="Element names may use letters, digits, spaces and - _ ' . only.",
    )


async def clean_image(
    data: bytes, remover: BackgroundRemover, limits: IntakeLimits
) -> tuple[DecodedImage, CleanupResult]:
    """Decode untrusted bytes safely and clean the background: what every upload goes through."""
    decoded = await asyncio.to_thread(decode, data, limits)
    return decoded, await remover.cleanup(decoded.image)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class ReferenceService:
    def __init__(
        self,
        storage: Storage,
        library: Library,
        remover: BackgroundRemover,
        limits: IntakeLimits,
        http: httpx.AsyncClient,
        gate: UploadGate | None = None,
    ) -> None:
        self._storage = storage
        self._library = library
        self._remover = remover
        self._limits = limits
        self._http = http
        self._gate = gate or UploadGate(1)

    async def _ingest(self, upload: Upload) -> tuple[StoredImage, bytes, DecodedImage, CleanupResult]:
        check_declared(upload.filename, upload.size, upload.content_type, self._limits)
        async with self._gate.slot():  # memory: only a few downloads, decodes and cleanups at once
            data = await download(upload.url, upload.size, self._limits, self._http)
            decoded, result = await clean_image(data, self._remover, self._limits)

            def encode() -> tuple[bytes, bytes, bytes, bytes]:
                white, cutout = png_bytes(result.white), png_bytes(result.cutout)
                return kept_bytes(data, decoded), white, cutout, png_bytes(preview(decoded.image, result))

            original, white, cutout, preview_png = await asyncio.to_thread(encode)
        stored = StoredImage(
            original=await self._storage.blobs.put(original),
            cleaned=await self._storage.blobs.put(white),
            cutout=await self._storage.blobs.put(cutout),
        )
        return stored, preview_png, decoded, result

    async def take_frame(self, actor: Actor, upload: Upload) -> str:
        """A start or end frame a member attached to a shot: checked and decoded like every upload, kept as it is
        (a frame is a whole scene: no background removal), stored as PNG. Its digest."""
        check_declared(upload.filename, upload.size, upload.content_type, self._limits)
        async with self._gate.member(actor.user_id), self._gate.slot():
            data = await download(upload.url, upload.size, self._limits, self._http)
            decoded = await asyncio.to_thread(decode, data, self._limits)
            png = await asyncio.to_thread(png_bytes, decoded.image)
        return await self._storage.blobs.put(png)

    async def _current(self, actor: Actor, character: Character) -> Character:
        fresh = await self._storage.characters.get(actor.guild_id, character.id)
        if fresh is None:
            raise NotFoundError(f"**{character.name}** was deleted meanwhile.")
        return fresh

    async def add_view(self, actor: Actor, character: Character, view: View, upload: Upload) -> UploadResult:
        self._library.ensure_can_change(actor, character)
        async with self._gate.member(actor.user_id):
            stored, preview_png, decoded, result = await self._ingest(upload)
            await self._storage.references.set_view(actor.guild_id, character.id, view, stored, actor.user_id)
        return UploadResult(
            await self._current(actor, character), preview_png, result.method, decoded.notes, result.warnings
        )

    async def remove_view(self, actor: Actor, character: Character, view: View) -> Character:
        self._library.ensure_can_change(actor, character)
        if not await self._storage.references.remove_view(actor.guild_id, character.id, view):
            raise NotFoundError(f"**{character.name}** has no {view.label.lower()} view to remove.")
        return await self._current(actor, character)

    async def add_element(
        self,
        actor: Actor,
        character: Character,
        name: str,
        kind: ElementKind,
        upload: Upload,
        *,
        nsfw_allowed: bool | None = None,
    ) -> UploadResult:
        self._library.ensure_can_change(actor, character)
        name = clean_element_name(name)
        # the name goes into every prompt that binds the element: screened like the member's other words
        await self._library.screen_text(actor, {"element name": name}, nsfw_allowed=nsfw_allowed)
        if await self._storage.references.element(actor.guild_id, character.id, name) is not None:
            raise ConflictError(f"**{character.name}** already has an element called **{name}**. Pick another name.")
        async with self._gate.member(actor.user_id):
            stored, preview_png, decoded, result = await self._ingest(upload)
            try:
                await self._storage.references.add_element(actor.guild_id, character.id, name, kind, stored)
            except NameTakenError:
                raise ConflictError(
                    f"**{character.name}** already has an element called **{name}**. Pick another name."
                ) from None
        return UploadResult(
            await self._current(actor, character), preview_png, result.method, decoded.notes, result.warnings
        )

    async def remove_element(self, actor: Actor, character: Character, name: str) -> Character:
        self._library.ensure_can_change(actor, character)
        if not await self._storage.references.remove_element(actor.guild_id, character.id, name.strip()):
            raise NotFoundError(f"**{character.name}** has no element called **{name.strip()}**.")
        return await self._current(actor, character)

    async def bind(self, actor: Actor, character: Character, name: str, bound: bool) -> tuple[Character, Element]:
        """Element Binding: a bound element goes into every shot and sheet of the character."""
        self._library.ensure_can_change(actor, character)
        element = await self._storage.references.set_bound(actor.guild_id, character.id, name.strip(), bound)
        if element is None:
            raise NotFoundError(f"**{character.name}** has no element called **{name.strip()}**.")
        return await self._current(actor, character), element

    async def element_names(self, guild_id: int, character_name: str) -> list[str]:
        """For autocomplete: the elements of the character named in another option."""
        character = await self._storage.characters.get_by_name(guild_id, character_name)
        if character is None:
            return []
        return [element.name for element in await self._storage.references.elements(guild_id, character.id)]
