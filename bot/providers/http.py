"""What the remote providers share on the wire."""

from __future__ import annotations

import time
from collections.abc import Mapping

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


def may_have_arrived(error: BaseException) -> bool:
    """Whether a request that failed with `error` may still have reached the server whole (and been acted on).
    Only failures before anything was sent are certain: no connection (refused, DNS, TLS, connect timeout), no
    free connection in the pool, a proxy or a URL that could not be used. A read or write timeout, a connection
    that dropped after the request went out, an overall deadline: the server may have it."""
    certain = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)
    return not isinstance(error, certain)


# `ProviderError.code` of a `ping()` whose key the provider refused (401, or its own auth code).
KEY_REFUSED = "key_refused"


async def timed_request(
    client: httpx.AsyncClient, method: str, url: str, *, headers: Mapping[str, str] | None = None
) -> tuple[httpx.Response, float]:
    """A request whose (small) answer is read whole, and the seconds until its status line and headers came
    back: the time to first byte, connection set-up included."""
    started = time.perf_counter()
    async with client.stream(method, url, headers=headers) as response:
        first_byte = time.perf_counter() - started
        await response.aread()
    return response, first_byte
