"""Building the bot's providers from the settings: the bot's own keys, and a factory for servers' keys."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from bot.infra.config import Settings, SettingsError
from bot.providers.base import BOT_KEYS, SERVER_KEYS, KeyOwner, Provider
from bot.providers.local import LocalProvider
from bot.providers.registry import ProviderFactory

log = logging.getLogger(__name__)


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
    or a server's (bot.providers.accounts.KEY_SPECS names the same fields; `owner` then says so in its errors). The host
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
