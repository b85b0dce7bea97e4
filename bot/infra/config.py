"""Every knob of the bot, read from the environment and `.env`, validated at start.

The Discord token is `DISCORD_TOKEN` (the name every Discord tutorial uses); every other setting is
`LIKENESS_<NAME>`, for example `LIKENESS_DATA_DIR=/srv/likeness`. Each provider's own settings come from its spec
(bot.providers.spec), as `LIKENESS_<PROVIDER>_<NAME>`: `LIKENESS_KLING_MODEL` is the field `model` of Kling's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.providers import catalog
from bot.providers.spec import secret

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

TOKEN_HELP = """\
No Discord bot token is set.

Likeness needs the token of a Discord application's bot user:
  1. Open https://discord.com/developers/applications and create an application (New Application).
  2. In "Bot", press "Reset Token" and copy the token.
  3. Put it in a file named .env beside the Makefile:   DISCORD_TOKEN=your-token-here
     (or export DISCORD_TOKEN in the environment), then run `make run` again.
The README explains how to invite the bot to your server."""


class CoreSettings(BaseSettings):
    """The settings of the bot itself; `Settings` adds every provider's (bot.providers.catalog)."""

    model_config = SettingsConfigDict(
        env_prefix="LIKENESS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    discord_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DISCORD_TOKEN", "LIKENESS_DISCORD_TOKEN"),
        description="The bot user's token (Developer Portal > Bot). Never logged.",
    )
    data_dir: Path = Field(default=Path("data"), description="Where the database and images are kept.")
    database_path: Path | None = Field(
        default=None, description="SQLite database file. Default: `<data_dir>/likeness.sqlite3`."
    )
    log_level: LogLevel = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    dev_guild_id: int | None = Field(
        default=None,
        description="A server id for `likeness sync --guild` without arguments: commands appear there at once.",
    )
    default_provider: str = Field(default="local", description="Render provider for servers that chose none.")
    default_video_model: str = Field(default="local-v1", description="Video model for servers that chose none.")
    max_upload_mb: float = Field(
        default=20.0, gt=0, le=500, description="Largest reference image a member may upload, in MB."
    )
    models_dir: Path | None = Field(
        default=None, description="Background-removal models (`.onnx`). Default: `<data_dir>/models`."
    )
    cleanup_model: str = Field(
        default="isnet-general-use",
        description="Background-removal model; falls back to u2netp when this one is not installed.",
    )
    cleanup_workers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Background cleanups that may run at once (each uses the CPU cores); also how many uploads, "
        "card imports and sheets are decoded at once, which bounds their memory (~200 MB each at most).",
    )
    per_user_running: int = Field(
        default=2, ge=1, le=50, description="Shots of one member that may render at the same time."
    )
    max_queued_per_user: int = Field(
        default=10, ge=1, le=500, description="Shots one member may have waiting or rendering at once."
    )
    max_wait_hours: float = Field(
        default=6.0,
        gt=0,
        le=168,
        description="Hours a shot waits, in a row, for a full or busy provider (or a full disk) before it fails.",
    )
    download_deadline: float = Field(
        default=600.0,
        ge=1,
        le=7200,
        description="Seconds a whole result download may take; past it the download is tried again.",
    )
    status_edit_interval: float = Field(
        default=5.0, ge=0, le=120, description="Seconds between two edits of one status message (Discord limits)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts servers' own provider keys in the database (32 bytes, url-safe base64; "
        "`likeness keygen` makes one). Without it servers cannot add keys. Never logged.",
    )
    sheet_provider: str | None = Field(
        default=None, description="Provider for /sheet generate; default: the server's, if it makes images, else local."
    )
    guild_ready_timeout: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="Seconds to wait for more servers at connect before the bot reports ready.",
    )
    shard_count: int | None = Field(
        default=None, ge=1, description="Number of shards; leave empty to let Discord decide."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log lines as JSON (for log collectors) or text; auto: JSON unless on a terminal."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (`http://<metrics_host>:<port>/metrics`); empty: off; "
        "0: any free port (logged).",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the metrics endpoint listens on (localhost: not exposed)."
    )
    callback_url: str | None = Field(
        default=None,
        description="Public base URL (https://...) that reaches the callback listener, for "
        f"{catalog.calling_back()} to say a render finished, so it posts at once; empty: providers are polled only.",
    )
    callback_host: str = Field(
        default="127.0.0.1", description="Address the callback listener binds (put an HTTPS reverse proxy in front)."
    )
    callback_port: int = Field(
        default=8788, ge=0, le=65535, description="Port the callback listener binds, when LIKENESS_CALLBACK_URL is set."
    )
    keep_clips_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="Days a rendered clip stays in the data folder once its channel has it, posted whole "
        "(0: keep every clip). Clips posted re-encoded or as a still are always kept.",
    )
    keep_audit_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="Days the audit log keeps an entry (refusals, with the text refused, and settings changes); "
        "0: keep them all.",
    )
    shutdown_grace: float = Field(
        default=20.0,
        ge=0,
        le=300,
        description="Seconds a stop (SIGTERM) waits for uploads in progress; every other job resumes at next start.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("default_provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        known = {spec.name for spec in catalog.SPECS}
        if value not in known:
            raise ValueError(f"must be one of {', '.join(sorted(known))}")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_callback_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("must be an http(s) URL with no query, like https://likeness.example.org")
        return value

    @field_validator("secret_key")
    @classmethod
    def _valid_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from bot.providers.secret_box import decode_key

        decode_key(value.get_secret_value())  # ValueError saying what is wrong, never the value
        return value

    @property
    def db_path(self) -> Path:
        return self.database_path or self.data_dir / "likeness.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def render_dir(self) -> Path:
        return self.data_dir / "local-renders"

    @property
    def model_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def secrets(self) -> list[str]:
        """Every secret setting that is set, for the log filter."""
        names = (name for name, field in type(self).model_fields.items() if _is_secret(field.annotation))
        return [value for value in map(self.secret, names) if value is not None]

    def secret(self, name: str) -> str | None:
        return secret(getattr(self, name))

    def token(self) -> str:
        """The Discord token, or `MissingToken` with instructions for the admin."""
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise MissingTokenError(TOKEN_HELP)
        return self.discord_token.get_secret_value().strip()


def _provider_fields() -> dict[str, Any]:
    """Each provider's settings as flat fields: kling's `model` is `kling_model`, LIKENESS_KLING_MODEL."""
    return {
        f"{spec.name}_{name}": (field.annotation, field)
        for spec in catalog.SPECS
        for name, field in spec.settings.model_fields.items()
    }


class Settings(create_model("ProviderSettings", __base__=CoreSettings, **_provider_fields())):
    """Runtime settings. Field descriptions double as the README's settings table."""


class MissingTokenError(RuntimeError):
    """Raised when the bot must connect but no token was given."""


class SettingsError(RuntimeError):
    """Invalid settings, worded for the admin: which setting, and what is wrong with it."""


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def settings_table() -> str:
    """The README's settings table, made from the fields above (a test keeps the README in step)."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(none)" if default is None else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_name(name)}` | {shown} | {meaning} |")
    return "\n".join(rows)


def env_name(field: str) -> str:
    if field in ("discord_token", "DISCORD_TOKEN"):
        return "DISCORD_TOKEN"
    return f"LIKENESS_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning pydantic's error into one line per bad setting named as the admin wrote it."""
    try:
        return Settings(**overrides)  # pyright: ignore[reportArgumentType]
    except ValidationError as exc:
        lines = ["Some settings are not valid:"]
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            secret = field in Settings.model_fields and _is_secret(Settings.model_fields[field].annotation)
            shown = "" if secret or "token" in field else f" (got {error.get('input')!r})"
            lines.append(f"  {env_name(field)}: {error['msg']}{shown}")
        raise SettingsError("\n".join(lines)) from None


if __name__ == "__main__":  # `python -m bot.infra.config`: print the README's settings table
    print(settings_table())
