"""Scaling pictures down within a memory bound: what intake, card import and sheets use.

A picture is kept at most `MAX_SIDE` pixels on its long side: plenty for every provider, and ~16 MB as RGBA
where a 40-megapixel upload is ~160 MB. Shrinking never makes a second full-size copy (Pillow's own reduce and
resize premultiply a whole RGBA image first): the whole-factor part is box-reduced strip by strip, and only
the already small result is resampled with Lanczos.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import platform

from PIL import Image

MAX_SIDE = 2048
# Modes Pillow reduces and resamples as they are; anything else (P, I;16...) is converted first.
SHRINKABLE = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "I"})
_STRIP_BLOCKS = 64  # output rows per strip
# Below this share of the fitted size, a JPEG is not decoded smaller (a 4000x3000 photo decodes at 2000x1500).
_DRAFT_SLACK = 0.9
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 1 << 20


def return_freed_memory() -> bool:
    """Have glibc give freed image buffers (Pillow allocates them in 16 MB blocks) back to the system at once.

    By default glibc raises its mmap threshold to the largest block freed so far (up to 32 MB), after which
    such blocks come from its heaps and stay there after being freed, fragmented between threads: eight
    concurrent 40 MP uploads then left ~300 MB more resident than they ever used at once. With a fixed 1 MB
    threshold every big buffer is mapped and unmapped on its own. Linux with glibc only; True when set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def draft_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """What to ask a JPEG's draft for: just under the fitted size, so a picture a little bigger than needed
    still decodes at half size (it then stays a little under `box`, never above it)."""
    width, height = fit_within(size, box)
    return max(1, int(width * _DRAFT_SLACK)), max(1, int(height * _DRAFT_SLACK))


def fit_within(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """`size` scaled down (never up) to fit `box`, keeping the aspect ratio."""
    width, height = size
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def shrink(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """The image scaled down to fit `box` (the same object when it already fits). Its mode must be SHRINKABLE."""
    target = fit_within(image.size, box)
    if target == image.size:
        return image
    factor = min(image.width // target[0], image.height // target[1])
    if factor >= 2:
        image = _reduce_in_strips(image, factor)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def _reduce_in_strips(image: Image.Image, factor: int) -> Image.Image:
    """`image.reduce(factor)` (a box filter), one strip at a time, so RGBA is premultiplied strip by strip."""
    width, height = image.size
    out = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    out.info = image.info.copy()
    band = factor * _STRIP_BLOCKS
    for top in range(0, height, band):
        strip = image.crop((0, top, width, min(height, top + band)))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def open_thumbnail(data: bytes, box: tuple[int, int]) -> Image.Image:
    """A stored image (one the bot wrote) loaded at most the size of `box`: a sheet slot, a preview. Blocking."""
    with Image.open(io.BytesIO(data)) as opened:
        opened.draft(None, draft_size(opened.size, box))  # JPEG: decode at 1/2, 1/4 or 1/8 straight away
        opened.load()
        image = opened if opened.mode in SHRINKABLE else opened.convert("RGBA")
        small = shrink(image, box)
        return small.copy() if small is opened else small
