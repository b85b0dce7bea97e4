"""What both of the bot's HTTP listeners (provider callbacks, metrics) do about slow or greedy clients.

Anyone who can reach a listener can open connections and send nothing, or half a request, and stall. Each
listener therefore
- takes at most `max_connections` at once; past that a new connection gets a 503 and is closed at once,
- closes a connection whose request head has not arrived `header_seconds` after it connected,
- closes one whose request (body included) has not been read and answered `body_seconds` after its head came,
and answers one request per connection (`Connection: close`), so a deadline is never reset by a keep-alive.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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
