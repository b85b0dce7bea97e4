"""A provider is a plug-in: its module's `SPEC` plus one entry in bot.providers.catalog, and nothing else.

The "echo" provider below is such a module, defined here. A fresh interpreter (`python -m` this file) adds it to
the catalog before the bot is imported, as the registry line would, then reports what the bot made of it: the
settings read its LIKENESS_ECHO_* variables (and name them in errors and the README table), servers may bring its
key, `build_providers` builds it when its key is set, prompts use its dialect, and the doctor checks it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from bot.domain import Money, WorkKind
from bot.imaging.prep import KLING
from bot.providers.base import (
    Artifact,
    Capabilities,
    Dialect,
    KeyOwner,
    ModelRow,
    PollResult,
    Referable,
    RenderRequest,
    Submission,
    TaskStatus,
)
from bot.providers.spec import BuildContext, KeyField, ProviderSpec

ROOT = Path(__file__).resolve().parents[2]

# --- the plug-in: what bot/providers/echo.py would hold ----------------------------------------------------------


class EchoSettings(BaseModel):
    key: SecretStr | None = Field(default=None, description="Echo API key. Never logged.")
    base_url: str = Field(default="https://echo.example", description="Echo API host.")
    voice: str = Field(default="calm", description="How Echo speaks.")
    concurrency: int = Field(default=1, ge=1, le=10, description="Echo renders at once.")


def _echo_tokens(references: Sequence[Referable]) -> tuple[str, ...]:
    return tuple(f"[[echo:{number}]]" for number in range(1, len(references) + 1))


ECHO_DIALECT = Dialect("echo", _echo_tokens)


class EchoProvider:
    def __init__(self, settings: EchoSettings, key: str, owner: KeyOwner) -> None:
        self.key, self.owner, self.voice = key, owner, settings.voice
        self.capabilities = Capabilities(
            name="echo",
            kinds=frozenset({WorkKind.ANIMATE}),
            rows=(
                ModelRow(
                    "echo-1",
                    frozenset({WorkKind.ANIMATE}),
                    durations=(5,),
                    aspect_ratios=("16:9",),
                    max_images=4,
                    prompt_max_chars=500,
                    element_syntax=ECHO_DIALECT,
                    price_per_second={"": Money.ZERO},
                ),
            ),
            default_model="echo-1",
            image_limits=KLING,
            max_concurrency=settings.concurrency,
            display_name="Echo",
        )

    async def submit(self, request: RenderRequest) -> Submission:
        return Submission(str(request.job_id))

    async def find(self, job_id: int) -> Submission | None:
        return None

    async def poll(self, submission: Submission) -> PollResult:
        return PollResult(TaskStatus.SUCCEEDED, artifacts=(Artifact("echo://clip", "video/mp4"),))

    async def cancel(self, submission: Submission) -> None:
        return None

    async def fetch(self, artifact: Artifact) -> bytes:
        return b"echo"

    def estimate_cost(self, request: RenderRequest) -> Money:
        return Money.ZERO

    async def ping(self) -> float:
        return 0.002

    async def close(self) -> None:
        return None


def _build(context: BuildContext[EchoSettings]) -> EchoProvider:
    return EchoProvider(context.settings, context.keys.get("key") or "", context.owner)


SPEC = ProviderSpec(
    name="echo",
    label="Echo",
    settings=EchoSettings,
    build=_build,
    key_fields=(KeyField("key", "API key", "API key", "from echo.example > Keys"),),
    key_source="echo.example > Keys",
    dialects=(ECHO_DIALECT,),
)


# --- the fresh interpreter ---------------------------------------------------------------------------------------


def report() -> dict[str, Any]:
    """What the bot makes of the catalog with echo in it (run before anything imported the settings)."""
    from bot.providers import catalog

    catalog.SPECS = (*catalog.SPECS, SPEC)  # the one registry line

    from bot.domain import View
    from bot.generation.prompts import choose_references, compile_prompt
    from bot.infra.config import SettingsError, load_settings, settings_table
    from bot.ops.doctor.online import check_providers
    from bot.providers.accounts import KEY_SPECS, clean_fields
    from bot.providers.building import build_providers, provider_factory
    from cogs.settings import PROVIDER_KEY_CHOICES
    from tests.support.prompt_parts import AVA, view

    settings = load_settings()
    providers = build_providers(settings)
    echo = providers["echo"]
    assert isinstance(echo, EchoProvider)
    server_echo = provider_factory(settings)("echo", {"key": "server-key-123"})
    assert isinstance(server_echo, EchoProvider)
    binding = choose_references([view(View.FRONT), view(View.SIDE)], [], max_images=4)
    compiled = compile_prompt(
        character=AVA,
        action="waves",
        camera="static",
        setting=None,
        binding=binding,
        syntax=echo.capabilities.default_row.element_syntax,
        negative_supported=echo.capabilities.default_row.negative_prompt,
        max_chars=echo.capabilities.default_row.prompt_max_chars,
        negative_presets=(),
        extra_negative=None,
        provider_label=echo.capabilities.label,
    )
    doctor = asyncio.run(check_providers(settings, 5.0))
    os.environ["LIKENESS_ECHO_CONCURRENCY"] = "0"
    try:
        load_settings()
        refused = ""
    except SettingsError as error:
        refused = str(error)
    del os.environ["LIKENESS_ECHO_KEY"]
    os.environ["LIKENESS_ECHO_CONCURRENCY"] = "1"
    return {
        "key_setting": settings.secret("echo_key"),
        "echo_voice": echo.voice,
        "key": echo.key,
        "owner": echo.owner.whose,
        "concurrency": echo.capabilities.max_concurrency,
        "default_provider": settings.default_provider,
        "secrets": settings.secrets(),
        "table": settings_table(),
        "refused": refused,
        "providers": sorted(providers),
        "without_key": sorted(build_providers(load_settings())),
        "key_fields": [field.name for field in KEY_SPECS["echo"].fields],
        "cleaned": clean_fields(KEY_SPECS["echo"], {"key": " server-key-123 "}),
        "choices": [choice.value for choice in PROVIDER_KEY_CHOICES],
        "server_key": server_echo.key,
        "server_owner": server_echo.owner.whose,
        "prompt": compiled.prompt,
        "doctor": [(result.name, result.status.value, result.found) for result in doctor],
    }


def test_a_provider_is_one_module_and_one_registry_line(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("LIKENESS_")}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "LIKENESS_DATA_DIR": str(tmp_path / "data"),
        "LIKENESS_ECHO_KEY": "echo-key-123456",
        "LIKENESS_ECHO_VOICE": "loud",
        "LIKENESS_ECHO_CONCURRENCY": "3",
        "LIKENESS_DEFAULT_PROVIDER": "echo",
    }
    child = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_provider_plugins"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)

    # the settings read its variables, keep its key secret, document it and name it in their errors
    assert (seen["key_setting"], seen["echo_voice"], seen["concurrency"]) == ("echo-key-123456", "loud", 3)
    assert seen["default_provider"] == "echo"
    assert "echo-key-123456" in seen["secrets"]
    assert "| `LIKENESS_ECHO_VOICE` | `calm` | How Echo speaks. |" in seen["table"]
    assert "| `LIKENESS_ECHO_KEY` | (none) | Echo API key. Never logged. |" in seen["table"]
    assert "  LIKENESS_ECHO_CONCURRENCY: Input should be greater than or equal to 1 (got '0')" in seen["refused"]
    # built with the bot's key when it is set, not offered without one
    assert seen["providers"] == ["echo", "local"]
    assert (seen["key"], seen["owner"]) == ("echo-key-123456", "the bot's")
    assert seen["without_key"] == ["local"]
    # servers may bring its key, through the same form and the same factory
    assert seen["key_fields"] == ["key"]
    assert seen["cleaned"] == {"key": "server-key-123"}
    assert "echo" in seen["choices"]
    assert (seen["server_key"], seen["server_owner"]) == ("server-key-123", "this server's")
    # prompts name the references in its dialect
    assert seen["prompt"].startswith("[[echo:1]] (front view) and [[echo:2]] (side view) show Ava:")
    # the doctor checks it with its ping, at the host its settings name
    assert ["Echo", "ok", "key accepted by echo.example; first byte in 2 ms"] in seen["doctor"]


if __name__ == "__main__":  # the fresh interpreter of the test above
    print(json.dumps(report()))
