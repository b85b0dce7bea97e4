"""The bad-upload corpus, built in code: every awkward file a member might send, with known pixel values."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------------- raw PNG writing


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: Iterable[bytes]) -> bytes:
    """A PNG written byte by byte, for what Pillow refuses to write (16-bit RGB, lying headers)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    scanlines = b"".join(b"\x00" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines))
        + _png_chunk(b"IEND", b"")
    )


def png_bytes(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- the corpus


def decompression_bomb() -> bytes:
    """A few hundred bytes that declare a 100,000 x 100,000 canvas (10 gigapixels)."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def moderate_bomb_png() -> bytes:
    """A real, valid PNG of 8,000 x 6,000 (48 MP), just over a 40 MP limit; compresses to ~50 KB."""
    row = b"\x00" * 8000
    return raw_png(8000, 6000, 8, 0, (row for _ in range(6000)))


def photo_jpeg(size: tuple[int, int] = (640, 480), colour: tuple[int, int, int] = (200, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A noisy JPEG cut in the middle of its entropy-coded data (it still passes `verify()`)."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def text_renamed_png() -> bytes:
    return b"Hello! This is my character's backstory, saved as character.png by mistake.\n" * 20


def heic_header() -> bytes:
    return struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64


def cmyk_jpeg(cmyk: tuple[int, int, int, int], icc: bytes | None = None, size: tuple[int, int] = (400, 400)) -> bytes:
    buffer = io.BytesIO()
    params: dict[str, object] = {"quality": 95}
    if icc is not None:
        params["icc_profile"] = icc
    Image.new("CMYK", size, cmyk).save(buffer, "JPEG", **params)
    return buffer.getvalue()


def grey16_png(value: int, size: tuple[int, int] = (400, 320)) -> bytes:
    samples = np.full((size[1], size[0]), value, dtype=np.uint16)
    return png_bytes(Image.fromarray(samples))


def rgb16_png(rgb: tuple[int, int, int], size: tuple[int, int] = (400, 320)) -> bytes:
    row = struct.pack(">HHH", *rgb) * size[0]
    return raw_png(size[0], size[1], 16, 2, (row for _ in range(size[1])))


def palette_png_with_transparency(size: tuple[int, int] = (400, 400)) -> bytes:
    """Palette image: index 0 fully transparent, index 1 red; a red square in the middle."""
    image = Image.new("P", size, 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (100, 100, 300, 300))
    return png_bytes(image, transparency=0)


def animated_gif(size: tuple[int, int] = (400, 400)) -> bytes:
    """Three frames: red, green, blue. Frame 0 is red."""
    frames = [Image.new("RGB", size, colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg(orientation: int = 6, size: tuple[int, int] = (640, 400)) -> bytes:
    """A landscape JPEG with a red marker in its top-left corner and an EXIF orientation tag.

    With orientation 6 ("rotate 90 CW to view"), the upright image is portrait and the marker
    ends up in the top-right corner.
    """
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 80, 80))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def small_png(size: tuple[int, int] = (100, 100)) -> bytes:
    return png_bytes(Image.new("RGB", size, (10, 20, 30)))


def la_png(size: tuple[int, int] = (400, 400)) -> bytes:
    """Grey 128 at alpha 255 on the left half, alpha 0 on the right half."""
    image = Image.new("LA", size, (128, 255))
    image.paste((128, 0), (size[0] // 2, 0, size[0], size[1]))
    return png_bytes(image)


def opaque_rgba_png(size: tuple[int, int] = (400, 400)) -> bytes:
    return png_bytes(Image.new("RGBA", size, (1, 2, 3, 255)))


def avif(size: tuple[int, int] = (400, 320), colour: tuple[int, int, int] = (30, 140, 220)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "AVIF", quality=90)
    return buffer.getvalue()


def webp(size: tuple[int, int] = (400, 320), colour: tuple[int, int, int] = (220, 60, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def rgb_with_icc(rgb: tuple[int, int, int], icc: bytes, size: tuple[int, int] = (400, 400)) -> bytes:
    return png_bytes(Image.new("RGB", size, rgb), icc_profile=icc)


# ---------------------------------------------------------------------------------------------------- ICC profiles
# Built by hand (ICC v2), since littlecms can only create sRGB/Lab/XYZ profiles and no CMYK profile ships here.

_D50 = (0.9642, 1.0, 0.8249)
_SRGB_TO_XYZ_D50 = np.array(
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(xyz: Iterable[float]) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + b"".join(_s15(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\x00"
    return b"desc\x00\x00\x00\x00" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\x00" * 78


def _text_tag(text: str) -> bytes:
    return b"text\x00\x00\x00\x00" + text.encode("ascii") + b"\x00"


def _curve_gamma(gamma: float) -> bytes:
    return b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(gamma * 256))


def _icc_profile(device_class: bytes, colour_space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs = [], []
    for signature, blob in tags.items():
        padded = blob + b"\x00" * (-len(blob) % 4)
        entries.append(struct.pack(">4sII", signature, offset, len(blob)))
        blobs.append(padded)
        offset += len(padded)
    body = struct.pack(">I", len(tags)) + b"".join(entries) + b"".join(blobs)
    header = (
        struct.pack(">I", 128 + len(body))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + device_class
        + colour_space
        + pcs
        + b"\x00" * 12  # date
        + b"acsp"
        + b"APPL"
        + b"\x00" * 4  # flags
        + b"\x00" * 8  # manufacturer, model
        + b"\x00" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual
        + b"".join(_s15(v) for v in _D50)
        + b"lcms"
    )
    header += b"\x00" * (128 - len(header))
    return header + body


def _srgb_to_lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb)]
    x, y, z = (_SRGB_TO_XYZ_D50 @ np.array(linear)) / np.array(_D50)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


CYAN_IN_TEST_PROFILE = (0, 160, 230)


def cmyk_test_profile() -> bytes:
    """A CMYK printer profile (2-point grid) that prints pure cyan as sRGB (0, 160, 230), not (0, 255, 255).

    Every other corner follows the naive formula, so the ICC path is told apart from Pillow's plain convert.
    """
    grid: list[int] = []
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = tuple(255 * (1 - ink) * (1 - k) for ink in (c, m, y))
                    if (c, m, y, k) == (1, 0, 0, 0):
                        rgb = CYAN_IN_TEST_PROFILE
                    lab_l, lab_a, lab_b = _srgb_to_lab((rgb[0], rgb[1], rgb[2]))
                    grid += [
                        round(min(max(lab_l, 0), 100) / 100 * 0xFF00),
                        round((min(max(lab_a, -128), 127) + 128) * 256),
                        round((min(max(lab_b, -128), 127) + 128) * 256),
                    ]
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = (
        b"mft2\x00\x00\x00\x00"
        + struct.pack(">BBBB", 4, 3, 2, 0)
        + identity
        + struct.pack(">HH", 2, 2)
        + struct.pack(">8H", *([0, 65535] * 4))
        + struct.pack(f">{len(grid)}H", *grid)
        + struct.pack(">6H", *([0, 65535] * 3))
    )
    return _icc_profile(
        b"prtr",
        b"CMYK",
        b"Lab ",
        {
            b"desc": _desc_tag("Likeness test CMYK"),
            b"cprt": _text_tag("public domain"),
            b"wtpt": _xyz_tag(_D50),
            b"A2B0": a2b0,
        },
    )


def swapped_rgb_profile() -> bytes:
    """An RGB profile whose red and blue primaries are swapped: its (255, 0, 0) is sRGB blue."""
    red, green, blue = (_SRGB_TO_XYZ_D50[:, i] for i in range(3))
    gamma = _curve_gamma(2.2)
    return _icc_profile(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        {
            b"desc": _desc_tag("Likeness swapped primaries"),
            b"cprt": _text_tag("public domain"),
            b"wtpt": _xyz_tag(_D50),
            b"rXYZ": _xyz_tag(blue),
            b"gXYZ": _xyz_tag(green),
            b"bXYZ": _xyz_tag(red),
            b"rTRC": gamma,
            b"gTRC": gamma,
            b"bTRC": gamma,
        },
    )
