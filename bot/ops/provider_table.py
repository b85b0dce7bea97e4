"""`likeness providers`: every provider's capability table (bot.providers.base.ModelRow), for an admin choosing
models: what each takes (seconds, modes, characters per shot, frames, storyboards, audio) and what it costs.

It reads the specs' full tables (ProviderSpec.rows), so it needs no key, no settings and no network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.domain import Money, WorkKind
from bot.providers.base import ModelRow
from bot.providers.spec import ProviderSpec


def table(specs: Sequence[ProviderSpec[Any]]) -> dict[str, object]:
    """`--json`: {"providers": [{name, label, models: [row...]}]}."""
    return {
        "providers": [
            {
                "name": spec.name,
                "label": spec.label,
                "takes_keys": spec.takes_keys,
                "models": [row.as_json() for row in spec.rows],
            }
            for spec in specs
        ]
    }


def _price(row: ModelRow) -> str:
    if row.price_per_image is not None:
        return f"${row.price_per_image.usd}/image"
    prices = (*row.price_per_second.values(), *row.audio_price_per_second.values())
    if all(price == Money.ZERO for price in prices):
        return "free"
    parts = []
    for mode, price in row.price_per_second.items():
        audio = row.audio_price_per_second.get(mode)
        text = f"${price.usd}/s" + (f" (${audio.usd}/s with audio)" if audio is not None else "")
        parts.append(f"{mode} {text}" if mode else text)
    return ", ".join(parts)


def _traits(row: ModelRow) -> list[str]:
    traits: list[str] = []
    if row.makes_clips:
        traits.append(row.seconds_text())
    if row.modes:
        traits.append("/".join(row.modes))
    if row.max_subjects > 1:
        traits.append(f"{row.max_subjects} characters")
    traits.append(f"{row.max_images} image{'s' if row.max_images != 1 else ''}")
    if row.end_frame is not None:
        only = f" ({'/'.join(row.end_frame_modes)})" if row.end_frame_modes is not None else ""
        traits.append("end frame" + only)
    if row.multi_shot is not None:
        traits.append(f"up to {row.multi_shot.max_shots} shots")
    if row.audio:
        traits.append("audio")
    if row.negative_prompt:
        traits.append("negative prompt")
    return traits


def lines(specs: Sequence[ProviderSpec[Any]]) -> list[str]:
    """The table as text: one block per provider, one line per model."""
    out: list[str] = []
    for spec in specs:
        out.append(f"{spec.label} ({spec.name}){'' if spec.takes_keys else ', no key needed'}")
        for row in spec.rows:
            kind = "clips" if row.makes_clips else "sheets" if WorkKind.SHEET in row.kinds else "images"
            out.append(f"  {row.model}  [{kind}] {' · '.join(_traits(row))} · {_price(row)}")
            if row.note:
                out.append(f"      {row.note}")
        out.append("")
    return out[:-1]
