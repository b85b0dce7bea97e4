"""Preparing an image for a provider's input limits: aspect, size, format and bytes. Blocking: run in a thread."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from bot.domain.errors import UserFacingError


@dataclass(frozen=True)
class ProviderImageLimits:
    min_side: int
    max_bytes: int
    min_aspect: float  # width / height
    max_aspect: float
    formats: tuple[str, ...]  # Pillow format names, preferred first


KLING = ProviderImageLimits(
    min_side=300, max_bytes=10 * 1024 * 1024, min_aspect=1 / 2.5, max_aspect=2.5, formats=("JPEG", "PNG")
)

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_JPEG_QUALITIES = (92, 85, 75, 65)
_SHRINK_ATTEMPTS = 8


class ImageTooLargeError(UserFacingError):
    """No encoding of the image fits the provider's byte limit without going under its minimum size."""


def _pad_to_aspect(image: Image.Image, limits: ProviderImageLimits) -> Image.Image:
    """Add white (transparent white for cut-outs) around the image so width/height is within range."""
    width, height = image.size
    if width / height > limits.max_aspect:
        target = (width, math.ceil(width / limits.max_aspect))
    elif width / height < limits.min_aspect:
        target = (math.ceil(height * limits.min_aspect), height)
    else:
        return image
    fill = (255, 255, 255, 0) if image.mode == "RGBA" else (255, 255, 255)
    padded = Image.new(image.mode, target, fill)
    padded.paste(image, ((target[0] - width) // 2, (target[1] - height) // 2))
    return padded


def _upscale_to_min_side(image: Image.Image, min_side: int) -> Image.Image:
    short = min(image.size)
    if short >= min_side:
        return image
    scale = min_side / short
    size = (max(min_side, math.ceil(image.width * scale)), max(min_side, math.ceil(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _is_opaque(image: Image.Image) -> bool:
    if image.mode != "RGBA":
        return True
    low, _high = image.getchannel("A").getextrema()
    return low == 255


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", quality=quality)
    else:
        image.save(buffer, fmt, compress_level=6)
    return buffer.getvalue()


def _choose_format(opaque: bool, limits: ProviderImageLimits) -> str:
    if opaque and "JPEG" in limits.formats:
        return "JPEG"
    if not opaque and "PNG" in limits.formats:
        return "PNG"
    return limits.formats[0]


def prepare_for_provider(image: Image.Image, limits: ProviderImageLimits) -> tuple[bytes, str]:
    """Bytes and MIME type within the provider's limits; the subject is never cropped (only padded)."""
    prepared = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if "A" in image.mode else "RGB")
    opaque = _is_opaque(prepared)
    fmt = _choose_format(opaque, limits)
    if prepared.mode == "RGBA":
        flat = Image.new("RGB", prepared.size, (255, 255, 255))
        flat.paste(prepared, (0, 0), prepared)
        if fmt != "JPEG" and not opaque:
            # Keep the alpha, but over white: a provider that ignores alpha still sees the subject on white.
            flat.putalpha(prepared.getchannel("A"))
        prepared = flat
    prepared = _upscale_to_min_side(_pad_to_aspect(prepared, limits), limits.min_side)
    prepared = _pad_to_aspect(prepared, limits)  # rounding while upscaling may nudge the ratio

    qualities = _JPEG_QUALITIES if fmt in ("JPEG", "WEBP") else (0,)
    for _attempt in range(_SHRINK_ATTEMPTS):
        size = 0
        for quality in qualities:
            data = _encode(prepared, fmt, quality)
            size = len(data)
            if size <= limits.max_bytes:
                return data, _MIME[fmt]
        # Too big at the lowest quality: shrink by the byte ratio (bytes grow with area), a little extra.
        scale = min(0.9, math.sqrt(limits.max_bytes / size) * 0.95)
        if min(prepared.size) * scale < limits.min_side:
            scale = limits.min_side / min(prepared.size)
            if scale >= 1.0:
                break
        new_size = (max(1, round(prepared.width * scale)), max(1, round(prepared.height * scale)))
        prepared = _pad_to_aspect(prepared.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=2.0), limits)
    raise ImageTooLargeError(
        f"I couldn't make this image small enough for the provider ({limits.max_bytes / 1048576:g} MB at "
        f"{limits.min_side} px or more). Please upload a simpler or smaller picture."
    )
