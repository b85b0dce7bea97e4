"""Generated character sheets: an image provider is asked for a multi-angle sheet of a character (queued like a
shot, through bot.generation.queueing), and the figures split from the result (split.py) can be kept as the
character's reference views.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.domain import Actor, Character, Job, ShotParams, StoredImage, View, WorkKind
from bot.domain.errors import InvalidInputError
from bot.domain.text import clean_member_text
from bot.generation.prompts import choose_references
from bot.generation.queueing import OrderQueue, PendingShot
from bot.governance.limits import Place, check_channel
from bot.library.characters import Library
from bot.library.references import png_bytes
from bot.library.sheets.split import Figure, on_white, sheet_prompt, split_sheet
from bot.providers.base import Provider, RenderRequest
from bot.providers.registry import ProviderRegistry
from storage import Storage

STYLE_MAX = 200
SHEET_REFERENCES = 3  # views bound to a sheet request at most


class SheetGenerator:
    def __init__(
        self,
        storage: Storage,
        library: Library,
        providers: ProviderRegistry,
        orders: OrderQueue,
        *,
        sheet_provider: str | None = None,
    ) -> None:
        self._storage = storage
        self._library = library
        self._providers = providers
        self._orders = orders
        self.sheet_provider = sheet_provider

    async def queue(
        self, actor: Actor, place: Place, character: Character, style: str | None, *, confirmed: bool = False
    ) -> Job | PendingShot:
        """Ask an image provider for a multi-angle sheet of the character, from its traits and references (held for
        a Confirm press, like a shot, when it costs more than the server's threshold)."""
        self._library.ensure_can_change(actor, character)  # the kept views will change the character
        server = await self._storage.guilds.get(actor.guild_id)
        rules = server.rules
        check_channel(rules, place)
        provider = await self._provider(actor.guild_id, server.provider)
        caps = provider.capabilities
        style = clean_member_text(style)[:STYLE_MAX] if style else None
        await self._orders.screen_words(actor, place, rules, {"style": style})
        details = await self._library.details(actor, character)
        row = caps.image_row or caps.default_row
        binding = choose_references(details.views, [], min(row.max_images, SHEET_REFERENCES))
        prompt = sheet_prompt(clean_member_text(character.name), clean_member_text(character.description), style)
        await self._orders.screen_prompt(actor, place, rules, character, binding, prompt, "sheet", (style,))
        model = row.model
        estimate = provider.estimate_cost(
            RenderRequest(0, WorkKind.SHEET, model, prompt, None, 0, "16:9", "static", images=())
        )
        if self._orders.needs_confirmation(rules, estimate, confirmed=confirmed):
            payload = {"sheet": {"style": style}}
            return await self._orders.hold_for_confirmation(
                actor, rules, place, character, estimate, payload, caps, 0, WorkKind.SHEET
            )
        return await self._orders.enqueue(
            actor,
            place.channel_id,
            character,
            rules=rules,
            kind=WorkKind.SHEET,
            provider=caps.name,
            model=model,
            action=f"character sheet{f' ({style})' if style else ''}",
            prompt=prompt[: row.prompt_max_chars],
            negative_prompt=None,
            params=ShotParams(duration=0, aspect_ratio="16:9", camera="static", setting=style),
            binding=binding,
            estimate=estimate,
        )

    @staticmethod
    def is_pending_sheet(payload: dict[str, Any]) -> bool:
        """Whether a pending order (what `queue` kept for a Confirm press) is a sheet."""
        return "sheet" in payload

    async def confirmed(self, actor: Actor, place: Place, character: Character, payload: dict[str, Any]) -> Job:
        """Queue the sheet its member confirmed (`payload`: what `queue` kept)."""
        job = await self.queue(actor, place, character, payload["sheet"]["style"], confirmed=True)
        assert isinstance(job, Job)
        return job

    async def retry(self, actor: Actor, place: Place, job_id: int) -> Job | PendingShot:
        """Another generated sheet like job `job_id` (same character, same style)."""
        job = await self._orders.job_for(actor, job_id)
        character = await self._orders.character_of(actor, job)
        return await self.queue(actor, place, character, job.params.setting)

    async def _provider(self, guild_id: int, server_provider: str | None) -> Provider:
        """The configured sheet provider, else the server's if it makes images, else local."""
        names = await self._providers.names_for_guild(guild_id)
        for name in (self.sheet_provider, server_provider, self._providers.default, "local"):
            if name and name in names:
                provider = await self._providers.for_guild(guild_id, name)
                if WorkKind.SHEET in provider.capabilities.kinds:
                    return provider
        raise InvalidInputError("No provider on this bot can generate images for sheets.")

    async def figures(self, actor: Actor, job_id: int) -> tuple[Job, list[Figure]]:
        job = await self._orders.job_for(actor, job_id)
        if job.kind is not WorkKind.SHEET or job.result_blob is None:
            raise InvalidInputError(f"Job #{job_id} is not a finished sheet.")
        data = await self._storage.blobs.get(job.result_blob)
        return job, await asyncio.to_thread(split_sheet, data)

    async def keep_views(self, actor: Actor, job_id: int, views: list[View] | None) -> tuple[Character, list[View]]:
        """Make figures of a generated sheet the character's references (all, or the chosen views)."""
        job, figures = await self.figures(actor, job_id)
        character = await self._orders.character_of(actor, job)
        self._library.ensure_can_change(actor, character)
        chosen = [f for f in figures if views is None or f.view in views]
        if not chosen:
            raise InvalidInputError("None of those views were found on the sheet.")
        for figure in chosen:
            white, cutout = await asyncio.to_thread(
                lambda f=figure: (png_bytes(on_white(f.cutout)), png_bytes(f.cutout))
            )
            stored = StoredImage(
                original=await self._storage.blobs.put(white),
                cleaned=await self._storage.blobs.put(white),
                cutout=await self._storage.blobs.put(cutout),
            )
            await self._storage.references.set_view(actor.guild_id, character.id, figure.view, stored, actor.user_id)
        updated = await self._storage.characters.get(actor.guild_id, character.id)
        assert updated is not None
        return updated, [f.view for f in chosen]
