"""Splitting a generated character sheet into its figures, and which view each one is.

The sheet prompt asks for the front view, the side profile and the three-quarter view, left to right, on
flat white; the figures are found as connected shapes on the cleaned alpha and ordered left to right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image
from scipy import ndimage

from bot.domain import View
from bot.imaging.cleanup import flat_key
from bot.imaging.scale import MAX_SIDE, open_thumbnail

SHEET_VIEW_ORDER = (View.FRONT, View.SIDE, View.THREE_QUARTER, View.BACK)
SHEET_PROMPT = (
    "Character sheet of {name}: {traits}. Full body, three views side by side, left to right: front view, "
    "side profile, three-quarter view. Consistent face, hair and outfit in every view. Neutral pose, flat "
    "white background, even studio lighting, no text, no props in the background."
)
MIN_FIGURE_SHARE = 0.01  # shapes smaller than this share of the sheet are specks, not figures
MARGIN = 24


@dataclass(frozen=True)
class Figure:
    view: View
    cutout: Image.Image  # RGBA, cropped with a margin
    box: tuple[int, int, int, int]


def sheet_prompt(name: str, traits: str, style: str | None) -> str:
    prompt = SHEET_PROMPT.format(name=name, traits=traits)
    return f"{prompt} Style: {style}." if style else prompt


def split_sheet(data: bytes) -> list[Figure]:
    """The figures of a sheet image, left to right, each labelled with the view it should be (blocking).

    The sheet is decoded at most MAX_SIDE px on its long side, like an upload: boxes are in those pixels."""
    image = open_thumbnail(data, (MAX_SIDE, MAX_SIDE)).convert("RGBA")
    keyed = flat_key(image)
    if keyed is None:
        return []
    colours, alpha = keyed
    labels, count = cast(tuple[np.ndarray, int], ndimage.label(alpha > 32))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    slices = ndimage.find_objects(labels)
    big = [(index + 1, slices[index]) for index, size in enumerate(sizes) if size >= MIN_FIGURE_SHARE * alpha.size]
    ordered = sorted(big, key=lambda item: item[1][1].start)
    rgba = np.dstack([colours, alpha]).astype(np.uint8)
    height, width = alpha.shape
    figures: list[Figure] = []
    for view, (label, (rows, cols)) in zip(SHEET_VIEW_ORDER, ordered, strict=False):
        top, bottom = max(0, rows.start - MARGIN), min(height, rows.stop + MARGIN)
        left, right = max(0, cols.start - MARGIN), min(width, cols.stop + MARGIN)
        crop = rgba[top:bottom, left:right].copy()
        crop[..., 3][labels[top:bottom, left:right] != label] = 0  # a neighbour's edge is not this figure
        figures.append(Figure(view, Image.fromarray(crop, "RGBA"), (left, top, right, bottom)))
    return figures


def on_white(cutout: Image.Image) -> Image.Image:
    white = Image.new("RGB", cutout.size, (255, 255, 255))
    white.paste(cutout, (0, 0), cutout)
    return white
