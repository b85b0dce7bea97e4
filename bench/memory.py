"""Memory under hostile and heavy uploads: the whole upload path (download, decode, cleanup, encode, store) and
`/sheet`, through the real services, each phase in its own process so its peak RSS is its own.

Phases:
- flat: 8 members upload at once a 40-megapixel flat PNG (RGBA, a few hundred KB on the wire, 160 MB decoded)
- photos: 8 members upload at once a busy 12-megapixel photo (JPEG; photos bundled with scikit-image, scaled up
  and grained), cleaned by the u2netp model
- card: a member imports a character card of 63 elements of 6300 x 6300 px (RGBA cut-outs), then `/sheet`

Inputs are made first (streamed, never whole in memory) in a temporary folder. The model comes from
LIKENESS_TEST_MODELS_DIR (default .venv/models). Last line: one JSON object with each phase's peak RSS and time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

GUILD = 1
MEMBERS = 8
FLAT_SIZE = (7744, 5164)  # 39.99 megapixels: just under the 40 MP limit
PHOTO_SIZE = (4000, 3000)  # 12 megapixels
CARD_SIDE = 6300
CARD_ELEMENTS = 63
MODEL = "u2netp"
TARGET_MB = 1024
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "camera", "coins")

Box = tuple[float, float, float, float, tuple[int, int, int, int]]  # left, top, right, bottom (0..1), RGBA


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------------- inputs


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def figure_boxes(colour: tuple[int, int, int]) -> list[Box]:
    skin, legs = (230, 190, 160, 255), (50, 50, 60, 255)
    return [
        (0.40, 0.08, 0.60, 0.26, skin),  # head
        (0.32, 0.28, 0.68, 0.64, (*colour, 255)),  # body
        (0.35, 0.64, 0.47, 0.94, legs),
        (0.53, 0.64, 0.65, 0.94, legs),
    ]


def flat_png(size: tuple[int, int], boxes: Sequence[Box], background: tuple[int, int, int, int]) -> bytes:
    """An RGBA PNG of flat rectangles, written row by row (a 40 MP picture never exists whole here)."""
    width, height = size
    compressor = zlib.compressobj(6)
    idat = bytearray()
    cache: dict[tuple[int, ...], bytes] = {}
    for y in range(height):
        active = tuple(i for i, (_l, top, _r, bottom, _c) in enumerate(boxes) if top * height <= y < bottom * height)
        row = cache.get(active)
        if row is None:
            pixels = np.empty((width, 4), dtype=np.uint8)
            pixels[:] = background
            for index in active:
                left, _t, right, _b, colour = boxes[index]
                pixels[round(left * width) : round(right * width)] = colour
            row = cache[active] = b"\x00" + pixels.tobytes()
        idat += compressor.compress(row)
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b"")


def with_text(png: bytes, text: str) -> bytes:
    """The same pixels with a tEXt chunk: another file (another sha256) without compressing 160 MB again."""
    chunk = _chunk(b"tEXt", b"Comment\x00" + text.encode())
    return png[:33] + chunk + png[33:]  # after the signature (8) and IHDR (25)


def busy_photo(name: str, seed: int) -> bytes:
    """A scikit-image photo scaled to 12 MP with film grain, as a phone JPEG: busy enough for the model."""
    from skimage import data as skdata

    array = getattr(skdata, name)()
    image = Image.fromarray(array).convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    rng = np.random.default_rng(seed)
    for top in range(0, pixels.shape[0], 250):  # grain strip by strip: no full-size int16 copy
        strip = pixels[top : top + 250].astype(np.int16) + rng.integers(-24, 25, pixels[top : top + 250].shape)
        pixels[top : top + 250] = np.clip(strip, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def character_card() -> bytes:
    from bot.domain import ReferenceView, View
    from bot.library.card_format import build_card
    from tests.support.cards import element

    now = datetime(2026, 1, 1, tzinfo=UTC)
    colours = [(200, 30, 30), (30, 140, 60), (40, 70, 200)]
    bases = [flat_png((CARD_SIDE, CARD_SIDE), figure_boxes(c), (255, 255, 255, 0)) for c in colours]
    images = [with_text(bases[i % len(bases)], f"element {i}") for i in range(CARD_ELEMENTS)]
    blobs = {hashlib.sha256(data).hexdigest(): data for data in images}
    digests = list(blobs)
    elements = [element(f"prop {i}", digest) for i, digest in enumerate(digests)]  # a card keeps no ids
    views = [  # the views reuse element images: a card holds at most 64 files
        ReferenceView(
            id=i,
            character_id=1,
            view=view,
            original_blob=digests[i],
            cleaned_blob=digests[i],
            cutout_blob=digests[i],
            uploaded_by=1,
            created_at=now,
        )
        for i, view in enumerate(View)
    ]
    return build_card("Giant", "Every image 6300 px square", views, elements, blobs)


def make_inputs(folder: Path) -> dict[str, float]:
    sizes: dict[str, float] = {}
    colours = [(40 + 25 * i, 90, 200 - 20 * i) for i in range(MEMBERS)]
    for i, colour in enumerate(colours):
        data = flat_png(FLAT_SIZE, figure_boxes(colour), (255, 255, 255, 255))
        (folder / f"flat-{i}.png").write_bytes(data)
        sizes["flat_png_kb"] = round(len(data) / 1024, 1)
    for i, name in enumerate(PHOTOS[:MEMBERS]):
        data = busy_photo(name, i)
        (folder / f"photo-{i}.jpg").write_bytes(data)
        sizes["photo_jpeg_mb"] = max(sizes.get("photo_jpeg_mb", 0.0), round(len(data) / 2**20, 1))
    card = character_card()
    (folder / "giant.likeness.zip").write_bytes(card)
    sizes["card_mb"] = round(len(card) / 2**20, 1)
    return sizes


# ---------------------------------------------------------------------------------------------------- phases


def cdn(folder: Path) -> httpx.AsyncClient:
    """The bot's HTTP client, with the attachment host answering from the inputs folder."""

    def serve(request: httpx.Request) -> httpx.Response:
        path = folder / request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, content=path.read_bytes()) if path.is_file() else httpx.Response(404)

    return httpx.AsyncClient(transport=httpx.MockTransport(serve))


