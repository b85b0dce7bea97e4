"""`likeness cleanup IN OUT`: the intake and cleanup an upload gets, on a local file, for admins."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.domain import View
from bot.imaging.cleanup import BackgroundRemover
from bot.imaging.intake import ImageRefusedError, check_declared
from bot.infra.config import Settings
from bot.library.references import clean_image, png_bytes
from bot.runtime import choose_cleanup_model, intake_limits

REFUSED = 2


async def run_cleanup(settings: Settings, source: Path, target: Path, view_name: str) -> int:
    try:
        view = View(view_name)
    except ValueError:
        print(f"Unknown view {view_name!r}: use one of {', '.join(v.value for v in View)}.", file=sys.stderr)
        return REFUSED
    limits = intake_limits(settings)
    remover = BackgroundRemover(choose_cleanup_model(settings), settings.model_dir, max_workers=1)
    try:
        data = await asyncio.to_thread(source.read_bytes)
        check_declared(source.name, len(data), None, limits)
        decoded, result = await clean_image(data, remover, limits)
    except ImageRefusedError as refusal:
        print(f"Refused (a member would see this): {refusal}", file=sys.stderr)
        return REFUSED
    finally:
        remover.close()
    cutout_path = target.with_name(f"{target.stem}-cutout.png")
    white, cutout = await asyncio.to_thread(lambda: (png_bytes(result.white), png_bytes(result.cutout)))
    target.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(target.write_bytes, white)
    await asyncio.to_thread(cutout_path.write_bytes, cutout)

    method = "fast path (flat background keyed out)" if result.method == "flat-key" else f"model {result.model}"
    print(
        f"{source} as the {view.label.lower()} view: {decoded.source_format} {decoded.image.width}x{decoded.image.height}"
    )
    print(f"cleanup: {method}")
    print(f"crop box (left, top, right, bottom): {result.crop_box}")
    for note in decoded.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"wrote {target} (subject on white, {result.white.width}x{result.white.height}) and {cutout_path} (alpha)")
    return 0
