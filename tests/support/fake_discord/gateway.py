"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, dispatches.

Frames are sent as plain TEXT JSON even when the client asks for ``compress=zlib-stream``:
discord.py only inflates BINARY frames (``DiscordWebSocket.received_message``).
Outgoing payloads go through one queue per connection, so dispatches stay in order and can be
queued from synchronous code (``fake.add_member`` etc.).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import FakeDiscord

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41250

# Gateway intents the fake looks at.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15

# Close codes.
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_INVALID_SHARD = 4010
CLOSE_NOT_AUTHENTICATED = 4003


class GatewayConnection:
    """One client websocket (one shard of one bot)."""

    def __init__(self, fake: FakeDiscord, ws: web.WebSocketResponse) -> None:
        self.fake = fake
        self.ws = ws
        self.session_id: str | None = None
        self.shard: tuple[int, int] = (0, 1)
        self.intents = 0
        self.sequence = 0
        self.identified = False
        self.ready = False  # READY and every GUILD_CREATE were sent
        self.closed = False
        self.received: list[dict[str, Any]] = []  # every payload the client sent
        # (payload, on_sent); a None payload is a marker (just run on_sent), a None item stops.
        self._queue: asyncio.Queue[tuple[dict[str, Any] | None, Callable[[], None] | None] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="fake-discord-gateway-writer")

    def __repr__(self) -> str:
        return f"<GatewayConnection session={self.session_id} shard={self.shard} ready={self.ready}>"

    # --- sending -------------------------------------------------------------------------------

    def send(self, op: int, d: Any, *, on_sent: Callable[[], None] | None = None) -> None:
        self._queue.put_nowait(({"op": op, "d": d, "s": None, "t": None}, on_sent))

    def dispatch(self, event: str, data: Any, *, on_sent: Callable[[], None] | None = None) -> None:
        """Queue a DISPATCH (op 0); its sequence number is assigned when it is written."""
        self._queue.put_nowait(({"op": 0, "d": data, "s": None, "t": event}, on_sent))

    def handles_guild(self, guild_id: int) -> bool:
        shard_id, shard_count = self.shard
        return (guild_id >> 22) % shard_count == shard_id

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            payload, on_sent = item
            if payload is None:
                if on_sent is not None:
                    on_sent()
                continue
            if payload["op"] == 0:
                self.sequence += 1
                payload["s"] = self.sequence
            if self.ws.closed:
                continue
            try:
                await self.ws.send_str(orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS).decode())
            except (ConnectionError, RuntimeError):
                _log.debug("gateway send failed; client went away")
                continue
            if on_sent is not None:
                on_sent()

    async def close(self, code: int = 1000, message: str = "") -> None:
        self.closed = True
        self._queue.put_nowait(None)
        await self._writer
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode())

    # --- receiving -----------------------------------------------------------------------------

    async def run(self) -> None:
        self.send(10, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fake-discord"]})
        async for msg in self.ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    await self.close(4002, "Decode error")
                continue
            payload = orjson.loads(msg.data)
            self.received.append(payload)
            await self._handle(payload)

    async def _handle(self, payload: dict[str, Any]) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == 1:  # HEARTBEAT
            self.send(11, None)
        elif op == 2:  # IDENTIFY
            await self._identify(d or {})
        elif op == 6:  # RESUME
            self._resume(d or {})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            self._request_members(d or {})
        elif op in (3, 4):  # presence / voice state updates: accepted, nothing to do
            pass
        elif not self.identified:
            await self.close(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")

    async def _identify(self, d: dict[str, Any]) -> None:
        fake = self.fake
        if d.get("token") != fake.token:
            await self.close(CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        shard = d.get("shard") or [0, 1]
        if shard[1] != fake.shard_count or not 0 <= shard[0] < shard[1]:
            await self.close(CLOSE_INVALID_SHARD, "Invalid shard.")
            return
        self.shard = (int(shard[0]), int(shard[1]))
        self.intents = int(d.get("intents", 0))
        self.session_id = uuid.uuid4().hex
        self.identified = True
        fake.sessions[self.session_id] = self
        guilds = [g for g in fake.world.guilds.values() if self.handles_guild(g.id)]
        self.dispatch(
            "READY",
            {
                "v": 10,
                "user": fake.bot_user_payload(),
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": self.session_id,
                "resume_gateway_url": str(fake.ws_url),
                "shard": list(self.shard),
                "application": {"id": str(fake.application_id), "flags": fake.application_flags},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": ["local"],
                "user_settings": {},
                "session_type": "normal",
                "auth": {},
                "_trace": ["fake-discord"],
            },
        )
        for guild in guilds:
            self.dispatch("GUILD_CREATE", fake.guild_create_payload(guild, self.intents))
        self.send_marker(self._mark_ready)

    def send_marker(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything queued so far has been written."""
        self._queue.put_nowait((None, callback))

    def _mark_ready(self) -> None:
        self.ready = True
        self.fake.notify()

    def _resume(self, d: dict[str, Any]) -> None:
        old = self.fake.sessions.get(str(d.get("session_id")))
        if old is None or d.get("token") != self.fake.token:
            self.send(9, False)  # INVALID_SESSION, not resumable: the client identifies again
            return
        self.session_id = old.session_id
        self.shard, self.intents, self.sequence = old.shard, old.intents, int(d.get("seq") or 0)
        self.identified = True
        self.fake.sessions[str(self.session_id)] = self
        self.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        self.send_marker(self._mark_ready)

    def _request_members(self, d: dict[str, Any]) -> None:
        guild = self.fake.world.guilds.get(int(d.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members.values())
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        elif d.get("query"):
            query = str(d["query"]).lower()
            members = [m for m in members if m.user.name.lower().startswith(query)]
        if d.get("limit"):
            members = members[: int(d["limit"])]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.to_dict() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