async def uploads(folder: Path, files: list[Path], content_type: str) -> dict[str, object]:
    from bot.domain import Actor, View
    from bot.imaging.cleanup import BackgroundRemover
    from bot.imaging.intake import IntakeLimits
    from bot.imaging.upload_gate import UploadGate
    from bot.library.characters import Library
    from bot.library.references import ReferenceService, Upload
    from storage import Storage

    prefix = files[0].stem.split("-")[0]
    storage = await Storage.open(folder / f"{prefix}.sqlite3", folder / f"{prefix}-blobs")
    library = Library(storage)
    remover = BackgroundRemover(MODEL, models_dir(), max_workers=2)
    http = cdn(folder)
    service = ReferenceService(storage, library, remover, IntakeLimits(), http, UploadGate(2))
    actors = [Actor(GUILD, 100 + i) for i in range(len(files))]
    characters = [await library.create(actor, f"Member {i}", "traits") for i, actor in enumerate(actors)]
    await remover.warm_up()
    baseline = peak_rss_mb()

    start = time.perf_counter()
    results = await asyncio.gather(
        *(
            service.add_view(
                actor,
                character,
                View.FRONT,
                Upload(f"https://cdn.test/{path.name}", path.name, path.stat().st_size, content_type),
            )
            for actor, character, path in zip(actors, characters, files, strict=True)
        )
    )
    seconds = time.perf_counter() - start
    methods = sorted({result.method for result in results})
    views = [view for c in characters for view in await storage.references.current_views(GUILD, c.id)]
    digests = [d for view in views for d in (view.original_blob, view.cleaned_blob, view.cutout_blob) if d]
    stored = max([max(Image.open(io.BytesIO(await storage.blobs.get(digest))).size) for digest in digests])
    await http.aclose()
    remover.close()
    await storage.close()
    return {
        "uploads": len(results),
        "methods": methods,
        "largest_stored_side_px": stored,
        "seconds": round(seconds, 2),
        "rss_before_uploads_mb": baseline,
    }


