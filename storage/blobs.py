"""Content-addressed blob store on disk: a blob is named by the sha256 of its bytes.

Writes are atomic (temporary file in the same directory, fsync, rename), so a crash never leaves a
half-written blob under a real name; storing the same bytes twice is free. File I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
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
            return digest
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

    async def put(self, data: bytes) -> str:
        """Store bytes; returns their sha256 hex digest."""
        return await asyncio.to_thread(self.put_sync, data)

    async def get(self, digest: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, digest)
