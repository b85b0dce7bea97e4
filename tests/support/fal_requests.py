"""Render requests as the worker sends them to fal.ai, with small JPEG references."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

from PIL import Image

from bot.domain import WorkKind
from bot.providers.base import ReferenceImage, RenderRequest

VIDEO_MODEL = "fal-ai/kling-video/o1/reference-to-video"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (400, 720)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def ref(label: str, role: str, colour: tuple[int, int, int], size: tuple[int, int] = (400, 720)) -> ReferenceImage:
    return ReferenceImage(label, "view" if role == "view" else "element", jpeg(colour, size), "image/jpeg")


FRONT = ref("front", "view", (200, 30, 30))
THREE_QUARTER = ref("three_quarter", "view", (30, 200, 30))
SIDE = ref("side", "view", (30, 30, 200))
FACE = ref("face", "view", (200, 200, 30))
BACK = ref("back", "view", (30, 200, 200))
JACKET = ref("jacket", "element", (120, 60, 20), (500, 500))
SWORD = ref("sword", "element", (90, 90, 90), (360, 800))


def animate(job_id: int = 1, **changes: Any) -> RenderRequest:
    base = RenderRequest(
        job_id=job_id,
        kind=WorkKind.ANIMATE,
        model=VIDEO_MODEL,
        prompt="@Element1 (front, three-quarter and side views) shows Ava: waves. Wearing @Element2 (outfit: jacket).",
        negative_prompt=None,
        duration=5,
        aspect_ratio="16:9",
        camera="static",
        images=(FRONT, THREE_QUARTER, SIDE, JACKET),
    )
    return replace(base, **changes)
