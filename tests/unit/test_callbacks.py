"""The callback listener over a real socket: signed URLs, what nudges the worker and what does not."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from bot.domain import Job
from bot.infra.listeners import BUSY, ListenerLimits
from bot.infra.metrics import MetricsServer
from bot.jobs.callbacks import BODY_MAX, CallbackServer, CallbackUrls, callback_secret, worth_polling
from bot.jobs.worker import Worker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def urls(tmp_path: Path) -> CallbackUrls:
    return CallbackUrls("https://likeness.example.org/", callback_secret(tmp_path))


@dataclass
class Listening:
    address: str  # where it listens, as the reverse proxy would reach it
    clock: Clock
    nudged: list[tuple[str, int]] = field(default_factory=list)  # (provider, job) the worker was told to poll
    counted: list[tuple[str, str]] = field(default_factory=list)  # (provider, outcome) told to the metrics


@pytest.fixture
async def listening(urls: CallbackUrls) -> AsyncIterator[Listening]:
    nudged: list[tuple[str, int]] = []
    counted: list[tuple[str, str]] = []
    clock = Clock()
    server = CallbackServer(
        urls,
        lambda provider, job: nudged.append((provider, job)),
        "127.0.0.1",
        0,
        clock=clock,
        count=lambda provider, outcome: counted.append((provider, outcome)),
    )
    await server.start()
    try:
        yield Listening(f"http://127.0.0.1:{server.port}", clock, nudged, counted)
    finally:
        await server.close()


def kling_task(status: str) -> dict[str, object]:
    return {"task_id": "880001", "task_status": status, "updated_at": 1, "task_info": {"external_task_id": "7"}}


def local(urls: CallbackUrls, address: str, provider: str, job_id: int) -> str:
    """The URL a provider was given, reaching this listener (as the reverse proxy would route it)."""
    return urls.url_for(provider, job_id).replace("https://likeness.example.org", address)


def test_the_secret_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = callback_secret(tmp_path)
    assert len(first) == 32 and callback_secret(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "callback-secret").stat().st_mode) == 0o600
    assert callback_secret(tmp_path / "elsewhere") != first


def test_each_shot_has_its_own_url(urls: CallbackUrls) -> None:
    url = urls.url_for("kling", 7)
    assert url.startswith("https://likeness.example.org/callbacks/kling/7/") and "//callbacks" not in url
    token = url.rsplit("/", 1)[1]
    assert len(token) == 32 and urls.verify("kling", 7, token)
    assert not urls.verify("kling", 8, token) and not urls.verify("fal", 7, token)
    assert not urls.verify("kling", 7, token[:-1] + ("0" if token[-1] != "0" else "1"))


def test_only_an_end_of_a_kling_task_is_worth_an_early_poll() -> None:
    assert worth_polling("kling", json.dumps(kling_task("succeed")).encode())
    assert worth_polling("kling", json.dumps(kling_task("failed")).encode())
    assert not worth_polling("kling", json.dumps(kling_task("processing")).encode())
    assert not worth_polling("kling", json.dumps(kling_task("submitted")).encode())
    assert worth_polling("kling", b"not json")  # unreadable: the poll is the check
    assert worth_polling("fal", b"{}")  # fal calls back once, at the end


async def test_a_signed_callback_nudges_once_per_interval(urls: CallbackUrls, listening: Listening) -> None:
    nudged, clock, address = listening.nudged, listening.clock, listening.address
    async with httpx.AsyncClient() as client:
        done = kling_task("succeed")
        assert (await client.post(local(urls, address, "kling", 7), json=done)).status_code == 200
        assert (await client.post(local(urls, address, "kling", 7), json=done)).status_code == 200  # a duplicate
        assert nudged == [("kling", 7)]
        clock.now += 2.0
        assert (await client.post(local(urls, address, "kling", 7), json=done)).status_code == 200
        assert (await client.post(local(urls, address, "fal", 8), json={"status": "OK"})).status_code == 200
    assert nudged == [("kling", 7), ("kling", 7), ("fal", 8)]
    assert listening.counted == [("kling", "polled"), ("kling", "duplicate"), ("kling", "polled"), ("fal", "polled")]


async def test_progress_callbacks_are_answered_without_a_poll(urls: CallbackUrls, listening: Listening) -> None:
    nudged, address = listening.nudged, listening.address
    async with httpx.AsyncClient() as client:
        answer = await client.post(local(urls, address, "kling", 7), json=kling_task("processing"))
    assert answer.status_code == 200 and nudged == []
    assert listening.counted == [("kling", "progress")]


async def test_forged_and_malformed_callbacks_change_nothing(urls: CallbackUrls, listening: Listening) -> None:
    nudged, address = listening.nudged, listening.address
    good = local(urls, address, "kling", 7)
    token = good.rsplit("/", 1)[1]
    async with httpx.AsyncClient() as client:
        assert (await client.post(f"{address}/callbacks/kling/7/{'0' * 32}", json={})).status_code == 404
        assert (await client.post(f"{address}/callbacks/kling/8/{token}", json={})).status_code == 404  # another job
        assert (await client.post(f"{address}/callbacks/fal/7/{token}", json={})).status_code == 404
        assert (await client.post(f"{address}/callbacks/evil/7/{token}", json={})).status_code == 404
        assert (await client.post(f"{address}/callbacks/kling/x7/{token}", json={})).status_code == 404
        assert (await client.get(good)).status_code == 405
        huge = await client.post(good, content=b"x" * (BODY_MAX + 1), headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
    assert nudged == []
    # the metrics get no label per forged provider name; the bad job id and the 405/413 never reach the check
    assert listening.counted == [("kling", "refused"), ("kling", "refused"), ("fal", "refused"), ("other", "refused")]


async def test_a_nudge_ends_a_wait_to_poll_even_one_that_came_during_the_poll_but_never_a_back_off() -> None:
    worker = Worker(cast(Any, None), cast(Any, None), cast(Any, None), cast(Any, None), clock=time.monotonic)
    job = cast(Job, SimpleNamespace(id=5))
    worker._nudges[5], worker._job_wakes[5] = asyncio.Event(), asyncio.Event()  # pyright: ignore[reportPrivateUsage]
    sleep_until = worker._sleep_until  # pyright: ignore[reportPrivateUsage]

    worker.nudge(5)  # arrives while the job is being polled: kept for the next wait, which it ends at once
    await asyncio.wait_for(sleep_until(job, time.monotonic() + 600, nudgeable=True), 10)

    waiting = asyncio.create_task(sleep_until(job, time.monotonic() + 600, nudgeable=True))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    worker.nudge(5)  # arrives during the wait
    await asyncio.wait_for(waiting, 10)

    worker.nudge(5)  # a back-off after a rate limit is waited out whatever the provider says meanwhile
    started = time.monotonic()
    await sleep_until(job, started + 0.3)
    assert time.monotonic() - started >= 0.29

    worker.nudge(6)  # before the worker drives job 6 (just after a start): kept for when it does, a while
    assert 6 in worker._early_nudges  # pyright: ignore[reportPrivateUsage]
    worker._early_nudges[6] -= 121  # pyright: ignore[reportPrivateUsage]
    worker.nudge(7)  # (a late duplicate for a finished job, say): old ones are forgotten as new ones come
    assert set(worker._early_nudges) == {7}  # pyright: ignore[reportPrivateUsage]


async def test_unreadable_and_odd_bodies_are_answered_cleanly_never_500(
    urls: CallbackUrls, listening: Listening, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a valid token, a body that is not JSON (garbage, nested past the parser's recursion, a number too long
    to convert) is refused with 400; JSON that is not a task (wrong types, infinite numbers) is only a hint: the
    poll is the check. Nothing is a 500, and nothing logs a traceback."""
    caplog.set_level(logging.DEBUG)
    address = listening.address
    unreadable = [
        b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust the JSON parser's recursion
        b'{"task_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"not json",
        b"\xff\xfe not utf-8",
        b'{"task_id": "1", "updated_at": ' + b"9" * 5000 + b"}",  # past int's 4300-digit conversion limit
        b"",
    ]
    odd = [  # JSON, but not a task as Kling sends it
        b'{"task_id": "1", "updated_at": 1e999, "task_status": "succeed"}',
        b'{"task_id": "1", "updated_at": NaN}',
        b'{"task_id": "1", "task_status": "succeed", "task_result": {"videos": 5}}',
        b'{"task_id": {"x": 1}, "task_status": ["succeed"], "task_info": 3}',
        b'"just a string"',
        b"[1, 2, 3]",
        b"12345",
    ]
    async with httpx.AsyncClient() as client:
        for provider, job in (("kling", 7), ("fal", 8)):
            for body in unreadable:
                answer = await client.post(local(urls, address, provider, job), content=body)
                assert answer.status_code == 400, (provider, body[:40], answer.text)
        for n, body in enumerate(odd):
            listening.clock.now += 10  # each one past the nudge interval
            answer = await client.post(local(urls, address, "kling", 100 + n), content=body)
            assert answer.status_code == 200, (body, answer.text)
    assert listening.nudged == [("kling", 100 + n) for n in range(len(odd))]  # the poll is the check
    assert listening.counted.count(("kling", "malformed")) == len(unreadable)
    assert listening.counted.count(("fal", "malformed")) == len(unreadable)
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


