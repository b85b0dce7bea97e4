"""Builds every service of the bot from the settings, once, and closes them in order."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.animate import AnimateService
from bot.backup import ensure_database_present
from bot.budget import Budget
from bot.cards import CharacterCards
from bot.character_card import CardLimits
from bot.config import Settings, SettingsError
from bot.imaging.cleanup import BackgroundRemover
from bot.imaging.intake import IntakeLimits
from bot.imaging.scale import return_freed_memory
from bot.library import Library
from bot.models import model_file
from bot.moderation import Moderator
from bot.provider_keys import KEY_SPECS, ProviderKeys
from bot.providers.base import BOT_KEYS, SERVER_KEYS, KeyOwner, Provider
from bot.providers.local import LocalProvider
from bot.providers.registry import ProviderFactory, ProviderRegistry
from bot.references import ReferenceService
from bot.secret_box import SecretBox
from bot.server_settings import ServerSettings
from bot.sheets import SheetService
from bot.upload_gate import UploadGate
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


def install_id(settings: Settings) -> str:
    """A random id of this installation, kept in the data folder. It prefixes the job ids sent to providers
    as idempotency keys, so a reset database or a second bot on the same account never finds another's task."""
    path = settings.data_dir / "install-id"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = f"lk{secrets.token_hex(4)}-"
    path.write_text(value + "\n")
    return value


def _configured(setting: str, factory: Callable[..., Provider], **options: Any) -> Provider:
    """Build a provider; a value it refuses (an unknown model) is reported as a bad setting, not a traceback."""
    try:
        return factory(**options)
    except ValueError as error:
        raise SettingsError(f"Some settings are not valid:\n  {setting}: {error}") from None


def build_provider(
    settings: Settings, name: str, keys: Mapping[str, str | None], owner: KeyOwner = BOT_KEYS
) -> Provider:
    """One remote provider on the bot's settings (host, model, concurrency) with the given keys: the bot's own,
    or a server's (bot.provider_keys.KEY_SPECS names the same fields; `owner` then says so in its errors). The host
    never comes from a server."""
    if name == "kling":
        from bot.providers.kling import KlingProvider

        return _configured(
            "LIKENESS_KLING_MODEL",
            KlingProvider,
            base_url=settings.kling_base_url,
            access_key=keys.get("access_key"),
            secret_key=keys.get("secret_key"),
            api_key=keys.get("api_key"),
            model=settings.kling_model,
            max_concurrency=settings.kling_concurrency,
            external_id_prefix=install_id(settings),
            owner=owner,
            download_deadline=settings.download_deadline,
        )
    if name == "fal":
        from bot.providers.fal import FalProvider

        return FalProvider(
            key=keys.get("key") or "",
            base_url=settings.fal_base_url,
            max_concurrency=settings.fal_concurrency,
            owner=owner,
            download_deadline=settings.download_deadline,
        )
    if name == "runway":
        from bot.providers.runway import RunwayProvider

        return RunwayProvider(
            api_key=keys.get("api_key") or "",
            base_url=settings.runway_base_url,
            max_concurrency=settings.runway_concurrency,
            owner=owner,
            download_deadline=settings.download_deadline,
        )
    raise ValueError(f"{name!r} is not a provider that takes keys")


def bot_keys(settings: Settings) -> dict[str, dict[str, str | None]]:
    """The bot's own keys, by provider, for the providers that have them."""
    keys: dict[str, dict[str, str | None]] = {}
    kling = {name: settings.secret(f"kling_{name}") for name in ("access_key", "secret_key", "api_key")}
    if (kling["access_key"] and kling["secret_key"]) or kling["api_key"]:
        keys["kling"] = kling
    if (fal_key := settings.secret("fal_key")) is not None:
        keys["fal"] = {"key": fal_key}
    if (runway_key := settings.secret("runway_api_key")) is not None:
        keys["runway"] = {"api_key": runway_key}
    return keys


def build_providers(settings: Settings) -> dict[str, Provider]:
    """The local provider always; a remote one only when its key is configured (a provider without a key
    is not offered to members, unless a server brings its own key)."""
    providers: dict[str, Provider] = {
        "local": LocalProvider(
            settings.render_dir, delay=settings.local_delay, max_concurrency=settings.local_concurrency
        )
    }
    for name, keys in bot_keys(settings).items():
        providers[name] = build_provider(settings, name, keys)
    return providers


def provider_factory(settings: Settings) -> ProviderFactory:
    """Builds a provider with a server's own key (the registry caches and closes what it builds)."""
    return functools.partial(build_provider, settings, owner=SERVER_KEYS)


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
        # names and descriptions are screened with the rules in memory: no database read per command
        moderator = Moderator(storage, rules_of=server_settings.cached_rules)
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
        animate = AnimateService(
            storage,
            library,
            providers,
            lambda job_id: None,
            budget=budget,
            moderator=moderator,
            max_queued_per_user=settings.max_queued_per_user,
            sheet_provider=settings.sheet_provider,
        )
        return cls(
            storage,
            library,
            references,
            SheetService(storage, gate),
            remover,
            http,
            providers,
            animate,
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
