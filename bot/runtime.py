"""The composition root: builds every part of the bot from the settings, once, in dependency order, and closes
them in the reverse order.

`Services.open` registers each part on one exit stack as it is built (storage, the background remover, the
shared HTTP client, the providers with the servers' sealed keys, the services, the delivery and the worker, the
order queue, the janitor, the model warm-up, the callback and metrics listeners), so leaving it closes them
newest first, and a failure halfway closes exactly what was built. Every dependency is given to its part when
it is built; nothing is set on a part afterwards. The front (the Discord client, or `Offline` for `likeness
demo`) gives the delivery, what /metrics and /healthz say, and its own disconnect, which comes after the last
status edits and before the services its commands use close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import standardwebhooks

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
from bot.infra.config import Settings, SettingsError
from bot.infra.metrics import Metrics, MetricsServer
from bot.jobs.callbacks import CallbackServer, CallbackUrls, callback_secret
from bot.jobs.delivery import NoDelivery, ThrottledDelivery
from bot.jobs.retention import Janitor
from bot.jobs.worker import Worker, WorkerConfig
from bot.library.card_format import CardLimits
from bot.library.cards import CharacterCards
from bot.library.characters import Library
from bot.library.references import ReferenceService
from bot.library.sheets.compose import SheetService
from bot.library.sheets.generate import SheetGenerator
from bot.ops.backup import ensure_database_present
from bot.providers import catalog
from bot.providers.accounts import KEY_SPECS, ProviderKeys, SealedKeys
from bot.providers.base import Provider
from bot.providers.building import build_providers, provider_factory
from bot.providers.registry import ProviderRegistry
from bot.providers.secret_box import SecretBox
from storage import Storage
from storage.jobs import JobRepository

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


class Front(Protocol):
    """What the runtime needs of the front it serves: the Discord client (bot.discord_io.client.LikenessBot), or
    `Offline`."""

    def build_delivery(self, jobs: JobRepository, server_settings: ServerSettings) -> ThrottledDelivery:
        """Where job statuses and results are shown."""
        ...

    async def render_metrics(self) -> str:
        """The /metrics page."""
        ...

    async def is_up(self) -> bool:
        """What /healthz says."""
        ...

    async def disconnect(self) -> None:
        """Leave Discord (or wherever the front is)."""
        ...


class Offline:
    """The front of `likeness demo`: no Discord; the results are kept in memory (`delivery.posted`)."""

    def __init__(self) -> None:
        self.delivery = NoDelivery()

    def build_delivery(self, jobs: JobRepository, server_settings: ServerSettings) -> NoDelivery:
        return self.delivery

    async def render_metrics(self) -> str:
        return ""

    async def is_up(self) -> bool:
        return True

    async def disconnect(self) -> None:
        return None


@dataclass
class Services:
    """Every part of the running bot, built by `open`; cogs reach them as `bot.services.<name>`."""

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
    gate: UploadGate  # the memory bound on image work
    metrics: Metrics
    delivery: ThrottledDelivery
    worker: Worker  # built stopped: the front starts it (the first ready, after the budget's reconcile)
    janitor: Janitor  # likewise
    callback_server: CallbackServer | None  # listening when LIKENESS_CALLBACK_URL is set
    metrics_server: MetricsServer | None  # listening when LIKENESS_METRICS_PORT is set

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, front: Front) -> AsyncIterator[Services]:
        """Everything, built in dependency order on one exit stack: leaving closes it all in the reverse order
        (the listeners, the warm-up, the janitor, the worker, the delivery's last edits, the front's disconnect,
        the providers, the HTTP client, the remover, the storage); a failure halfway closes what was built."""
        ensure_database_present(settings)  # never an empty database where one is missing or mid-restore
        async with contextlib.AsyncExitStack() as stack:
            storage = await Storage.open(settings.db_path, settings.blob_dir)
            stack.push_async_callback(storage.close)
            remover = BackgroundRemover(choose_cleanup_model(settings), settings.model_dir, settings.cleanup_workers)
            stack.callback(remover.close)
            # one bound for the whole process on the memory-heavy image work: uploads, card imports and sheets
            gate = UploadGate(settings.cleanup_workers)
            return_freed_memory()  # and what that work frees goes back to the system, not into glibc's heaps
            http = await stack.enter_async_context(
                httpx.AsyncClient(follow_redirects=True, headers={"User-Agent": "Likeness (self-hosted Discord bot)"})
            )
            sealed_keys = SealedKeys(storage.provider_keys, secret_box(settings))
            bots_own = build_providers(settings)
            providers = ProviderRegistry(
                bots_own,
                default=default_provider(settings.default_provider, bots_own),
                factory=provider_factory(settings),
                keyable=KEY_SPECS,
                server_keys=sealed_keys,
            )
            stack.push_async_callback(providers.close)
            provider_keys = ProviderKeys(sealed_keys, providers, audit=storage.audit)
            server_settings = ServerSettings(storage, providers)
            await server_settings.warm()
            await storage.characters.warm()  # read by nearly every command: kept in memory (storage.characters)
            # names and descriptions are screened with the rules in memory: no database read per command
            moderator = Moderator(storage, rules_of=server_settings.cached_rules)
            await moderator.warm()
            library = Library(storage, screen=moderator.screen_member_text)
            references = ReferenceService(storage, library, remover, intake_limits(settings), http, gate)
            cards = CharacterCards(storage, library, CardLimits.for_images(intake_limits(settings)), http, gate)
            budget = Budget(storage)

            metrics = Metrics()
            # The front leaves once the worker stopped and the last status edits are out (both below, so
            # closed before), and before what its commands use closes (above, so closed after).
            stack.push_async_callback(front.disconnect)
            delivery = front.build_delivery(storage.jobs, server_settings)
            stack.push_async_callback(delivery.flush_all)
            urls = callback_urls(settings)
            worker = Worker(
                storage.jobs,
                storage.blobs,
                providers,
                delivery,
                WorkerConfig(
                    per_user=settings.per_user_running,
                    position_interval=max(settings.status_edit_interval, 0.05),
                    max_wait_seconds=settings.max_wait_hours * 3600,
                ),
                metrics=metrics,
                per_user_by_guild=server_settings.running_caps,
                callback_url_for=urls.url_for if urls is not None else None,
            )
            stack.push_async_callback(worker.stop)  # jobs stay in the database and resume at the next start
            orders = OrderQueue(
                storage,
                worker.wake,
                budget=budget,
                moderator=moderator,
                max_queued_per_user=settings.max_queued_per_user,
            )
            generated_sheets = SheetGenerator(
                storage, library, providers, orders, sheet_provider=settings.sheet_provider
            )
            janitor = Janitor(
                storage, keep_clips_days=settings.keep_clips_days, keep_audit_days=settings.keep_audit_days
            )
            stack.push_async_callback(janitor.stop)
            # Load the background model in the background: the first upload should not wait for it.
            warm_up = asyncio.create_task(remover.warm_up(), name="likeness-model-warm-up")
            stack.callback(warm_up.cancel)

            callback_server = None
            if urls is not None:
                callback_server = CallbackServer(
                    urls,
                    lambda _provider, job_id: worker.nudge(job_id),
                    settings.callback_host,
                    settings.callback_port,
                    count=metrics.callback,
                    signing_secrets=signing_secrets(settings),
                )
                await _listen(
                    callback_server.start(), "LIKENESS_CALLBACK_PORT", settings.callback_host, settings.callback_port
                )
                stack.push_async_callback(callback_server.close)
            metrics_server = None
            if settings.metrics_port is not None:
                metrics_server = MetricsServer(
                    front.render_metrics, settings.metrics_host, settings.metrics_port, healthy=front.is_up
                )
                await _listen(
                    metrics_server.start(), "LIKENESS_METRICS_PORT", settings.metrics_host, settings.metrics_port
                )
                stack.push_async_callback(metrics_server.close)

            yield cls(
                storage,
                library,
                references,
                SheetService(storage, gate),
                remover,
                http,
                providers,
                AnimateService(
                    storage,
                    library,
                    providers,
                    orders,
                    generated_sheets,
                    delivery,
                    worker.positions,
                    references.take_frame,
                ),
                generated_sheets,
                server_settings,
                provider_keys,
                cards,
                budget,
                moderator,
                gate,
                metrics,
                delivery,
                worker,
                janitor,
                callback_server,
                metrics_server,
            )


def default_provider(configured: str, bots_own: Mapping[str, Provider]) -> str:
    """The configured default provider, or local when the bot has no key for it."""
    if configured in bots_own:
        return configured
    log.warning("%s has no key configured; the default provider is local", configured)
    return "local"


def signing_secrets(settings: Settings) -> dict[str, str]:
    """The secrets the providers sign their callbacks with, where the admin set one."""
    found: dict[str, str] = {}
    for spec in catalog.SPECS:
        value = spec.webhook_secret(spec.own_settings(settings)) if spec.webhook_secret is not None else None
        if not value:
            continue
        try:
            standardwebhooks.Webhook(value)
        except Exception:  # the library's own words would echo the secret; say which setting instead
            raise SettingsError(
                f"{spec.env_name('webhook_secret')} is not a signing secret: copy it as the provider shows it "
                "(whsec_ followed by Base64)."
            ) from None
        found[spec.name] = value
    return found


def callback_urls(settings: Settings) -> CallbackUrls | None:
    """The signed URLs providers call back on, when LIKENESS_CALLBACK_URL is set (else the worker only polls)."""
    if settings.callback_url is None:
        return None
    return CallbackUrls(settings.callback_url, callback_secret(settings.data_dir))


async def _listen(starting: Coroutine[Any, Any, None], variable: str, host: str, port: int) -> None:
    """Start a listener; a port that is taken (or an address that is not this machine's) is a setting to fix."""
    try:
        await starting
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise SettingsError(
            f"Some settings are not valid:\n  {variable}: cannot listen on {host}:{port} ({reason}); "
            "choose a free port, or stop what uses it."
        ) from None
