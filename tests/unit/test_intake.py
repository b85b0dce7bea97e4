"""Intake of untrusted uploads: every refusal is exact and friendly, every conversion lands on the right pixels."""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image, ImageOps

from bot.domain.errors import UserFacingError
from bot.imaging.intake import (
    NOTE_16_BIT,
    NOTE_CMYK,
    NOTE_EXIF,
    NOTE_FIRST_FRAME,
    NOTE_ICC,
    NOTE_SCALED,
    DecodedImage,
    ImageRefusedError,
    IntakeLimits,
    check_declared,
    decode,
    download,
    kept_bytes,
    to_srgb_8bit,
)
from bot.imaging.scale import MAX_SIDE, shrink
from tests.support import imaging_corpus as corpus
from tests.support.replies import DAMAGED

LIMITS = IntakeLimits()


def refusal(data: bytes, limits: IntakeLimits = LIMITS) -> str:
    with pytest.raises(ImageRefusedError) as caught:
        decode(data, limits)
    return str(caught.value)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return len(actual) == len(expected) and all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def pixel(decoded: DecodedImage, xy: tuple[int, int]) -> tuple[int, ...]:
    value = decoded.image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


# ---------------------------------------------------------------------------------------------------- refusals


def test_refusal_is_a_user_facing_error() -> None:
    assert issubclass(ImageRefusedError, UserFacingError)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    assert refusal(corpus.decompression_bomb()) == (
        "This image declares a canvas of 100,000×100,000 pixels (10,000 megapixels), over the 40 megapixel "
        "limit. Please resize it and upload it again."
    )


def test_a_real_image_over_the_pixel_limit_is_refused_without_pillow_warning() -> None:
    # 48 MP is under Pillow's own threshold (~89 MP): only our check stands between it and a full decode.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = refusal(corpus.moderate_bomb_png())
    assert message.startswith("This image declares a canvas of 8,000×6,000 pixels (48 megapixels)")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_canvas_between_pillow_warning_and_error_thresholds_never_warns() -> None:
    header = struct.pack(">IIBBBBB", 10_000, 9_500, 8, 2, 0, 0, 0)  # 95 MP: Pillow alone would only warn
    data = b"\x89PNG\r\n\x1a\n" + corpus._png_chunk(b"IHDR", header)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "10,000×9,500 pixels" in refusal(data)
    assert caught == []


