"""Safe intake of untrusted uploads: check what Discord declares, download with a cap, decode defensively.

Every refusal is an `ImageRefusedError` whose message tells the member what is wrong and what to do.
"""

from __future__ import annotations

import asyncio
import io
import struct
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import httpx
import numpy as np
from PIL import (
    AvifImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from bot.domain.errors import UserFacingError
from bot.imaging.scale import MAX_SIDE, SHRINKABLE, draft_size, shrink

ACCEPTED = "PNG, JPEG, WebP, GIF or AVIF"
ACCEPTED_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".avif"})
ACCEPTED_CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/pjpeg", "image/jpg", "image/webp", "image/gif", "image/avif"}
)

# Opened through the plugin class itself, so Pillow's own bomb check (which only *warns* below
# 2 x MAX_IMAGE_PIXELS) never runs: we check the declared canvas ourselves and refuse.
_OPENERS: dict[str, type[ImageFile.ImageFile]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
    "AVIF": AvifImagePlugin.AvifImageFile,
}

# Formats we recognise only to name them in the refusal.
_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"dash", b"3gp4", b"3gp5"})

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_SWAPS_SIDES = frozenset(
    {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90}
)

NOTE_FIRST_FRAME = "used the first frame of the animation"
NOTE_CMYK = "converted from CMYK"
NOTE_EXIF = "applied EXIF rotation"
NOTE_ICC = "converted the colour profile to sRGB"
NOTE_16_BIT = "converted 16-bit to 8-bit"
NOTE_BAD_ICC = "ignored a damaged colour profile (assumed sRGB)"
NOTE_SCALED = "scaled down from {width}×{height} to {new_width}×{new_height} pixels (plenty for every provider)"


class ImageRefusedError(UserFacingError):
    """An upload we will not process; the message says why and what the member can do."""


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int = 20 * 1024 * 1024
    min_side: int = 300
    max_pixels: int = 40_000_000
    timeout: float = 30.0
    max_side: int = MAX_SIDE  # decoded images are scaled down to this long side, during decoding where possible


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit sRGB image ("RGB", or "RGBA" only when the alpha is really used)."""

    image: Image.Image
    source_format: str
    notes: list[str] = field(default_factory=list)
    original_size: tuple[int, int] | None = None  # upright, before scaling down; None when not scaled

    @property
    def scaled(self) -> bool:
        return self.original_size is not None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0")


def _too_big(size: int | None, limits: IntakeLimits) -> ImageRefusedError:
    cap = _mb(limits.max_bytes)
    lead = (
        f"This file is {_mb(size)} MB, over the {cap} MB limit." if size else f"This file is over the {cap} MB limit."
    )
    return ImageRefusedError(
        f"{lead} Please upload a smaller version (for example, export it as JPEG or resize it) and try again."
    )


# ---------------------------------------------------------------------------------------------------- before download


def check_declared(filename: str, size: int, content_type: str | None, limits: IntakeLimits) -> None:
    """Refuse an attachment from what Discord declares about it, before downloading a byte."""
    if size > limits.max_bytes:
        raise _too_big(size, limits)
    if size <= 0:
        raise ImageRefusedError(f"`{filename}` is empty. Please upload the image again.")
    extension = PurePosixPath(filename.lower()).suffix
    base_type = (content_type or "").split(";", 1)[0].strip().lower()
    if (extension and extension not in ACCEPTED_EXTENSIONS) or (base_type and base_type not in ACCEPTED_CONTENT_TYPES):
        kind = f" ({base_type})" if base_type and base_type not in ACCEPTED_CONTENT_TYPES else ""
        raise ImageRefusedError(
            f"`{filename}`{kind} isn't an image type I accept. Please upload a {ACCEPTED} image instead."
        )
    if not extension and not base_type:
        raise ImageRefusedError(
            f"I can't tell what kind of file `{filename}` is. Please upload a {ACCEPTED} image "
            "with its usual file extension (for example `.png` or `.jpg`)."
        )


async def download(url: str, declared_size: int, limits: IntakeLimits, client: httpx.AsyncClient) -> bytes:
    """Stream an attachment into memory, aborting as soon as it exceeds the cap or what was declared."""
    if declared_size > limits.max_bytes:
        raise _too_big(declared_size, limits)
    again = "I couldn't download the attachment, please upload it again."
    # Discord's declared size is exact; a body larger than it is not the file the member sent.
    cap = min(limits.max_bytes, declared_size) if declared_size > 0 else limits.max_bytes
    try:
        async with asyncio.timeout(limits.timeout):
            async with client.stream("GET", url, timeout=limits.timeout) as response:
                if not response.is_success:
                    raise ImageRefusedError(f"{again} (the server answered {response.status_code})")
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > cap:
                    raise _body_too_big(int(announced), declared_size, limits)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise _body_too_big(len(body), declared_size, limits)
                return bytes(body)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ImageRefusedError(
            f"Downloading the attachment took longer than {limits.timeout:g} seconds. Please upload it again."
        ) from exc
    except httpx.HTTPError as exc:
        raise ImageRefusedError(again) from exc


def _body_too_big(received: int, declared_size: int, limits: IntakeLimits) -> ImageRefusedError:
    if received > limits.max_bytes:
        return _too_big(None, limits)
    return ImageRefusedError(
        f"The attachment turned out larger than Discord reported ({declared_size} bytes), so I stopped "
        "downloading it. I couldn't download the attachment, please upload it again."
    )


# ---------------------------------------------------------------------------------------------------- decode


def sniff_format(head: bytes) -> str | None:
    """The accepted format the bytes really are ("PNG", "JPEG", "GIF", "WEBP", "AVIF"), whatever the name says."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if _ftyp_brands(head) & _AVIF_BRANDS:
        return "AVIF"
    return None


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF `ftyp` box (AVIF, HEIC, MP4), or an empty set."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    box_size = min(struct.unpack(">I", head[:4])[0], len(head))
    brands = {head[8:12]}
    brands.update(head[offset : offset + 4] for offset in range(16, box_size - 3, 4))
    return brands


