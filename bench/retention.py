"""The hourly sweep of unused images on a large library, and whether the bot stays responsive meanwhile.

Setup: 5 000 characters, each with a sheet image (named), and 20 000 blobs in all: the 5 000 named ones, 10 000
left by deleted characters (stored two hours ago) and 5 000 stored just now with no row yet (as during an upload).
Then one sweep runs while a heartbeat task measures how late the event loop wakes up. Prints one JSON object as
its last line: sweep seconds, what was deleted and kept, the worst event-loop lag, and whether exactly the
unused old blobs went."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from bot.jobs.retention import sweep_unreferenced
from storage import Storage

CHARACTERS = 5_000
ORPHANS = 10_000
FRESH = 5_000
BLOB_BYTES = 2_000


async def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        storage = await Storage.open(root / "db.sqlite3", root / "blobs")
        named: set[str] = set()
        for n in range(CHARACTERS):
            character = await storage.characters.create(1, f"Char {n}", "tall, silver hair, green jacket", 5)
            digest = storage.blobs.put_sync(os.urandom(BLOB_BYTES))
            await storage.sheets.save(1, character.id, 1, digest)
            named.add(digest)
        orphans = {storage.blobs.put_sync(os.urandom(BLOB_BYTES)) for _ in range(ORPHANS)}
        fresh = {storage.blobs.put_sync(os.urandom(BLOB_BYTES)) for _ in range(FRESH)}
        old = time.time() - 7200
        for digest in named | orphans:
            os.utime(storage.blobs.path_for(digest), (old, old))

        lags: list[float] = []
        stop = asyncio.Event()

        async def heartbeat() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - start - 0.01)

        beat = asyncio.create_task(heartbeat())
        t0 = time.perf_counter()
        swept = await sweep_unreferenced(storage)
        sweep_seconds = time.perf_counter() - t0
        stop.set()
        await beat
        left = {digest for digest, _path in storage.blobs.files()}
        await storage.close()
    return {
        "characters": CHARACTERS,
        "blobs": CHARACTERS + ORPHANS + FRESH,
        "sweep_seconds": round(sweep_seconds, 2),
        "deleted": swept.deleted,
        "freed_mb": round(swept.freed_bytes / 1e6, 1),
        "kept": swept.kept,
        "max_loop_lag_ms": round(max(lags, default=0.0) * 1000, 1),
        "exactly_the_unused_old_ones_went": left == named | fresh,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
