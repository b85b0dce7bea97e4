"""Drawn figures for uploads and renders: `figure_png`, a flat-background picture like a good reference upload,
and `figure`, an RGBA cut-out in one of the colours."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

RED, GREEN, BLUE = (210, 50, 50), (50, 170, 60), (50, 60, 210)


def figure_png(colour: tuple[int, int, int] = (40, 90, 200), size: tuple[int, int] = (600, 800)) -> bytes:
    """A flat-background render of a simple figure: what a good reference upload looks like."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.38, h * 0.08, w * 0.62, h * 0.28), fill=(230, 190, 160))  # head
    draw.rectangle((w * 0.33, h * 0.28, w * 0.67, h * 0.65), fill=colour)  # body
    draw.rectangle((w * 0.36, h * 0.65, w * 0.48, h * 0.92), fill=(50, 50, 60))  # legs
    draw.rectangle((w * 0.52, h * 0.65, w * 0.64, h * 0.92), fill=(50, 50, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def figure(colour: tuple[int, int, int], width: int = 240, height: int = 600) -> Image.Image:
    """A simple RGBA character cut-out: head, body and legs on a transparent background, with margins."""
    image = Image.new("RGBA", (width + 60, height + 60), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    centre = 30 + width // 2
    draw.ellipse((centre - width // 4, 30, centre + width // 4, 30 + width // 2), fill=(*colour, 255))
    draw.rectangle((30, 30 + width // 2, 30 + width, 30 + height * 2 // 3), fill=(*colour, 255))
    draw.rectangle((centre - width // 3, 30 + height * 2 // 3, centre - 8, 30 + height), fill=(40, 40, 60, 255))
    draw.rectangle((centre + 8, 30 + height * 2 // 3, centre + width // 3, 30 + height), fill=(40, 40, 60, 255))
    return image
