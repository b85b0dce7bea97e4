"""What the remote providers share on the wire."""

from __future__ import annotations

import httpx


class TooLargeError(Exception):
    """A download passed its size cap (`size` is the declared or received byte count)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes or more")
        self.size = size


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body of a streamed response, refused as soon as it passes `max_bytes` (declared or received)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLargeError(int(declared))
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise TooLargeError(received)
        chunks.append(chunk)
    return b"".join(chunks)
