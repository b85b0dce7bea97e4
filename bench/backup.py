"""Backups of a busy data folder: `likeness backup` while the bot writes, then `likeness restore`.

Setup: a database with 5 000 characters and 2 000 images of 100 KB (about 200 MB of blobs). Then a backup runs
in a thread while the event loop keeps committing new characters (a writer at full speed), and the archive is
restored into a fresh folder. Prints one JSON object as its last line: backup and restore seconds, archive size,
the writes that committed during the backup, peak RSS, and the check that every blob came back byte-identical."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from bot.domain import Actor
from bot.infra.config import Settings
from bot.library.characters import Library
from bot.ops.backup import backup, restore
from storage import Storage
from storage.blobs import BlobStore

CHARACTERS = 5_000
IMAGES = 2_000
IMAGE_BYTES = 100_000


async def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = Settings(data_dir=root / "data", guild_ready_timeout=0.05)
        storage = await Storage.open(settings.db_path, settings.blob_dir)
        library = Library(storage)
        for n in range(CHARACTERS):
            await storage.characters.create(1, f"Char {n}", "tall, silver hair, green jacket", 5)
        digests = [await storage.blobs.put(os.urandom(IMAGE_BYTES)) for _ in range(IMAGES)]

        writes = 0
        stop = asyncio.Event()

        async def writer() -> None:
            nonlocal writes
            while not stop.is_set():
                await library.create(Actor(1, 6), f"Live {writes}", "written during the backup")
                writes += 1

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.2)
        before = writes
        t0 = time.perf_counter()
        (root / "backups").mkdir()  # `likeness backup FOLDER` writes into a folder that exists
        try:
            result = await asyncio.to_thread(backup, settings, root / "backups")
        finally:
            stop.set()
            await task
            await storage.close()  # its thread would otherwise keep the process alive after an error
        backup_seconds = time.perf_counter() - t0
        during = writes - before

        restored = Settings(data_dir=root / "restored", guild_ready_timeout=0.05)
        t0 = time.perf_counter()
        await asyncio.to_thread(restore, restored, result.path, lambda _manifest: True)
        restore_seconds = time.perf_counter() - t0
        before_store, after_store = BlobStore(settings.blob_dir), BlobStore(restored.blob_dir)
        identical = all(before_store.path_for(d).read_bytes() == after_store.path_for(d).read_bytes() for d in digests)
        archive_mb = result.archive_bytes / 1e6
    return {
        "characters": CHARACTERS,
        "images": IMAGES,
        "blob_mb": round(IMAGES * IMAGE_BYTES / 1e6),
        "backup_seconds": round(backup_seconds, 2),
        "writes_committed_during_backup": during,
        "archive_mb": round(archive_mb, 1),
        "restore_seconds": round(restore_seconds, 2),
        "blobs_identical": identical,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