Stalled = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# A connection past the cap is told "busy" and closed at once; when the client's request is still unread, the
# kernel resets the connection instead and the 503 may be lost on the way: either way, it is not served.
SHED = (BUSY, b"")


async def stall(address: str, sent: bytes) -> Stalled:
    """A raw connection that sends `sent` and then nothing more."""
    host, port = address.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(sent)
    await writer.drain()
    return reader, writer


async def closed_by_the_listener(connection: Stalled) -> bytes:
    """Everything the listener sent before it closed the connection (waits for the close, up to a bound)."""
    reader, writer = connection
    try:
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:  # aborted
        return b""
    finally:
        writer.close()


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def half_a_head(url: str) -> bytes:
    return f"POST /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: x\r\n".encode()


def half_a_body(url: str) -> bytes:
    return f'POST /{url.split("/", 3)[3]} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{{"task_'.encode()


async def slow_listener(urls: CallbackUrls, limits: ListenerLimits) -> tuple[CallbackServer, list[int]]:
    nudged: list[int] = []
    server = CallbackServer(urls, lambda _p, job: nudged.append(job), "127.0.0.1", 0, limits=limits)
    await server.start()
    return server, nudged


async def test_slow_clients_are_closed_by_the_header_and_body_deadlines(urls: CallbackUrls) -> None:
    server, nudged = await slow_listener(urls, ListenerLimits(header_seconds=0.5, body_seconds=0.5))
    address = f"http://127.0.0.1:{server.port}"
    try:
        url = local(urls, address, "fal", 7)
        nothing = [await stall(address, b"") for _ in range(5)]
        heads = [await stall(address, half_a_head(url)) for _ in range(10)]
        bodies = [await stall(address, half_a_body(url)) for _ in range(10)]
        said = await asyncio.gather(*(closed_by_the_listener(c) for c in [*nothing, *heads, *bodies]))
        assert said == [b""] * 25  # closed without an answer: no request ever arrived whole
        await wait_for(lambda: server.open_connections == 0, "every slow connection to be let go")
        async with httpx.AsyncClient() as client:  # a provider's callback still gets through
            answer = await client.post(url, json={"status": "OK"})
        assert answer.status_code == 200 and answer.headers["connection"] == "close" and nudged == [7]
    finally:
        await server.close()


