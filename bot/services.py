"""Builds every service of the bot from the settings, once, and closes them in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from bot.animate import AnimateService
from bot.config import Settings
from bot.imaging.cleanup import BackgroundRemover
from bot.imaging.intake import IntakeLimits
from bot.library import Library
from bot.models import model_file
from bot.providers.local import LocalProvider
from bot.providers.registry import ProviderRegistry
from bot.references import ReferenceService
from bot.server_settings import ServerSettings
from bot.sheets import SheetService
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
    server_settings: ServerSettings

    @classmethod
    async def build(cls, settings: Settings) -> Services:
        storage = await Storage.open(settings.db_path, settings.blob_dir)
        library = Library(storage)
        remover = BackgroundRemover(choose_cleanup_model(settings), settings.model_dir, settings.cleanup_workers)
        http = httpx.AsyncClient(follow_redirects=True, headers={"User-Agent": "Likeness (self-hosted Discord bot)"})
        references = ReferenceService(storage, library, remover, intake_limits(settings), http)
        local = LocalProvider(
            settings.render_dir, delay=settings.local_delay, max_concurrency=settings.local_concurrency
        )
        providers = ProviderRegistry({"local": local}, default=settings.default_provider)
        animate = AnimateService(
            storage, library, providers, lambda job_id: None, max_queued_per_user=settings.max_queued_per_user
        )
        return cls(
            storage,
            library,
            references,
            SheetService(storage),
            remover,
            http,
            providers,
            animate,
            ServerSettings(storage),
        )

    async def close(self) -> None:
        await self.providers.close()
        await self.http.aclose()
        self.remover.close()
        await self.storage.close()
