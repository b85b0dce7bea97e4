"""Background cleanup speed: the flat-key fast path, u2netp through our shared session, rembg the naive way,
and how late the event loop runs while four cleanups share the machine. Last line: one JSON object.

Images, all at 1024 px on the long side: photos bundled with scikit-image (no download) and flat-background
renders drawn here (clean, antialiased and JPEG-compressed). Models from LIKENESS_TEST_MODELS_DIR (default
.venv/models); run `python -m bot.imaging.model_files install u2netp --dir .venv/models` first.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data as skdata

from bot.imaging.cleanup import BackgroundRemover, CleanupResult
from bot.imaging.model_files import model_file

SIDE = 1024
MODEL = "u2netp"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "retina", "immunohistochemistry", "moon")
BACKGROUNDS = ((255, 255, 255), (244, 244, 244), (30, 200, 60), (200, 220, 255), (40, 40, 48), (250, 236, 210))
HEARTBEAT = 0.02


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def at_side(image: Image.Image) -> Image.Image:
    scale = SIDE / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def photos() -> list[Image.Image]:
    arrays = [getattr(skdata, name)() for name in PHOTOS] + [skdata.stereo_motorcycle()[0]]
    return [at_side(Image.fromarray(array).convert("RGB")) for array in arrays]


def render(background: tuple[int, int, int], seed: int, antialias: bool, jpeg: bool) -> Image.Image:
    """A character-like figure of flat shapes on a flat background."""
    rng = np.random.default_rng(seed)
    scale = 2 if antialias else 1
    size = (768 * scale, SIDE * scale)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)

    def colour() -> tuple[int, int, int]:
        r, g, b = (int(v) for v in rng.integers(20, 220, 3))
        return r, g, b

    s = scale
    draw.ellipse((300 * s, 80 * s, 470 * s, 260 * s), fill=colour())  # head
    draw.polygon([(250 * s, 260 * s), (520 * s, 260 * s), (560 * s, 640 * s), (210 * s, 640 * s)], fill=colour())
    draw.rectangle((270 * s, 640 * s, 370 * s, 960 * s), fill=colour())
    draw.rectangle((400 * s, 640 * s, 500 * s, 960 * s), fill=colour())
    draw.line([(250 * s, 300 * s), (120 * s, 600 * s)], fill=colour(), width=40 * s)
    draw.line([(520 * s, 300 * s), (660 * s, 580 * s)], fill=colour(), width=40 * s)
    if antialias:
        image = image.resize((768, SIDE), Image.Resampling.BOX)
    if jpeg:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def renders() -> list[Image.Image]:
    images = []
    for index, background in enumerate(BACKGROUNDS):
        images.append(render(background, index, antialias=True, jpeg=False))
        images.append(render(background, index + 100, antialias=index % 2 == 0, jpeg=True))
    return images


def timed(remover: BackgroundRemover, image: Image.Image) -> tuple[float, CleanupResult]:
    start = time.perf_counter()
    result = remover.cleanup_sync(image)
    return (time.perf_counter() - start) * 1000, result


def figures(ms: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(ms), 1), "p95": round(percentile(ms, 95), 1)}


async def loop_lag(remover: BackgroundRemover, images: list[Image.Image], rounds: int = 3) -> list[float]:
    """How late a 20 ms heartbeat wakes while four cleanups run at once, round after round."""
    lags: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(HEARTBEAT)
            lags.append((time.perf_counter() - start - HEARTBEAT) * 1000)

    beat = asyncio.create_task(heartbeat())
    for round_index in range(rounds):
        batch = [images[(round_index * 4 + i) % len(images)] for i in range(4)]
        await asyncio.gather(*(remover.cleanup(image) for image in batch))
    done.set()
    await beat
    return lags


def naive_rembg(images: list[Image.Image], models_dir: Path) -> list[float]:
    """rembg as most code calls it: remove() with a brand-new session each time."""
    os.environ["U2NET_HOME"] = str(models_dir)  # this process only: how rembg finds the model by itself
    from rembg import new_session, remove

    times = []
    for image in images:
        start = time.perf_counter()
        remove(image, session=new_session(MODEL))
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    models_dir = Path(
        os.environ.get("LIKENESS_TEST_MODELS_DIR", Path(__file__).resolve().parent.parent / ".venv" / "models")
    )
    if not model_file(MODEL, models_dir).is_file():
        print(
            f"{MODEL} is missing under {models_dir}: run `python -m bot.imaging.model_files install {MODEL} --dir {models_dir}`."
        )
        return 1
    photo_set, render_set = photos(), renders()
    remover = BackgroundRemover(MODEL, models_dir, max_workers=2)

    fast_ms = []
    for image in render_set:
        elapsed, result = timed(remover, image)
        assert result.method == "flat-key", "a render missed the fast path"
        fast_ms.append(elapsed)

    load_ms, _ = timed(remover, photo_set[0])  # first call: loads the shared session
    model_ms, model_photos = [], []
    for image in photo_set:
        elapsed, result = timed(remover, image)
        if result.method == "model":
            model_ms.append(elapsed)
            model_photos.append(image)

    lags = asyncio.run(loop_lag(remover, model_photos))
    remover.close()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    naive_ms = naive_rembg(model_photos, models_dir)
    naive_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fast, model, naive = figures(fast_ms), figures(model_ms), figures(naive_ms)
    result = {
        "images": len(render_set) + len(photo_set),
        "side_px": SIDE,
        "cpus": os.cpu_count(),
        "fast_path_images": len(fast_ms),
        "fast_path_median_ms": fast["median"],
        "fast_path_p95_ms": fast["p95"],
        "model": MODEL,
        "model_images": len(model_ms),
        "model_first_call_ms": round(load_ms, 1),
        "model_median_ms": model["median"],
        "model_p95_ms": model["p95"],
        "naive_rembg_median_ms": naive["median"],
        "naive_rembg_p95_ms": naive["p95"],
        "naive_over_ours": round(naive["median"] / model["median"], 2),
        "loop_lag_p99_ms": round(percentile(lags, 99), 1),
        "loop_lag_max_ms": round(max(lags), 1),
        "heartbeats": len(lags),
        "concurrent_cleanups": 4,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_rss_after_naive_mb": round(naive_peak_rss_mb, 1),
        "targets": {"fast_path_median_ms": 60, "model_median_ms": 400, "loop_lag_p99_ms": 50},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
