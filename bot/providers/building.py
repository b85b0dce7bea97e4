"""Building the bot's providers from the settings: the bot's own keys, and a factory for servers' keys."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Mapping

from bot.infra.config import Settings, SettingsError
from bot.providers import catalog
from bot.providers.base import BOT_KEYS, SERVER_KEYS, KeyOwner, Provider
from bot.providers.registry import ProviderFactory
from bot.providers.spec import BuildContext

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


def build_provider(
    settings: Settings, name: str, keys: Mapping[str, str | None], owner: KeyOwner = BOT_KEYS
) -> Provider:
    """One provider on the bot's settings (host, model, concurrency) with the given keys: the bot's own, or a
    server's (its spec's `key_fields`; `owner` then says so in its errors). The host never comes from a server.
    A value the provider refuses (an unknown model) is reported as a bad setting, not a traceback."""
    spec = catalog.get(name)
    context = BuildContext(
        settings=spec.own_settings(settings),
        keys=keys,
        owner=owner,
        download_deadline=settings.download_deadline,
        render_dir=settings.render_dir,
        install_id=functools.partial(install_id, settings),
    )
    try:
        return spec.build(context)
    except ValueError as error:
        if spec.checked_setting is None:
            raise
        raise SettingsError(f"Some settings are not valid:\n  {spec.env_name(spec.checked_setting)}: {error}") from None


def bot_keys(settings: Settings) -> dict[str, dict[str, str | None]]:
    """The bot's own keys, by provider, for the providers that take keys and have them."""
    keys: dict[str, dict[str, str | None]] = {}
    for spec in catalog.SPECS:
        found = spec.bot_key(spec.own_settings(settings)) if spec.takes_keys or spec.read_bot_key else None
        if found is not None:
            keys[spec.name] = dict(found)
    return keys


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Those that take no key (local) always, unless their `read_bot_key` says they are not set up (ComfyUI without
    its server); one that takes keys only when the bot has its key (a provider without a key is not offered to
    members, unless a server brings its own key)."""
    keyed = bot_keys(settings)
    return {
        spec.name: build_provider(settings, spec.name, keyed.get(spec.name, {}))
        for spec in catalog.SPECS
        if (not spec.takes_keys and spec.read_bot_key is None) or spec.name in keyed
    }


def provider_factory(settings: Settings) -> ProviderFactory:
    """Builds a provider with a server's own key (the registry caches and closes what it builds)."""
    return functools.partial(build_provider, settings, owner=SERVER_KEYS)
