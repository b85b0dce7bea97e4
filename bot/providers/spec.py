"""What a provider plug-in declares: everything the rest of the bot knows about a provider, in one `ProviderSpec`.

Each provider module (bot.providers.kling, fal, runway, local) exports a `SPEC`; bot.providers.catalog lists them.
The settings (bot.infra.config), the bot's own keys and the factory (bot.providers.building), the keys a server may
bring (bot.providers.accounts), the prompt dialects (bot.generation.prompts, through `Capabilities.element_syntax`),
the callbacks (bot.jobs.callbacks) and the doctor (bot.ops.doctor.online) read the specs; none names a provider.

A provider's settings are a small pydantic model (`settings`): its field `model` is the environment variable
`LIKENESS_<NAME>_MODEL`, read into the flat setting `<name>_model`. A provider that has a bot key names the host it
calls `base_url` there: the doctor shows it when the host cannot be reached.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretStr

from bot.providers.base import Dialect, KeyOwner, ModelRow, Provider, TaskStatus

S = TypeVar("S", bound=BaseModel)

_NO_SPACE = re.compile(r"^\S+$")

Keys = Mapping[str, str | None]  # a provider's key fields (KeyField.name -> value)


@dataclass(frozen=True)
class KeyField:
    name: str  # the provider's keyword for it (the factory's `keys`), and its setting for the bot's own key
    label: str  # shown in the modal (Discord: at most 45 characters)
    noun: str  # in a sentence: "the Kling access key"
    placeholder: str
    min_length: int = 8
    max_length: int = 200
    pattern: re.Pattern[str] = _NO_SPACE
    shape: str = ""  # what a valid value looks like, for the refusal ("" : no spaces)


@dataclass(frozen=True)
class BuildContext(Generic[S]):
    """What a provider's factory is given: its own settings, the keys (the bot's or a server's: `owner` says
    whose, for its errors), and what it needs of the bot's settings."""

    settings: S
    keys: Keys
    owner: KeyOwner
    download_deadline: float
    render_dir: Path
    install_id: Callable[[], str]  # bot.providers.building.install_id, for job ids unique to this installation


def secret(value: object) -> str | None:
    """A secret setting's value, trimmed; None when unset or blank."""
    if isinstance(value, SecretStr) and value.get_secret_value().strip():
        return value.get_secret_value().strip()
    return None


@dataclass(frozen=True)
class ProviderSpec(Generic[S]):
    """One provider, as the rest of the bot knows it.

    `key_fields`: what a server may bring as its own key (empty: the provider takes no key, like local, and is
    always on); the bot's own key is read from the settings of the same names (`read_bot_key` overrides that).
    """

    name: str
    label: str  # how admins and members see it ("fal.ai")
    settings: type[S]  # LIKENESS_<NAME>_<FIELD>
    build: Callable[[BuildContext[S]], Provider]
    key_fields: tuple[KeyField, ...] = ()
    read_bot_key: Callable[[S], Keys | None] | None = None  # None: every key field, from its setting, all set
    key_settings: Callable[[Keys], str] | None = None  # the settings holding a bot key; None: the key fields'
    key_source: str = ""  # where an admin finds its key, for the doctor's advice
    key_warning: Callable[[S], tuple[str, str] | None] | None = None  # (problem, fix): a bot key half set
    checked_setting: str | None = None  # the setting a ValueError from `build` is about: a bad setting, not a crash
    dialects: tuple[Dialect, ...] = ()  # how its prompts name the references (its capabilities say which one)
    calls_back: bool = False  # takes a callback URL (bot.jobs.callbacks)
    # What a callback body says of the task (Kling calls back on every change); None: each callback is an end.
    callback_status: Callable[[Mapping[str, Any]], TaskStatus] | None = None
    # Every model the provider knows, whatever is configured (its full capability table): `likeness providers`
    # prints it, so an admin can choose before setting anything. An instance's capabilities hold the rows of the
    # models it was built with.
    rows: tuple[ModelRow, ...] = ()
    # The secret its callbacks are signed with (Standard Webhooks), from its settings; None: unsigned. When one is
    # set, bot.jobs.callbacks refuses every callback of this provider without a valid signature.
    webhook_secret: Callable[[S], str | None] | None = None

    @property
    def takes_keys(self) -> bool:
        return bool(self.key_fields)

    def env_name(self, setting: str) -> str:
        return f"LIKENESS_{self.name.upper()}_{setting.upper()}"

    def own_settings(self, settings: object) -> S:
        """This provider's part of the bot's settings (bot.infra.config.Settings, already validated)."""
        values = {name: getattr(settings, f"{self.name}_{name}") for name in self.settings.model_fields}
        return self.settings.model_construct(**values)

    def bot_key(self, own: S) -> Keys | None:
        """The bot's own key from these settings, or None when it has none (or an incomplete one)."""
        if self.read_bot_key is not None:
            return self.read_bot_key(own)
        keys = {f.name: secret(getattr(own, f.name, None)) for f in self.key_fields}
        return keys if keys and all(keys.values()) else None

    def key_setting_names(self, keys: Keys) -> str:
        """The settings an admin corrects when the bot's key is refused."""
        if self.key_settings is not None:
            return self.key_settings(keys)
        return " and ".join(self.env_name(f.name) for f in self.key_fields)
