"""Every provider this bot knows: adding one is its module under bot/providers/ (exporting a `SPEC`, see
bot.providers.spec) and one entry here. The order is the README's and the doctor's."""

from __future__ import annotations

from typing import Any

from bot.providers import comfyui, fal, kling, local, runway
from bot.providers.spec import ProviderSpec

SPECS: tuple[ProviderSpec[Any], ...] = (local.SPEC, kling.SPEC, fal.SPEC, runway.SPEC, comfyui.SPEC)


def find(name: str) -> ProviderSpec[Any] | None:
    return next((spec for spec in SPECS if spec.name == name), None)


def calling_back(*, possessive: bool = False) -> str:
    """The providers that call back, for a sentence: "Kling and fal.ai" ("Kling's and fal.ai's")."""
    labels = [f"{spec.label}'s" if possessive else spec.label for spec in SPECS if spec.calls_back]
    return ", ".join(labels[:-1]) + f" and {labels[-1]}" if len(labels) > 1 else "".join(labels)


def get(name: str) -> ProviderSpec[Any]:
    spec = find(name)
    if spec is None:
        raise ValueError(f"{name!r} is not a provider")
    return spec
