"""Provider preparation: within Kling's limits, the subject never cropped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.imaging.prep import KLING, ImageTooLargeError, ProviderImageLimits, prepare_for_provider


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def within_kling(image: Image.Image, data: bytes) -> bool:
    width, height = image.size
    return (
        min(width, height) >= KLING.min_side
        and len(data) <= KLING.max_bytes
        and KLING.min_aspect <= width / height <= KLING.max_aspect
    )


def test_wide_image_is_padded_on_white_not_cropped() -> None:
    image = Image.new("RGB", (1500, 500), (200, 30, 30))
    ImageDraw.Draw(image).rectangle((0, 0, 10, 499), fill=(0, 0, 255))  # marks the left edge
    data, mime = prepare_for_provider(image, KLING)
    result = opened(data)
    assert mime == "image/jpeg" and result.format == "JPEG"
    assert within_kling(result, data)
    assert result.size == (1500, 600)  # 3:1 padded to exactly 2.5:1
    pixels = np.asarray(result).astype(int)
    assert np.abs(pixels[10, 700] - 255).max() <= 6  # white band on top
    assert np.abs(pixels[300, 700] - (200, 30, 30)).max() <= 10  # the image, whole, in the middle
    assert np.abs(pixels[300, 4] - (0, 0, 255)).max() <= 40  # its left edge still there


def test_tall_image_is_padded_sideways() -> None:
    data, _mime = prepare_for_provider(Image.new("RGB", (400, 1400), (10, 10, 10)), KLING)
    result = opened(data)
    assert result.size == (560, 1400)
    assert within_kling(result, data)


def test_small_image_is_upscaled() -> None:
    data, mime = prepare_for_provider(Image.new("RGB", (200, 260), (40, 90, 160)), KLING)
    result = opened(data)
    assert mime == "image/jpeg"
    assert min(result.size) >= 300
    assert abs(result.width / result.height - 200 / 260) < 0.01
    assert within_kling(result, data)


def test_small_and_wide_is_both_padded_and_upscaled() -> None:
    data, _mime = prepare_for_provider(Image.new("RGB", (400, 100), (40, 90, 160)), KLING)
    result = opened(data)
    assert within_kling(result, data)


def test_huge_noisy_image_ends_under_the_byte_limit() -> None:
    rng = np.random.default_rng(5)
    noise = Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8))  # ~12 MB even at q92
    data, mime = prepare_for_provider(noise, KLING)
    result = opened(data)
    assert mime == "image/jpeg"
    assert len(data) <= 10 * 1024 * 1024
    assert within_kling(result, data)


def test_transparent_cutout_becomes_png_and_keeps_alpha() -> None:
    cutout = Image.new("RGBA", (600, 800), (0, 0, 0, 0))
    ImageDraw.Draw(cutout).ellipse((100, 100, 500, 700), fill=(200, 50, 50, 255))
    data, mime = prepare_for_provider(cutout, KLING)
    result = opened(data)
    assert (mime, result.format, result.mode) == ("image/png", "PNG", "RGBA")
    assert result.getpixel((0, 0)) == (255, 255, 255, 0)  # transparent white: white wherever it is flattened
    assert result.getpixel((300, 400)) == (200, 50, 50, 255)


def test_opaque_rgba_is_sent_as_jpeg() -> None:
    data, mime = prepare_for_provider(Image.new("RGBA", (600, 600), (1, 2, 3, 255)), KLING)
    assert mime == "image/jpeg"
    assert opened(data).mode == "RGB"


def test_noisy_cutout_png_shrinks_under_the_limit() -> None:
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 256, (1700, 1700, 4), dtype=np.uint8)
    pixels[:, :, 3] = np.where(rng.random((1700, 1700)) > 0.5, 255, 0)
    data, mime = prepare_for_provider(Image.fromarray(pixels), KLING)
    result = opened(data)
    assert mime == "image/png"
    assert within_kling(result, data)


def test_impossible_limits_are_refused_clearly() -> None:
    tight = ProviderImageLimits(min_side=300, max_bytes=2_000, min_aspect=0.4, max_aspect=2.5, formats=("PNG",))
    rng = np.random.default_rng(1)
    with pytest.raises(ImageTooLargeError, match="couldn't make this image small enough"):
        prepare_for_provider(Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)), tight)
