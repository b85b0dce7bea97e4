"""Character sheet speed: compose a full sheet (4 views, face, 3 elements) and encode it as PNG.

The inputs are real cut-outs (RGBA, flat-keyed from drawn renders at upload size), as the bot keeps them.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from PIL import Image

from bench.cleanup import percentile, render
from bot.domain import ElementKind, View
from bot.imaging.cleanup import flat_key
from bot.imaging.sheet import compose_sheet, sheet_png

RUNS = 20


def cutout(seed: int) -> Image.Image:
    keyed = flat_key(render((250, 250, 250), seed, antialias=True, jpeg=False))
    assert keyed is not None
    colours, alpha = keyed
    image = Image.fromarray(colours).convert("RGBA")
    image.putalpha(Image.fromarray(alpha))
    return image.crop(image.getbbox())


def main() -> int:
    views: dict[View, Image.Image | None] = {view: cutout(index) for index, view in enumerate(View)}
    elements = [
        ("Red coat", ElementKind.OUTFIT, cutout(10)),
        ("Star sword", ElementKind.PROP, cutout(11)),
        ("Goggles", ElementKind.ACCESSORY, cutout(12)),
    ]
    traits = "Late 20s, tall and lean, short silver hair, green eyes, scar over the left brow, long red coat. " * 3
    compose_ms, encode_ms, total_ms, sizes = [], [], [], []
    sheet_png(compose_sheet("Aurora Vale", traits, views, elements))  # warm fonts and caches
    for _ in range(RUNS):
        start = time.perf_counter()
        sheet = compose_sheet("Aurora Vale", traits, views, elements)
        composed = time.perf_counter()
        data = sheet_png(sheet)
        done = time.perf_counter()
        compose_ms.append((composed - start) * 1000)
        encode_ms.append((done - composed) * 1000)
        total_ms.append((done - start) * 1000)
        sizes.append(len(data))
    result = {
        "runs": RUNS,
        "cpus": os.cpu_count(),
        "size": "1920x1080",
        "input_cutout_px": list(elements[0][2].size),
        "compose_median_ms": round(statistics.median(compose_ms), 1),
        "encode_median_ms": round(statistics.median(encode_ms), 1),
        "total_median_ms": round(statistics.median(total_ms), 1),
        "total_p95_ms": round(percentile(total_ms, 95), 1),
        "png_kb": round(statistics.median(sizes) / 1024, 1),
        "target_total_median_ms": 150,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