async def card_and_sheet(folder: Path) -> dict[str, object]:
    from bot.domain import Actor
    from bot.imaging.intake import IntakeLimits
    from bot.imaging.upload_gate import UploadGate
    from bot.library.card_format import CardLimits
    from bot.library.cards import CardUpload, CharacterCards
    from bot.library.characters import Library
    from bot.library.sheets.compose import SheetService
    from storage import Storage

    storage = await Storage.open(folder / "card.sqlite3", folder / "card-blobs")
    library = Library(storage)
    http = cdn(folder)
    gate = UploadGate(2)
    cards = CharacterCards(storage, library, CardLimits.for_images(IntakeLimits()), http, gate)
    path = folder / "giant.likeness.zip"
    actor = Actor(GUILD, 200)
    baseline = peak_rss_mb()

    start = time.perf_counter()
    upload = CardUpload(f"https://cdn.test/{path.name}", path.name, path.stat().st_size, "application/zip")
    character = await cards.import_card(actor, upload)
    imported = time.perf_counter()
    sheet = await SheetService(storage, gate).sheet(actor, character)
    done = time.perf_counter()
    elements = await storage.references.elements(GUILD, character.id)
    digests = [d for e in elements for d in (e.original_blob, e.cleaned_blob, e.cutout_blob) if d]
    largest = max([max(Image.open(io.BytesIO(await storage.blobs.get(digest))).size) for digest in digests])
    await http.aclose()
    await storage.close()
    return {
        "elements": len(elements),
        "largest_stored_side_px": largest,
        "sheet_px": list(Image.open(io.BytesIO(sheet.png)).size),
        "import_seconds": round(imported - start, 2),
        "sheet_seconds": round(done - imported, 2),
        "seconds": round(done - start, 2),
        "rss_before_import_mb": baseline,
    }


def models_dir() -> Path:
    default = Path(__file__).resolve().parent.parent / ".venv" / "models"
    return Path(os.environ.get("LIKENESS_TEST_MODELS_DIR", default))


def run_phase(phase: str, folder: Path) -> dict[str, object]:
    from bot.imaging.scale import return_freed_memory

    return_freed_memory()  # as Services.open does when the bot starts
    if phase == "flat":
        figures = asyncio.run(uploads(folder, sorted(folder.glob("flat-*.png")), "image/png"))
    elif phase == "photos":
        figures = asyncio.run(uploads(folder, sorted(folder.glob("photo-*.jpg")), "image/jpeg"))
    else:
        figures = asyncio.run(card_and_sheet(folder))
    return {**figures, "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=("flat", "photos", "card"))
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.dir)))
        return 0

    from bot.imaging.model_files import model_file

    if not model_file(MODEL, models_dir()).is_file():
        print(
            f"{MODEL} is missing under {models_dir()}: run `python -m bot.imaging.model_files install {MODEL} --dir ...`."
        )
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        inputs = make_inputs(folder)
        inputs["seconds"] = round(time.perf_counter() - start, 1)
        phases: dict[str, dict[str, object]] = {}
        for phase in ("flat", "photos", "card"):
            command = [sys.executable, "-m", "bench.memory", "--phase", phase, "--dir", str(folder)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stdout + done.stderr)
                return done.returncode
            phases[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{phase}: {json.dumps(phases[phase])}", flush=True)
    peaks = [float(str(figures["peak_rss_mb"])) for figures in phases.values()]
    result = {
        "cpus": os.cpu_count(),
        "cleanup_workers": 2,
        "inputs": inputs,
        "flat_uploads": {"count": MEMBERS, "megapixels": round(FLAT_SIZE[0] * FLAT_SIZE[1] / 1e6, 1), **phases["flat"]},
        "photo_uploads": {"count": MEMBERS, "megapixels": 12, **phases["photos"]},
        "card_sheet": {"side_px": CARD_SIDE, **phases["card"]},
        "peak_rss_mb": max([*peaks, peak_rss_mb()]),
        "target_peak_rss_mb": TARGET_MB,
    }
    print(json.dumps(result))
    return 0 if result["peak_rss_mb"] < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