def test_jpeg_declaring_a_huge_canvas_is_refused_before_decoding() -> None:
    data = bytearray(corpus.photo_jpeg((320, 320)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30_000, 30_000)  # height, width
    assert "30,000×30,000 pixels (900 megapixels)" in refusal(bytes(data))


def test_gif_frame_larger_than_its_screen_is_measured_by_the_frame() -> None:
    data = bytearray(corpus.animated_gif((320, 320)))
    descriptor = data.index(b"\x2c\x00\x00\x00\x00")
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", 9000, 9000)
    assert "9,000×9,000 pixels (81 megapixels)" in refusal(bytes(data))


def test_configured_pixel_limit_is_used() -> None:
    assert "over the 0.1 megapixel limit" in refusal(corpus.photo_jpeg((640, 480)), IntakeLimits(max_pixels=100_000))


def test_truncated_jpeg_fails_the_full_load() -> None:
    data = corpus.truncated_jpeg()
    Image.open(io.BytesIO(data)).verify()  # the trap: verify() accepts it
    assert refusal(data) == DAMAGED


def test_truncated_png_and_webp_are_refused() -> None:
    png = corpus.png_bytes(Image.effect_noise((400, 400), 64))
    assert refusal(png[: len(png) // 2]) == DAMAGED
    assert refusal(corpus.webp()[:40]) == DAMAGED


def test_text_file_renamed_png_is_refused_by_content() -> None:
    assert refusal(corpus.text_renamed_png()) == (
        "This file isn't a PNG, JPEG, WebP, GIF or AVIF image (its contents don't match any of them, whatever its "
        "name says). Please export the picture as PNG or JPEG and upload it again."
    )


def test_heic_gets_its_own_advice() -> None:
    assert refusal(corpus.heic_header()) == (
        "This is a HEIC photo (the iPhone format), which I can't read. Please export it as JPEG or PNG "
        "(on iPhone: Settings > Camera > Formats > Most Compatible) and upload it again."
    )


def test_other_known_formats_are_named() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buffer, "BMP")
    assert refusal(buffer.getvalue()) == (
        "This file is a BMP image, not an image I accept. Please upload a PNG, JPEG, WebP, GIF or AVIF image."
    )
    assert refusal(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>").startswith("This file is an SVG drawing")


def test_small_image_is_refused_with_its_size() -> None:
    assert refusal(corpus.small_png()) == (
        "This image is only 100×100 pixels; references need at least 300 pixels on the short side. "
        "Please upload a larger version."
    )


def test_min_side_is_checked_after_rotation() -> None:
    message = refusal(corpus.exif_rotated_jpeg(6, (640, 200)))
    assert message.startswith("This image is only 200×640 pixels;")


# ---------------------------------------------------------------------------------------------------- scaled down


def scaled_note(original: tuple[int, int], new: tuple[int, int]) -> str:
    return NOTE_SCALED.format(width=original[0], height=original[1], new_width=new[0], new_height=new[1])


def test_a_tiny_png_declaring_a_huge_picture_is_decoded_at_2048_px() -> None:
    data = corpus.raw_png(6000, 6000, 8, 0, (bytes([x % 251 for x in range(0, 6000)]) for _ in range(6000)))
    assert len(data) < 200_000  # 36 megapixels
    decoded = decode(data, LIMITS)
    assert decoded.image.size == (MAX_SIDE, MAX_SIDE) and decoded.image.mode == "RGB"
    assert decoded.original_size == (6000, 6000) and decoded.notes == [scaled_note((6000, 6000), (2048, 2048))]
    kept = Image.open(io.BytesIO(kept_bytes(data, decoded)))
    assert (kept.format, kept.size) == ("PNG", (2048, 2048))  # what is stored is the scaled-down picture


def test_a_big_jpeg_is_decoded_small_straight_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """JPEG's DCT scaling: the full 24 megapixels are never in memory, only a quarter of them."""
    from PIL import JpegImagePlugin

    decoded_at: list[tuple[int, int]] = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def load(self: JpegImagePlugin.JpegImageFile) -> object:
        result = real_load(self)
        decoded_at.append(self.im.size if self.im is not None else self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    data = corpus.photo_jpeg((6000, 4000))
    decoded = decode(data, LIMITS)
    assert decoded_at and decoded_at[0] == (3000, 2000)  # decoded at 1/2, the largest step still >= 2048 px
    assert decoded.image.size == (2048, 1365) and decoded.original_size == (6000, 4000)
    kept = Image.open(io.BytesIO(kept_bytes(data, decoded)))
    assert (kept.format, kept.size) == ("JPEG", (2048, 1365))


def test_scaling_down_keeps_alpha_colour_and_rotation() -> None:
    image = Image.new("RGBA", (5000, 2500), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (1000, 500, 4000, 2000))
    decoded = decode(corpus.png_bytes(image, compress_level=1), LIMITS)
    assert decoded.image.mode == "RGBA" and decoded.image.size == (2048, 1024)
    assert pixel(decoded, (5, 5))[3] == 0 and pixel(decoded, (1024, 512)) == (200, 30, 30, 255)
    rotated = decode(corpus.exif_rotated_jpeg(6, (4200, 2400)), LIMITS)
    assert rotated.image.size == (1170, 2048) and rotated.original_size == (2400, 4200)
    assert NOTE_EXIF in rotated.notes and scaled_note((2400, 4200), (1170, 2048)) in rotated.notes


def test_a_long_thin_picture_is_measured_at_its_real_size() -> None:
    message = refusal(corpus.png_bytes(Image.new("RGB", (9000, 250), (9, 9, 9))))
    assert message.startswith("This image is only 9000×250 pixels;")
    assert decode(corpus.png_bytes(Image.new("RGB", (9000, 300), (9, 9, 9))), LIMITS).image.size == (2048, 68)


def test_big_sixteen_bit_grey_is_scaled_down_too() -> None:
    decoded = decode(corpus.raw_png(4200, 3000, 16, 0, (struct.pack(">H", 40000) * 4200 for _ in range(3000))), LIMITS)
    assert decoded.image.size == (2048, 1463) and decoded.notes == [
        NOTE_16_BIT,
        scaled_note((4200, 3000), (2048, 1463)),
    ]
    assert pixel(decoded, (7, 7)) == (156, 156, 156)


def test_shrink_reduces_strip_by_strip_like_a_whole_reduce() -> None:
    image = Image.effect_noise((4100, 3000), 60).convert("RGB")
    assert shrink(image, (2048, 2048)).size == (2048, 1499)
    strips = shrink(image, (1025, 1025))  # a whole factor of 4: the box reduce alone
    assert strips.size == (1025, 750) and strips.tobytes() == image.reduce(4).tobytes()
    assert shrink(image, (5000, 5000)) is image


# ---------------------------------------------------------------------------------------------------- conversions


def test_plain_jpeg_has_no_notes() -> None:
    decoded = decode(corpus.photo_jpeg(), LIMITS)
    assert (decoded.source_format, decoded.image.mode, decoded.image.size, decoded.notes) == (
        "JPEG",
        "RGB",
        (640, 480),
        [],
    )
    assert close_to(pixel(decoded, (10, 10)), (200, 120, 40), 3)


def test_cmyk_jpeg_without_profile() -> None:
    decoded = decode(corpus.cmyk_jpeg((255, 0, 0, 0)), LIMITS)
    assert decoded.image.mode == "RGB"
    assert decoded.notes == [NOTE_CMYK]
    assert close_to(pixel(decoded, (200, 200)), (0, 255, 255), 4)


def test_cmyk_jpeg_with_profile_uses_the_profile() -> None:
    decoded = decode(corpus.cmyk_jpeg((255, 0, 0, 0), corpus.cmyk_test_profile()), LIMITS)
    assert decoded.notes == [NOTE_CMYK, NOTE_ICC]
    # The profile says this press prints pure cyan as (0, 160, 230), far from the naive (0, 255, 255).
    assert close_to(pixel(decoded, (200, 200)), corpus.CYAN_IN_TEST_PROFILE, 6)


def test_rgb_profile_is_converted_to_srgb() -> None:
    decoded = decode(corpus.rgb_with_icc((255, 0, 0), corpus.swapped_rgb_profile()), LIMITS)
    assert decoded.notes == [NOTE_ICC]
    assert close_to(pixel(decoded, (5, 5)), (0, 0, 255), 3)  # its "red" primary is sRGB blue


def test_srgb_profile_is_left_alone() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    decoded = decode(corpus.rgb_with_icc((10, 200, 30), srgb), LIMITS)
    assert decoded.notes == []
    assert pixel(decoded, (5, 5)) == (10, 200, 30)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    decoded = decode(corpus.grey16_png(40000), LIMITS)
    assert decoded.notes == [NOTE_16_BIT]
    assert decoded.image.mode == "RGB"
    red, green, blue = pixel(decoded, (10, 10))
    assert red == green == blue
    assert abs(red - 40000 / 257) <= 1  # ~155.6, where a naive convert("L") gives 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_every_sixteen_bit_grey_mode_scales(mode: str) -> None:
    notes: list[str] = []
    converted = to_srgb_8bit(Image.new(mode, (4, 4), 40000), notes)
    assert converted.mode == "RGB"
    assert converted.getpixel((0, 0)) == (156, 156, 156)
    assert notes == [NOTE_16_BIT]


def test_sixteen_bit_rgb_keeps_its_colour() -> None:
    decoded = decode(corpus.rgb16_png((40000, 20000, 60000)), LIMITS)
    assert decoded.notes == [NOTE_16_BIT]
    assert close_to(pixel(decoded, (3, 3)), (40000 // 257, 20000 // 257, 60000 // 257), 1)


def test_palette_transparency_becomes_real_alpha() -> None:
    decoded = decode(corpus.palette_png_with_transparency(), LIMITS)
    assert decoded.image.mode == "RGBA"
    assert pixel(decoded, (10, 10))[3] == 0
    assert pixel(decoded, (200, 200)) == (255, 0, 0, 255)


def test_animated_gif_gives_the_first_frame() -> None:
    decoded = decode(corpus.animated_gif(), LIMITS)
    assert decoded.source_format == "GIF"
    assert decoded.notes == [NOTE_FIRST_FRAME]
    assert decoded.image.mode == "RGB"
    assert pixel(decoded, (200, 200)) == (255, 0, 0)


def test_exif_rotation_is_applied() -> None:
    decoded = decode(corpus.exif_rotated_jpeg(6, (640, 400)), LIMITS)
    assert decoded.image.size == (400, 640)
    assert decoded.notes == [NOTE_EXIF]
    assert close_to(pixel(decoded, (400 - 20, 20)), (255, 0, 0), 8)  # the marker moved to the top-right
    assert close_to(pixel(decoded, (20, 20)), (255, 255, 255), 8)
    # The orientation tag is gone, so nothing downstream (rembg, a re-save) rotates it a second time.
    assert ImageOps.exif_transpose(decoded.image).size == (400, 640)


def test_la_image_keeps_its_alpha_as_rgba() -> None:
    decoded = decode(corpus.la_png(), LIMITS)
    assert decoded.image.mode == "RGBA"
    assert pixel(decoded, (50, 50)) == (128, 128, 128, 255)
    assert pixel(decoded, (350, 50))[3] == 0


def test_unused_alpha_is_dropped() -> None:
    decoded = decode(corpus.opaque_rgba_png(), LIMITS)
    assert decoded.image.mode == "RGB"
    assert pixel(decoded, (0, 0)) == (1, 2, 3)


def test_one_bit_and_grey_become_rgb() -> None:
    assert decode(corpus.png_bytes(Image.new("1", (320, 320), 1)), LIMITS).image.getpixel((0, 0)) == (255, 255, 255)
    assert decode(corpus.png_bytes(Image.new("L", (320, 320), 77)), LIMITS).image.getpixel((0, 0)) == (77, 77, 77)


def test_avif_and_webp_decode() -> None:
    avif = decode(corpus.avif(), LIMITS)
    assert (avif.source_format, avif.image.mode, avif.image.size) == ("AVIF", "RGB", (400, 320))
    assert close_to(pixel(avif, (100, 100)), (30, 140, 220), 6)
    webp = decode(corpus.webp(), LIMITS)
    assert (webp.source_format, webp.image.mode) == ("WEBP", "RGB")
    assert pixel(webp, (100, 100)) == (220, 60, 90)


# ---------------------------------------------------------------------------------------------------- declared


def test_declared_size_over_the_cap() -> None:
    with pytest.raises(ImageRefusedError) as caught:
        check_declared("big.png", 25 * 1024 * 1024 + 300_000, "image/png", LIMITS)
    assert str(caught.value) == (
        "This file is 25.3 MB, over the 20 MB limit. Please upload a smaller version (for example, export it as "
        "JPEG or resize it) and try again."
    )


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("sheet.pdf", "application/pdf"), ("notes.txt", None), ("clip.mp4", "video/mp4"), ("ok.png", "text/plain")],
)
def test_declared_type_not_an_image(filename: str, content_type: str | None) -> None:
    with pytest.raises(ImageRefusedError) as caught:
        check_declared(filename, 1000, content_type, LIMITS)
    assert str(caught.value).startswith(f"`{filename}`")
    assert str(caught.value).endswith(
        "isn't an image type I accept. Please upload a PNG, JPEG, WebP, GIF or AVIF image instead."
    )


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("a.PNG", "image/png"), ("b.jpeg", "image/jpeg; charset=binary"), ("c.webp", None), ("d", "image/avif")],
)
def test_declared_image_passes(filename: str, content_type: str | None) -> None:
    check_declared(filename, 1000, content_type, LIMITS)


# ---------------------------------------------------------------------------------------------------- download


class CountingStream(httpx.AsyncByteStream):
    """An endless body that counts how much of it was pulled."""

    def __init__(self, chunk: int = 64 * 1024) -> None:
        self.chunk = chunk
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += self.chunk
            yield b"\x00" * self.chunk


async def test_declared_size_over_the_cap_makes_no_request() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=b"x")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ImageRefusedError, match=r"^This file is 21 MB, over the 20 MB limit"):
            await download("https://cdn.example/a.png", 21 * 1024 * 1024, LIMITS, client)
    assert requests == []


