"""What both of the bot's HTTP listeners (provider callbacks, metrics) do about slow or greedy clients.

Anyone who can reach a listener can open connections and send nothing, or half a request, and stall. Each
listener therefore
- takes at most `max_connections` at once; past that a new connection gets a 503 and is closed at once,
- closes a connection whose request head has not arrived `header_seconds` after it connected,
- closes one whose request (body included) has not been read and answered `body_seconds` after its head came,
and answers one request per connection (`Connection: close`), so a deadline is never reset by a keep-alive.
`Listener` serves an aiohttp application that way; each listener is its own app on its own address, so the
metrics never become reachable through the (public, proxied) callback port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"


@dataclass(frozen=True)
class ListenerLimits:
    header_seconds: float = 10.0  # from the connection to the end of the request head
    body_seconds: float = 30.0  # from the head to the answer (the body read and handled)
    max_connections: int = 64  # open at once; providers call back one shot at a time, scrapers scrape alone


class ConnectionSlots:
    """Counts a listener's open connections against its cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """Claim a slot for a new connection; False when the listener is full (shed it)."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


class Deadline:
    """Aborts a transport unless moved on (`arm` again) or cancelled in time."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        self.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()
        else:
            self._transport.close()


def shed(transport: asyncio.BaseTransport) -> None:
    """Answer a connection past the cap with a 503 and close it."""
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.write(BUSY)
    transport.close()


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler with the listener's cap and deadlines: a connection past the cap is answered
    503 and closed; one whose head or body is too slow is aborted."""

    def __init__(self, manager: web.Server, slots: ConnectionSlots, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._slots = slots
        self._limits = limits
        self._deadline: Deadline | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._slots.take():
            shed(transport)
            return
        self._deadline = Deadline(transport)
        self._deadline.arm(self._limits.header_seconds)

    def head_received(self) -> None:
        """The request's head is in: the body (and the answer) now have their own deadline."""
        if self._deadline is not None:
            self._deadline.arm(self._limits.body_seconds)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self._slots.give_back()
        super().connection_lost(exc)


@web.middleware
async def _one_request_per_connection(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if isinstance(request.protocol, _GuardedHandler):
        request.protocol.head_received()
    response = await handler(request)
    response.force_close()  # no keep-alive: each connection's deadlines cover exactly one request
    return response


def application(client_max_size: int = 1024 * 1024) -> web.Application:
    """An aiohttp app whose every request is answered as the limits above expect (one per connection)."""
    return web.Application(client_max_size=client_max_size, middlewares=[_one_request_per_connection])


class Listener:
    """Serves `app` on host:port with the cap and deadlines of `limits`."""

    def __init__(self, app: web.Application, host: str, port: int, limits: ListenerLimits) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._limits = limits
        self._slots = ConnectionSlots(limits.max_connections)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return self._slots.open

    async def start(self) -> None:
        self._runner = runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )  # a stalled client never holds up a stop
        await runner.setup()
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def connection() -> _GuardedHandler:  # what aiohttp's TCPSite would make, plus the cap and the deadlines
            return _GuardedHandler(manager, self._slots, self._limits, loop=loop, access_log=None)

        try:
            self._server = await loop.create_server(connection, self._host, self._port)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections still open
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
