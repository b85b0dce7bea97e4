"""Builds every service of the bot from the settings, once, and closes them in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from bot.generation.orders import AnimateService
from bot.generation.queueing import OrderQueue
from bot.governance.budget import Budget
from bot.governance.moderation import Moderator
from bot.governance.server_settings import ServerSettings
from bot.imaging.cleanup import BackgroundRemover
from bot.imaging.intake import IntakeLimits
from bot.imaging.model_files import model_file
from bot.imaging.scale import return_freed_memory
from bot.imaging.upload_gate import UploadGate
from bot.infra.config import Settings
from bot.library.card_format import CardLimits
from bot.library.cards import CharacterCards
from bot.library.characters import Library
from bot.library.references import ReferenceService
from bot.library.sheets.compose import SheetService
from bot.library.sheets.generate import SheetGenerator
from bot.ops.backup import ensure_database_present
from bot.providers.accounts import KEY_SPECS, ProviderKeys
from bot.providers.building import build_providers, provider_factory
from bot.providers.registry import ProviderRegistry
from bot.providers.secret_box import SecretBox
from storage import Storage

log = logging.getLogger(__name__)

FALLBACK_MODEL = "u2netp"


def choose_cleanup_model(settings: Settings) -> str:
    """The configured model if installed, else u2netp if installed, else the configured one (flat-key only)."""
    if model_file(settings.cleanup_model, settings.model_dir).is_file():
        return settings.cleanup_model
    if model_file(FALLBACK_MODEL, settings.model_dir).is_file():
        log.warning(
            "background model %s is not installed in %s; using %s instead",
            settings.cleanup_model,
            settings.model_dir,
            FALLBACK_MODEL,
        )
        return FALLBACK_MODEL
    log.warning(
        "no background-removal model in %s: only references on plain backgrounds can be cleaned. "
        "Install one with `likeness models install u2netp`.",
        settings.model_dir,
    )
    return settings.cleanup_model


def secret_box(settings: Settings) -> SecretBox | None:
    """The box that seals servers' keys, or None when LIKENESS_SECRET_KEY is not set (servers cannot add keys)."""
    value = settings.secret("secret_key")
    return SecretBox.from_setting(value) if value is not None else None


def intake_limits(settings: Settings) -> IntakeLimits:
    return IntakeLimits(max_bytes=int(settings.max_upload_mb * 1024 * 1024))


@dataclass
class Services:
    storage: Storage
    library: Library
    references: ReferenceService
    sheets: SheetService
    remover: BackgroundRemover
    http: httpx.AsyncClient
    providers: ProviderRegistry
    animate: AnimateService
    generated_sheets: SheetGenerator
    server_settings: ServerSettings
    provider_keys: ProviderKeys
    cards: CharacterCards
    budget: Budget
    moderator: Moderator
    gate: UploadGate = field(default_factory=lambda: UploadGate(1))  # the memory bound on image work

    @classmethod
    async def build(cls, settings: Settings) -> Services:
        ensure_database_present(settings)  # never an empty database where one is missing or mid-restore
        storage = await Storage.open(settings.db_path, settings.blob_dir)
        providers = ProviderRegistry(
            build_providers(settings),
            default=settings.default_provider,
            factory=provider_factory(settings),
            keyable=KEY_SPECS,
        )
        server_settings = ServerSettings(storage, providers)
        await server_settings.warm()
        await storage.characters.warm()  # read by nearly every command: kept in memory (storage.characters)
        # names and descriptions are screened with the rules in memory: no database read per command
        moderator = Moderator(storage, rules_of=server_settings.cached_rules)
        await moderator.warm()
        library = Library(storage, screen=moderator.screen_member_text)
        remover = BackgroundRemover(choose_cleanup_model(settings), settings.model_dir, settings.cleanup_workers)
        # one bound for the whole process on the memory-heavy image work: uploads, card imports and sheets
        gate = UploadGate(settings.cleanup_workers)
        return_freed_memory()  # and what that work frees goes back to the system, not into glibc's heaps
        http = httpx.AsyncClient(follow_redirects=True, headers={"User-Agent": "Likeness (self-hosted Discord bot)"})
        references = ReferenceService(storage, library, remover, intake_limits(settings), http, gate)
        provider_keys = ProviderKeys(storage, secret_box(settings), providers, audit=storage.audit)
        providers.server_keys = provider_keys
        if settings.default_provider not in providers.names():
            log.warning("%s has no key configured; the default provider is local", settings.default_provider)
            providers.default = "local"
        budget = Budget(storage)
        orders = OrderQueue(
            storage,
            lambda job_id: None,
            budget=budget,
            moderator=moderator,
            max_queued_per_user=settings.max_queued_per_user,
        )
        generated_sheets = SheetGenerator(storage, library, providers, orders, sheet_provider=settings.sheet_provider)
        animate = AnimateService(storage, library, providers, orders, generated_sheets)
        return cls(
            storage,
            library,
            references,
            SheetService(storage, gate),
            remover,
            http,
            providers,
            animate,
            generated_sheets,
            server_settings,
            provider_keys,
            CharacterCards(storage, library, CardLimits.for_images(intake_limits(settings)), http, gate),
            budget,
            moderator,
            gate=gate,
        )

    async def close(self) -> None:
        await self.providers.close()
        await self.http.aclose()
        self.remover.close()
        await self.storage.close()
