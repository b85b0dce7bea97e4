"""The character card service behind /character export and /character import: a card of a character the member
can see, and a card brought into their server under the library's rules (names, screening), downloaded within
the card limits and created in one transaction. The card format itself is `bot.library.card_format`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, replace

import httpx

from bot.domain import Actor, Character, StoredImage
from bot.domain.errors import ConflictError
from bot.imaging.intake import download
from bot.imaging.upload_gate import UploadGate
from bot.library.card_format import (
    CARD_FILE,
    SUFFIX,
    CardElement,
    CardLimits,
    CardRefusedError,
    CardView,
    build_card,
    check_declared_card,
    megabytes,
    parse_card,
)
from bot.library.characters import Library, clean_description, clean_name
from bot.library.references import clean_element_name
from storage import Storage
from storage.characters import NameTakenError
from storage.references import NewElement


@dataclass(frozen=True)
class CardUpload:
    """What Discord tells us about the attached card, before it is downloaded."""

    url: str
    filename: str
    size: int
    content_type: str | None


@dataclass(frozen=True)
class ExportedCard:
    filename: str
    data: bytes


def card_filename(name: str) -> str:
    """`<name>.likeness.zip`, with what a file name cannot hold replaced."""
    safe = re.sub(r"[^\w\-.']+", "_", name).strip("._") or "character"
    return f"{safe}{SUFFIX}"


class CharacterCards:
    """/character export and /character import, under the library's rules (visibility, names, screening)."""

    def __init__(
        self,
        storage: Storage,
        library: Library,
        limits: CardLimits,
        http: httpx.AsyncClient,
        gate: UploadGate | None = None,
    ) -> None:
        self._storage = storage
        self._library = library
        self._limits = limits
        self._http = http
        self._gate = gate or UploadGate(1)

    async def export(self, actor: Actor, character: Character, *, max_bytes: int) -> ExportedCard:
        """The card of a character the actor can see; `max_bytes` is what the reply may carry."""
        details = await self._library.details(actor, character)  # refuses a character the actor cannot see
        digests = {
            digest
            for reference in [*details.views, *details.elements]
            for digest in (reference.original_blob, reference.cleaned_blob, reference.cutout_blob)
            if digest is not None
        }
        blobs = {digest: await self._storage.blobs.get(digest) for digest in sorted(digests)}
        data = await asyncio.to_thread(
            build_card, character.name, character.description, details.views, details.elements, blobs
        )
        if len(data) > max_bytes:
            raise CardRefusedError(
                f"The card of **{character.name}** is {megabytes(len(data))} MB, over the {megabytes(max_bytes)} MB "
                "this server lets me upload. Remove a few references (or use smaller images) and export it again."
            )
        return ExportedCard(card_filename(character.name), data)

    async def import_card(
        self, actor: Actor, upload: CardUpload, new_name: str | None = None, *, nsfw_allowed: bool | None = None
    ) -> Character:
        """Bring a card into the actor's server, owned by them, visible to the server. All or nothing: blobs
        may be written, but the character, its views and its elements are created in one transaction. Its
        name, description and element names are screened like typed ones (`nsfw_allowed`: the channel's)."""
        limits = self._limits
        check_declared_card(upload.filename, upload.size, upload.content_type, limits)
        async with self._gate.member(actor.user_id):  # one upload or import in flight per member
            return await self._import(actor, upload, new_name, nsfw_allowed)

    async def _import(
        self, actor: Actor, upload: CardUpload, new_name: str | None, nsfw_allowed: bool | None
    ) -> Character:
        limits = self._limits
        async with self._gate.slot():  # memory: the card and its images are downloaded and decoded in a slot
            data = await download(
                upload.url, upload.size, replace(limits.image, max_bytes=limits.max_bytes), self._http
            )
            parsed = await asyncio.to_thread(parse_card, data, limits)
        del data
        card = parsed.card
        name = clean_name(new_name if new_name is not None else card.name)
        description = clean_description(card.description)
        element_names = [clean_element_name(element.name) for element in card.elements]
        if len({n.casefold() for n in element_names}) != len(element_names):
            raise CardRefusedError(f"The {CARD_FILE} of this card lists the same element twice.")
        texts: dict[str, str | None] = {"name": name, "description": description}
        texts.update((f"element name **{element_name}**", element_name) for element_name in element_names)
        await self._library.screen_text(actor, texts, nsfw_allowed=nsfw_allowed)
        if await self._storage.characters.clashing(actor.guild_id, name) is not None:
            raise await self._name_clash(actor, name)

        stored: dict[str, str] = {}
        for path, content in parsed.images.items():
            stored[path] = await self._storage.blobs.put(content)

        def image(reference: CardView | CardElement) -> StoredImage:
            # an older row may lack a cleaned or cut-out image: the original stands in, as providers need one
            original = stored[reference.original]
            return StoredImage(
                original=original,
                cleaned=stored[reference.cleaned] if reference.cleaned else original,
                cutout=stored[reference.cutout] if reference.cutout else original,
            )

        try:
            return await self._storage.references.create_character_with(
                actor.guild_id,
                name,
                description,
                actor.user_id,
                views=[(view.view, image(view)) for view in card.views],
                elements=[
                    NewElement(element_name, element.kind, image(element), element.bound)
                    for element_name, element in zip(element_names, card.elements, strict=True)
                ],
            )
        except NameTakenError:
            raise await self._name_clash(actor, name) from None

    async def _name_clash(self, actor: Actor, name: str) -> ConflictError:
        return await self._library.name_taken(
            actor, name, "Import the card under another name with the `name:` option.", as_asked=True
        )