def _what_it_is(head: bytes) -> str | None:
    brands = _ftyp_brands(head)
    if brands & _HEIF_BRANDS:
        return "a HEIC photo"
    if brands & _VIDEO_BRANDS:
        return "a video"
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return name
    text = head[:256].lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head[:4096].lower():
        return "an SVG drawing"
    return None


def _refuse_unknown(head: bytes) -> ImageRefusedError:
    what = _what_it_is(head)
    if what == "a HEIC photo":
        return ImageRefusedError(
            "This is a HEIC photo (the iPhone format), which I can't read. Please export it as JPEG or PNG "
            "(on iPhone: Settings > Camera > Formats > Most Compatible) and upload it again."
        )
    if what is not None:
        return ImageRefusedError(f"This file is {what}, not an image I accept. Please upload a {ACCEPTED} image.")
    return ImageRefusedError(
        f"This file isn't a {ACCEPTED} image (its contents don't match any of them, whatever its name says). "
        "Please export the picture as PNG or JPEG and upload it again."
    )


def _png_canvas(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _gif_canvas(data: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to the first frame's extent (Pillow grows it the same way)."""
    if len(data) < 13:
        return None
    width, height, flags = struct.unpack("<HHB", data[6:11])
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while position < len(data):
        block = data[position]
        if block == 0x2C and position + 9 < len(data):  # image descriptor
            left, top, frame_width, frame_height = struct.unpack("<HHHH", data[position + 1 : position + 9])
            return max(width, left + frame_width), max(height, top + frame_height)
        if block != 0x21 or position + 2 >= len(data):  # not an extension: stop looking
            break
        position += 2
        while position < len(data) and data[position]:
            position += data[position] + 1
        position += 1
    return width, height


_HEADER_CANVAS = {"PNG": _png_canvas, "WEBP": _webp_canvas, "GIF": _gif_canvas}


def _check_canvas(size: tuple[int, int], limits: IntakeLimits) -> None:
    # Never above Pillow's own threshold, so its DecompressionBombWarning can never fire after our check.
    ceiling = min(limits.max_pixels, Image.MAX_IMAGE_PIXELS or limits.max_pixels)
    width, height = size
    if width * height > ceiling:
        raise ImageRefusedError(
            f"This image declares a canvas of {width:,}×{height:,} pixels ({width * height / 1e6:,.0f} megapixels), "
            f"over the {ceiling / 1e6:g} megapixel limit. Please resize it and upload it again."
        )


def _damaged() -> ImageRefusedError:
    return ImageRefusedError(
        "This image is damaged or incomplete (it may have been cut off while saving or uploading), so I can't "
        "read it. Please save or export it again and upload the new file."
    )


def decode(data: bytes, limits: IntakeLimits) -> DecodedImage:
    """Decode untrusted bytes into an upright 8-bit sRGB image at most `limits.max_side` px on its long side (a
    JPEG is decoded small by its DCT; anything else is scaled down before any conversion), or refuse. The size
    limits (short side, canvas) apply to the picture as uploaded. Blocking: run it in a thread."""
    source_format = sniff_format(data[:64])
    if source_format is None:
        raise _refuse_unknown(data[:4096])
    header_canvas = _HEADER_CANVAS.get(source_format)
    if header_canvas is not None and (canvas := header_canvas(data)) is not None:
        _check_canvas(canvas, limits)

    notes: list[str] = []
    box = (limits.max_side, limits.max_side)
    try:
        image = _OPENERS[source_format](io.BytesIO(data))
        _check_canvas(image.size, limits)
        full_size = image.size
        if getattr(image, "is_animated", False):
            notes.append(NOTE_FIRST_FRAME)
            image.seek(0)
        if source_format == "JPEG":
            image.draft(None, draft_size(image.size, box))  # DCT scaling: decoded at 1/2, 1/4 or 1/8 already
        image.load()
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        sixteen_bit_png = _is_16_bit_png(source_format, data)
        if image.mode in SHRINKABLE:  # scaled down before any conversion, which would copy it at full size
            image = shrink(image, box)
        upright = shrink(to_srgb_8bit(image, notes, sixteen_bit_png=sixteen_bit_png), box)
    except ImageRefusedError:
        raise
    except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError, struct.error) as exc:
        raise _damaged() from exc
    except Image.DecompressionBombError as exc:
        raise ImageRefusedError(
            f"This image declares an enormous canvas, over the {limits.max_pixels / 1e6:g} megapixel limit. "
            "Please resize it and upload it again."
        ) from exc

    fix = _ORIENTATION_FIX.get(orientation) if isinstance(orientation, int) else None
    if fix is not None:
        upright = upright.transpose(fix)
        notes.append(NOTE_EXIF)
        if fix in _SWAPS_SIDES:
            full_size = full_size[1], full_size[0]

    # The pixels are now upright sRGB: metadata saying otherwise would get them rotated or converted twice.
    for key in ("exif", "icc_profile", "transparency"):
        upright.info.pop(key, None)
    width, height = full_size
    if min(width, height) < limits.min_side:
        raise ImageRefusedError(
            f"This image is only {width}×{height} pixels; references need at least {limits.min_side} pixels on "
            "the short side. Please upload a larger version."
        )
    if upright.size == full_size:
        return DecodedImage(image=upright, source_format=source_format, notes=notes)
    new_width, new_height = upright.size
    notes.append(NOTE_SCALED.format(width=width, height=height, new_width=new_width, new_height=new_height))
    return DecodedImage(image=upright, source_format=source_format, notes=notes, original_size=full_size)


def kept_bytes(data: bytes, decoded: DecodedImage) -> bytes:
    """What to store of an accepted file: the file as it is, or the scaled-down picture when it was bigger than
    the bot needs (a JPEG stays a JPEG; anything else becomes a PNG). Blocking."""
    if not decoded.scaled:
        return data
    buffer = io.BytesIO()
    if decoded.source_format == "JPEG" and decoded.image.mode == "RGB":
        decoded.image.save(buffer, format="JPEG", quality=92)
    else:
        decoded.image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _is_16_bit_png(source_format: str, data: bytes) -> bool:
    return source_format == "PNG" and len(data) > 24 and data[24] == 16


# ---------------------------------------------------------------------------------------------------- colour


def to_srgb_8bit(image: Image.Image, notes: list[str], *, sixteen_bit_png: bool = False) -> Image.Image:
    """Bring any decoded mode to 8-bit sRGB "RGB"/"RGBA", appending what was done to `notes`."""
    icc = image.info.get("icc_profile")
    profile = _parse_profile(icc, notes) if icc else None
    mode = image.mode

    if mode == "CMYK":
        notes.append(NOTE_CMYK)
        if profile is not None and _colour_space(profile) == "CMYK":
            notes.append(NOTE_ICC)
            return _drop_opaque_alpha(_icc_convert(image, profile, "RGB"))
        return image.convert("RGB")

    if mode in _SIXTEEN_BIT_GREY:
        image = _grey_16_to_8(image)
        notes.append(NOTE_16_BIT)
    elif sixteen_bit_png:
        notes.append(NOTE_16_BIT)  # Pillow already kept the most significant byte of each 16-bit sample.

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")

    if profile is not None and not _is_srgb(profile):
        converted = _convert_with_profile(image, profile)
        if converted is not None:
            image = converted
            notes.append(NOTE_ICC)
    if image.mode == "L":
        image = image.convert("RGB")
    return _drop_opaque_alpha(image)


def _grey_16_to_8(image: Image.Image) -> Image.Image:
    """Scale 0..65535 to 0..255 (Pillow's own convert("L") clips everything above 255 to white).

    Strip by strip, in integers (rounding to nearest: x / 257 is never exactly half way), so no wide copy of
    the whole picture is ever made."""
    out = Image.new("L", image.size)
    for top in range(0, image.height, 256):
        strip = np.asarray(image.crop((0, top, image.width, min(image.height, top + 256)))).astype(np.int64)
        out.paste(Image.fromarray(np.clip((strip + 128) // 257, 0, 255).astype(np.uint8)), (0, top))
    return out


def _parse_profile(icc: bytes, notes: list[str]) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError, TypeError, ValueError):
        notes.append(NOTE_BAD_ICC)
        return None


def _colour_space(profile: ImageCms.ImageCmsProfile) -> str:
    core: Any = profile.profile  # Pillow's stubs type this loosely; it is a littlecms profile object
    return str(core.xcolor_space).strip()


def _is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    core: Any = profile.profile
    return str(core.profile_description or "").lower().startswith("srgb")


def _convert_with_profile(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image | None:
    space = _colour_space(profile)
    if space == "RGB" and image.mode in ("RGB", "RGBA"):
        return _icc_convert(image, profile, image.mode)
    if space == "GRAY" and image.mode == "L":
        return _icc_convert(image, profile, "RGB")
    return None  # a profile that does not describe these pixels: ignore it


def _icc_convert(image: Image.Image, profile: ImageCms.ImageCmsProfile, out_mode: str) -> Image.Image:
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    source = image.convert("RGB") if alpha is not None else image
    # A fresh sRGB profile per call: littlecms profile handles are not safe to share between threads.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    converted = ImageCms.profileToProfile(source, profile, srgb, outputMode=out_mode if alpha is None else "RGB")
    if converted is None:  # only when inPlace=True
        raise ValueError("colour conversion returned nothing")
    if alpha is not None:
        converted.putalpha(alpha)
    converted.info.pop("icc_profile", None)
    return converted


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    if image.mode == "RGBA":
        low, _high = image.getchannel("A").getextrema()
        if low == 255:
            return image.convert("RGB")
    return image
