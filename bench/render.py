"""Local renderer speed: 720p clips of a character from three reference views (real cut-outs), every camera.

Median seconds per 5 s clip for each camera move, median seconds for 5 s and 10 s clips with the slowest
move (push_in, which resamples every frame), output sizes, and a fit_to_size re-encode for scale.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from PIL import Image

from bench.sheet import cutout
from bot.imaging import video

RUNS = 5
CAPTION = "Aurora walks through the neon market at night, looking over her shoulder at the drones above"


def timed_render(views: list[Image.Image], camera: str, duration: float) -> tuple[float, bytes]:
    start = time.perf_counter()
    data = video.render_camera_move(views, duration=duration, camera=camera, caption=CAPTION, size=(1280, 720))
    return time.perf_counter() - start, data


def median_render(views: list[Image.Image], camera: str, duration: float, runs: int) -> tuple[float, int]:
    seconds, size = [], 0
    for _ in range(runs):
        elapsed, data = timed_render(views, camera, duration)
        seconds.append(elapsed)
        size = len(data)
    return statistics.median(seconds), size


def main() -> int:
    views = [cutout(seed) for seed in range(3)]
    timed_render(views, "orbit", 1.0)  # warm fonts, codecs and caches

    per_camera = {}
    for camera in video.CAMERAS:
        seconds, size = median_render(views, camera, 5.0, RUNS)
        per_camera[camera] = {"median_s": round(seconds, 3), "kb": round(size / 1024, 1)}
    five_s, five_size = median_render(views, "push_in", 5.0, RUNS)
    ten_s, ten_size = median_render(views, "push_in", 10.0, RUNS)

    _elapsed, clip = timed_render(views, "push_in", 5.0)
    start = time.perf_counter()
    fitted = video.fit_to_size(clip, len(clip) // 2)
    fit_s = time.perf_counter() - start

    result = {
        "runs": RUNS,
        "cpus": os.cpu_count(),
        "size": "1280x720",
        "fps": 24,
        "views": len(views),
        "render_5s_median_s": round(five_s, 3),
        "render_10s_median_s": round(ten_s, 3),
        "render_5s_kb": round(five_size / 1024, 1),
        "render_10s_kb": round(ten_size / 1024, 1),
        "slowest_camera": "push_in",
        "per_camera_5s": per_camera,
        "fit_half_size_s": round(fit_s, 3),
        "fit_half_size_kb": round(len(fitted) / 1024, 1) if fitted else None,
        "target_render_5s_s": 3.0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