async def test_body_larger_than_declared_is_aborted_early() -> None:
    stream = CountingStream()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ImageRefusedError, match="larger than Discord reported"):
            await download("https://cdn.example/a.png", 100_000, LIMITS, client)
    assert stream.sent <= 100_000 + 2 * stream.chunk


async def test_body_over_the_cap_is_aborted_when_size_is_unknown() -> None:
    stream = CountingStream()
    limits = IntakeLimits(max_bytes=1024 * 1024)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(
            ImageRefusedError, match=r"^This file is over the 1 MB limit\. Please upload a smaller version"
        ):
            await download("https://cdn.example/a.png", 0, limits, client)
    assert stream.sent <= limits.max_bytes + 2 * stream.chunk


async def test_download_returns_the_body() -> None:
    body = corpus.photo_jpeg()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        assert await download("https://cdn.example/a.jpg", len(body), LIMITS, client) == body


@pytest.mark.parametrize("status", [403, 404, 500])
async def test_http_errors_become_refusals(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ImageRefusedError) as caught:
            await download("https://cdn.example/a.png", 1000, LIMITS, client)
    assert (
        str(caught.value)
        == f"I couldn't download the attachment, please upload it again. (the server answered {status})"
    )


async def test_connection_errors_become_refusals() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ImageRefusedError) as caught:
            await download("https://cdn.example/a.png", 1000, LIMITS, client)
    assert str(caught.value) == "I couldn't download the attachment, please upload it again."


async def test_a_slow_server_hits_the_overall_timeout() -> None:
    class Trickle(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                await asyncio.sleep(0.05)
                yield b"x"

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Trickle()))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ImageRefusedError) as caught:
            await download("https://cdn.example/a.png", 1000, IntakeLimits(timeout=0.3), client)
    assert str(caught.value) == "Downloading the attachment took longer than 0.3 seconds. Please upload it again."
