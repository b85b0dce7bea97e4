"""The one transport-error mapper every remote provider uses (bot/providers/http.py `transport_errors`)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.providers.base import FinalError, OutcomeUnknownError, RetryableError
from bot.providers.http import PaidSubmit, transport_errors

SUBMIT = PaidSubmit("X did not answer after the shot was sent.", "X may have it, and cannot be asked")

# Failures after which the request may have reached the server whole, and those where it certainly did not.
MAY_HAVE_ARRIVED = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError)
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def failing(kind: type[httpx.TransportError]) -> httpx.AsyncClient:
    """A client whose every request fails with `kind`, as httpx raises it."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise kind("boom", request=request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def mapped(kind: type[httpx.TransportError], **options: Any) -> RetryableError:
    """The error a request failing with `kind` comes out as, through the mapper with `options`."""
    async with failing(kind) as client:
        try:
            with transport_errors("slow", "unreachable", **options):
                await client.get("https://provider.example/v1")
        except RetryableError as error:
            return error
    raise AssertionError("no provider error was raised")


@pytest.mark.parametrize("kind", MAY_HAVE_ARRIVED + NEVER_SENT)
async def test_a_transport_failure_becomes_a_retryable_error_with_its_wording(kind: type[httpx.TransportError]) -> None:
    error = await mapped(kind)
    timed_out = issubclass(kind, httpx.TimeoutException)
    assert type(error) is RetryableError
    assert error.message == ("slow" if timed_out else "unreachable")
    assert (error.code, error.detail) == ("timeout" if timed_out else "network", kind.__name__)
    assert isinstance(error.__cause__, kind)


@pytest.mark.parametrize("kind", MAY_HAVE_ARRIVED)
async def test_a_paid_submit_that_may_have_arrived_is_outcome_unknown(kind: type[httpx.TransportError]) -> None:
    error = await mapped(kind, paid_submit=SUBMIT)
    assert isinstance(error, OutcomeUnknownError)
    assert error.message == SUBMIT.message
    assert error.detail == f"{kind.__name__}: {SUBMIT.why}"
    assert error.code == ("timeout" if issubclass(kind, httpx.TimeoutException) else "network")


@pytest.mark.parametrize("kind", NEVER_SENT)
async def test_a_paid_submit_that_never_left_stays_plainly_retryable(kind: type[httpx.TransportError]) -> None:
    """Never pay twice, but never hold a job that certainly was not sent either: it may simply be sent again."""
    error = await mapped(kind, paid_submit=SUBMIT)
    assert type(error) is RetryableError
    assert error.message == ("slow" if issubclass(kind, httpx.TimeoutException) else "unreachable")


async def test_the_options_keep_each_providers_old_shape() -> None:
    uncoded = await mapped(httpx.ReadTimeout, coded=False)
    assert (uncoded.message, uncoded.code, uncoded.detail) == ("slow", "", "ReadTimeout")
    quiet = await mapped(httpx.ReadTimeout, timeout_detail=False, chain=False)
    assert (quiet.code, quiet.detail) == ("timeout", "")
    assert quiet.__cause__ is None and quiet.__suppress_context__
    network = await mapped(httpx.ConnectError, timeout_detail=False)
    assert network.detail == "ConnectError"


async def test_a_deadline_counts_as_a_timeout_only_when_asked() -> None:
    async def late(**options: Any) -> BaseException:
        try:
            async with transport_errors("slow", "unreachable", **options), asyncio.timeout(0):
                await asyncio.sleep(1)
        except BaseException as error:
            return error
        raise AssertionError("nothing was raised")

    assert type(await late()) is TimeoutError  # left to the caller (a download's own deadline message)
    error = await late(deadline=True)
    assert type(error) is RetryableError and (error.message, error.code) == ("slow", "timeout")
    unknown = await mapped(httpx.ConnectError, deadline=True, paid_submit=SUBMIT)
    assert type(unknown) is RetryableError
    try:
        async with transport_errors("slow", "unreachable", deadline=True, paid_submit=SUBMIT), asyncio.timeout(0):
            await asyncio.sleep(1)
    except OutcomeUnknownError as error:  # an overall deadline: the server may have it
        assert error.detail == f"TimeoutError: {SUBMIT.why}"
    else:
        raise AssertionError("the deadline was not mapped")


async def test_other_errors_and_success_pass_through_unchanged() -> None:
    final = FinalError("no", code="auth")
    with pytest.raises(FinalError) as caught, transport_errors("slow", "unreachable"):
        raise final
    assert caught.value is final
    with pytest.raises(ValueError, match="bad"), transport_errors("slow", "unreachable", deadline=True):
        raise ValueError("bad")
    with transport_errors("slow", "unreachable"):
        answer = 42
    assert answer == 42


def test_no_provider_maps_transport_errors_by_hand() -> None:
    """Issue 13: one mapper. A provider that catches httpx's timeout or transport errors itself has a second one."""
    folder = Path(__file__).parents[2] / "bot" / "providers"
    by_hand = re.compile(r"except[^:\n]*httpx\.(TimeoutException|TransportError|HTTPError|RequestError)")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(folder.glob("*.py"))
        if path.name != "http.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line)
    ]
    assert offenders == []
