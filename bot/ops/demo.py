"""`likeness demo`: the whole pipeline offline, no Discord and no token: a sample character is drawn,
cleaned, put on a sheet and animated by the local provider. Everything lands in the output folder."""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from bot.domain import Actor, Job, JobState, StoredImage, View
from bot.generation.orders import Shot
from bot.governance.limits import Place
from bot.imaging.cleanup import preview
from bot.infra.config import Settings
from bot.library.references import clean_image, png_bytes
from bot.runtime import Offline, Services, intake_limits

DEMO_GUILD = 1
DEMO_USER = 1
_SKIN, _HAIR, _JACKET, _LEGS = (232, 190, 160), (200, 200, 210), (60, 120, 80), (50, 50, 64)


def sample_view(view: View, size: tuple[int, int] = (720, 960)) -> bytes:
    """A simple character drawn on a flat backdrop, seen from `view`: what a good upload looks like."""
    image = Image.new("RGB", size, (236, 240, 244))
    draw = ImageDraw.Draw(image)
    w, h = size
    squash = {View.FRONT: 1.0, View.THREE_QUARTER: 0.8, View.SIDE: 0.55, View.BACK: 1.0, View.FACE: 1.0}[view]
    cx = w / 2

    def box(left: float, top: float, right: float, bottom: float) -> tuple[float, float, float, float]:
        return (cx + (left - 0.5) * w * squash, top * h, cx + (right - 0.5) * w * squash, bottom * h)

    if view is View.FACE:
        draw.ellipse((w * 0.25, h * 0.2, w * 0.75, h * 0.8), fill=_SKIN)
        draw.pieslice((w * 0.22, h * 0.12, w * 0.78, h * 0.6), 180, 360, fill=_HAIR)
        for ex in (0.4, 0.6):
            draw.ellipse((w * ex - 14, h * 0.47, w * ex + 14, h * 0.52), fill=(40, 60, 50))
    else:
        draw.ellipse(box(0.4, 0.06, 0.6, 0.24), fill=_SKIN if view is not View.BACK else _HAIR)
        draw.pieslice(box(0.39, 0.04, 0.61, 0.2), 180, 360, fill=_HAIR)
        draw.rounded_rectangle(box(0.3, 0.24, 0.7, 0.6), radius=30, fill=_JACKET)
        draw.rectangle(box(0.34, 0.6, 0.48, 0.95), fill=_LEGS)
        draw.rectangle(box(0.52, 0.6, 0.66, 0.95), fill=_LEGS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def run_demo(settings: Settings, out_dir: Path) -> list[Path]:
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="likeness-demo-") as scratch:
        demo_settings = settings.model_copy(
            update={
                "data_dir": Path(scratch),
                "database_path": None,
                "local_delay": 0.0,
                "default_provider": "local",
                "callback_url": None,  # nothing listens: no provider calls back, nothing is scraped
                "metrics_port": None,
            }
        )
        front = Offline()
        async with Services.open(demo_settings, front) as services:
            actor = Actor(guild_id=DEMO_GUILD, user_id=DEMO_USER, is_manager=True)
            character = await services.library.create(
                actor, "Mira", "early 20s, slim build, round face, short silver hair, green bomber jacket, dark jeans"
            )
            limits = intake_limits(demo_settings)
            for view in (View.FRONT, View.THREE_QUARTER, View.SIDE, View.BACK, View.FACE):
                data = sample_view(view)
                decoded, result = await clean_image(data, services.remover, limits)
                white, cutout, before_after = await asyncio.to_thread(
                    lambda d=decoded, r=result: (
                        png_bytes(r.white),
                        png_bytes(r.cutout),
                        png_bytes(preview(d.image, r)),
                    )
                )
                stored = StoredImage(
                    original=await services.storage.blobs.put(data),
                    cleaned=await services.storage.blobs.put(white),
                    cutout=await services.storage.blobs.put(cutout),
                )
                await services.storage.references.set_view(DEMO_GUILD, character.id, view, stored, DEMO_USER)
                written.append(
                    await asyncio.to_thread(_write, out_dir / f"{view.value}-before-after.png", before_after)
                )
            character = await services.library.get(actor, "Mira")
            sheet = await services.sheets.sheet(actor, character)
            written.append(await asyncio.to_thread(_write, out_dir / "mira-sheet.png", sheet.png))

            await services.worker.start()
            job = await services.animate.queue(
                actor, Place(channel_id=0), character, Shot(action="turns to the camera and waves", camera="orbit")
            )
            assert isinstance(job, Job)  # the local renderer is free: nothing to confirm
            # the job's state lives in the database: poll it
            while (current := await services.storage.jobs.get(job.id)) is not None and not current.state.finished:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            await services.worker.stop()
            if current is None or current.state is not JobState.DONE:
                raise RuntimeError(f"the demo animation did not finish: {current.error if current else 'lost'}")
            written.append(await asyncio.to_thread(_write, out_dir / "mira-shot.mp4", front.delivery.posted[job.id]))
    return written


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
