"""What the remote providers share on the wire."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import NamedTuple

import httpx

from bot.providers.base import OutcomeUnknownError, RetryableError


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


class PaidSubmit(NamedTuple):
    """What a member is told when a paid submit, which the provider cannot be asked about later, got no answer
    after it may have arrived: `message` for the member, `why` appended to the error's detail."""

    message: str
    why: str


class transport_errors:  # named like contextlib.suppress, which it is used like
    """The one place an httpx transport failure in the body (a timeout, a refused or dropped connection, a
    protocol error) becomes a typed provider error; every other exception passes through unchanged. Used with
    `with` or `async with` (so it can open the list of an `async with (...)` around a stream).

    A timeout becomes RetryableError(`timeout`), any other transport failure RetryableError(`network`), with the
    error's class name as detail and code "timeout"/"network" (`coded=False`: no code; `timeout_detail=False`:
    no detail on a timeout). `deadline`: a built-in TimeoutError (an `asyncio.timeout` inside the body) is a
    timeout too. `chain=False` raises `from None`. `paid_submit`: the call creates paid work the provider cannot
    look up, so a failure after which the request may have arrived (`may_have_arrived`) is OutcomeUnknownError
    (never simply sent again); a failure before anything was sent stays RetryableError."""

    def __init__(
        self,
        timeout: str,
        network: str,
        *,
        coded: bool = True,
        deadline: bool = False,
        timeout_detail: bool = True,
        chain: bool = True,
        paid_submit: PaidSubmit | None = None,
    ) -> None:
        self._timeout, self._network, self._paid_submit = timeout, network, paid_submit
        self._coded, self._deadline, self._timeout_detail, self._chain = coded, deadline, timeout_detail, chain

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        caught = (TimeoutError, httpx.TransportError) if self._deadline else httpx.TransportError
        if not isinstance(error, caught):
            return
        name = type(error).__name__
        timed_out = isinstance(error, TimeoutError | httpx.TimeoutException)
        code = ("timeout" if timed_out else "network") if self._coded else ""
        cause = error if self._chain else None
        if self._paid_submit is not None and may_have_arrived(error):
            raise OutcomeUnknownError(
                self._paid_submit.message, detail=f"{name}: {self._paid_submit.why}", code=code
            ) from cause
        if timed_out:
            raise RetryableError(self._timeout, detail=name if self._timeout_detail else "", code=code) from cause
        raise RetryableError(self._network, detail=name, code=code) from cause

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, error, tb)


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
