"""Settings: from the environment, validated, token never echoed; the CLI without a token."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.infra.config import MissingTokenError, Settings, SettingsError, load_settings
from bot.infra.logs import REDACTED, SecretFilter
from tests.support.cli import run_likeness


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi-token-value")
    monkeypatch.setenv("LIKENESS_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("LIKENESS_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.token() == "abc.def.ghi-token-value"
    assert settings.db_path == tmp_path / "d" / "likeness.sqlite3"
    assert settings.log_level == "DEBUG"
    assert "abc.def" not in repr(settings)


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    (tmp_path / ".env").write_text("DISCORD_TOKEN=dotenv-fake-1234\nLIKENESS_DEV_GUILD_ID=99\n")
    settings = load_settings()
    assert settings.token() == "dotenv-fake-1234"
    assert settings.dev_guild_id == 99


def test_invalid_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIKENESS_DEFAULT_PROVIDER", "midjourney")
    monkeypatch.setenv("LIKENESS_GUILD_READY_TIMEOUT", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LIKENESS_DEFAULT_PROVIDER: Value error, must be one of comfyui, fal, kling, local, runway" in message
    assert "LIKENESS_GUILD_READY_TIMEOUT" in message


def test_missing_token_explains_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    with pytest.raises(MissingTokenError, match="Reset Token"):
        load_settings().token()


def test_cli_run_without_token_prints_help_not_traceback(tmp_path: Path) -> None:
    result = run_likeness(tmp_path, "run")
    assert result.returncode == 2
    assert "No Discord bot token is set" in result.stderr
    assert "DISCORD_TOKEN=" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_secret_filter_redacts_token_from_logs() -> None:
    import logging

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("sekret-token-123",), None)
    assert SecretFilter(["sekret-token-123"]).filter(record)
    assert record.getMessage() == f"token is {REDACTED}"


def test_a_provider_without_a_key_is_not_offered(tmp_path: Path) -> None:
    from bot.infra.config import Settings
    from bot.providers.building import build_providers, install_id

    assert list(build_providers(Settings(data_dir=tmp_path))) == ["local"]
    keyed = Settings(
        data_dir=tmp_path,
        kling_access_key="ak-123456789",  # pyright: ignore[reportCallIssue]
        kling_secret_key="sk-123456789",  # pyright: ignore[reportCallIssue]
        fal_key="fal-123456789",  # pyright: ignore[reportCallIssue]
        runway_api_key="key_123456789",  # pyright: ignore[reportCallIssue]
    )
    assert sorted(build_providers(keyed)) == ["fal", "kling", "local", "runway"]
    half = Settings(data_dir=tmp_path, kling_access_key="ak-123456789")  # pyright: ignore[reportCallIssue]
    assert "kling" not in build_providers(half)  # the access key alone cannot sign anything
    assert install_id(keyed) == install_id(keyed)  # stable across starts
    assert "sk-123456789" not in repr(keyed)


def test_kling_model_setting_chooses_omni_or_is_refused_clearly(tmp_path: Path) -> None:
    from bot.infra.config import Settings
    from bot.providers.building import build_providers

    keys = {"kling_access_key": "ak-123456789", "kling_secret_key": "sk-123456789"}
    omni = build_providers(Settings(data_dir=tmp_path, kling_model="kling-video-o1", **keys))  # pyright: ignore[reportCallIssue]
    assert omni["kling"].capabilities.default_row.element_syntax.name == "kling_elements"
    with pytest.raises(SettingsError, match=r"LIKENESS_KLING_MODEL: .*kling-v9"):
        build_providers(Settings(data_dir=tmp_path, kling_model="kling-v9", **keys))  # pyright: ignore[reportCallIssue]


def test_the_readme_settings_table_matches_the_settings_model() -> None:
    """Every setting is documented exactly as the model declares it (run `python -m bot.infra.config` to regenerate)."""
    from bot.infra.config import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("-->\n", readme.index("<!-- settings-table:")) + 4
    end = readme.index("\n<!-- settings-table end -->")
    assert readme[start:end] == settings_table(), "README's settings table is stale: run `python -m bot.infra.config`"
    for name in Settings.model_fields:
        assert name.upper() in settings_table()


def test_a_kling_webhook_secret_makes_its_callbacks_signed_and_a_bad_one_is_named(tmp_path: Path) -> None:
    from bot.runtime import signing_secrets

    assert signing_secrets(Settings(data_dir=tmp_path)) == {}
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signed = Settings(data_dir=tmp_path, kling_webhook_secret=secret)  # pyright: ignore[reportCallIssue]
    assert signing_secrets(signed) == {"kling": secret}
    assert secret not in repr(signed)  # a secret setting: never shown
    bad = Settings(data_dir=tmp_path, kling_webhook_secret="whsec_")  # pyright: ignore[reportCallIssue]
    with pytest.raises(SettingsError, match="LIKENESS_KLING_WEBHOOK_SECRET is not a signing secret") as refused:
        signing_secrets(bad)
    assert "whsec_" not in str(refused.value).replace("(whsec_ followed by Base64)", "")