async def test_connections_past_the_cap_are_shed_and_a_callback_gets_through_once_one_is_free(
    urls: CallbackUrls,
) -> None:
    server, nudged = await slow_listener(urls, ListenerLimits(header_seconds=600, body_seconds=600, max_connections=10))
    address = f"http://127.0.0.1:{server.port}"
    url = local(urls, address, "fal", 7)
    stalled = [await stall(address, half_a_body(url) if n % 2 else half_a_head(url)) for n in range(10)]
    try:
        await wait_for(lambda: server.open_connections == 10, "the listener to hold the ten stalled connections")
        for _ in range(3):
            assert await closed_by_the_listener(await stall(address, b"POST / HTTP/1.1\r\n")) in SHED
        assert server.open_connections == 10
        stalled.pop()[1].close()  # one slow client goes away
        await wait_for(lambda: server.open_connections == 9, "its slot to be free")
        async with httpx.AsyncClient() as client:
            answer = await client.post(url, json={"status": "OK"})
        assert answer.status_code == 200 and nudged == [7]
        await wait_for(lambda: server.open_connections == 9, "the callback's connection to be closed after it")
    finally:
        for _reader, writer in stalled:
            writer.close()
        await server.close()


async def test_the_metrics_endpoint_sheds_slow_and_surplus_clients_the_same_way() -> None:
    async def collect() -> str:
        return "likeness_up_seconds 1\n"

    server = MetricsServer(collect, "127.0.0.1", 0, limits=ListenerLimits(header_seconds=0.5, max_connections=4))
    await server.start()
    address = f"http://127.0.0.1:{server.port}"
    try:
        stalled = [await stall(address, b"GET /metr") for _ in range(4)]
        await wait_for(lambda: server.open_connections == 4, "the four stalled scrapes")
        assert await closed_by_the_listener(await stall(address, b"GET /metrics HTTP/1.1\r\n\r\n")) in SHED
        assert await asyncio.gather(*(closed_by_the_listener(c) for c in stalled)) == [b""] * 4
        await wait_for(lambda: server.open_connections == 0, "the slow scrapes to be let go")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{address}/metrics")
        assert answer.status_code == 200 and answer.text == "likeness_up_seconds 1\n"
    finally:
        await server.close()


async def test_three_hundred_half_sent_requests_do_not_hold_the_listener(
    urls: CallbackUrls, listening: Listening
) -> None:
    """The listener as the bot starts it (default limits): of 300 half-sent requests, all but a bounded few are
    let go at once, and the rest by the header deadline; then a real callback is answered."""
    url = local(urls, listening.address, "fal", 7)
    stalled = [await stall(listening.address, half_a_head(url)) for _ in range(300)]
    closes = await asyncio.gather(*(closed_by_the_listener(connection) for connection in stalled))
    assert all(close in SHED for close in closes)  # each closed by the listener within the bound, none answered
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, json={"status": "OK"})
    assert answer.status_code == 200 and listening.nudged == [("fal", 7)]
