"""Content-addressed blob store on disk: a blob is named by the sha256 of its bytes.

Writes are atomic (temporary file in the same directory, fsync, rename), so a crash never leaves a
half-written blob under a real name; storing the same bytes twice is free. File I/O runs in a thread.

Blobs no row refers to any more (a deleted character's images, a write whose row never came) are deleted by
bot.retention. A blob is always stored before the row naming it, so the sweep spares blobs stored recently: a
store of bytes already present refreshes the file's time for that reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFoundError(KeyError):
    pass


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def put_sync(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest)
        if target.exists():
            try:
                os.utime(target)  # stored again: a row is about to name it, so the sweep must wait (see above)
                return digest
            except FileNotFoundError:  # swept just now: write it again
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return digest

    def get_sync(self, digest: str) -> bytes:
        try:
            data = self.path_for(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobNotFoundError(f"{digest} is corrupt on disk")
        return data

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).exists()

    def files(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every blob, in order. Temporary files of writes in progress are not blobs."""
        if not self.root.is_dir():
            return
        for first in sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2):
            for second in sorted(p for p in first.iterdir() if p.is_dir() and len(p.name) == 2):
                for blob in sorted(second.iterdir()):
                    digest = blob.name
                    if _DIGEST.match(digest) and digest[:2] == first.name and digest[2:4] == second.name:
                        yield digest, blob

    def delete_if_untouched_since(self, digest: str, cutoff: float) -> int:
        """Delete a blob unless it was stored (again) at or after `cutoff`; the bytes freed (0: kept or gone)."""
        path = self.path_for(digest)
        try:
            stat = path.stat()
            if stat.st_mtime >= cutoff:
                return 0
            path.unlink()
        except FileNotFoundError:
            return 0
        return stat.st_size

    async def put(self, data: bytes) -> str:
        """Store bytes; returns their sha256 hex digest."""
        return await asyncio.to_thread(self.put_sync, data)

    async def get(self, digest: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, digest)
