"""Provider callbacks: the providers whose spec `calls_back` (Kling, fal.ai) can say a task changed, so a finished
render is picked up at once instead of at the next poll.

A callback is only ever a nudge to poll the task now through the provider's authenticated API; its body is not
believed. Deliveries repeat, arrive out of order, and anyone who can reach the listener can POST to it, so:
- each shot gets its own URL, `<LIKENESS_CALLBACK_URL>/callbacks/<provider>/<job id>/<token>`, where the token
  is an HMAC of the provider and job id under a random secret kept in the data folder (`callback-secret`); a
  request with any other token is answered 404 and changes nothing;
- a job is nudged at most once per `min_interval` seconds, so a flood of (even genuine) deliveries cannot turn
  into a flood of polls;
- the body only decides whether a poll is worth making now: Kling calls back on every status change, and only
  an end (succeeded, failed) is; a JSON body that does not read as a task is polled for, since a poll is the
  check. A body that is not JSON at all (or nested too deep to read, or with a number too long to convert) is
  no provider's callback: it is answered 400 and changes nothing.
- where a provider signs its callbacks and the admin gave the bot its signing secret (Kling:
  LIKENESS_KLING_WEBHOOK_SECRET), every callback of that provider must carry a valid Standard Webhooks signature
  (`webhook-id`, `webhook-timestamp` within five minutes, `webhook-signature` over id.timestamp.body), checked by
  the scheme's reference library; one without is answered 401 and changes nothing, even with the right token.
Without LIKENESS_CALLBACK_URL nothing listens and providers are polled only, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import standardwebhooks
from aiohttp import web

from bot.infra.listeners import Listener, ListenerLimits, application
from bot.providers import catalog
from bot.providers.base import TaskStatus

log = logging.getLogger(__name__)

BODY_MAX = 1024 * 1024  # larger bodies are refused (413) unread
HELLO = "likeness callbacks\n"
ENDS = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)
TOKEN_CHARS = 32  # hex characters of the HMAC kept in the URL: 128 bits


def callback_secret(data_dir: Path) -> bytes:
    """The random secret behind every callback token, made once and kept (owner-only) in the data folder, so
    the URLs given to providers before a restart still work after it."""
    path = data_dir / "callback-secret"
    if path.is_file():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    staging = path.with_suffix(".tmp")
    staging.touch(mode=0o600)
    staging.write_text(value.hex() + "\n")
    staging.replace(path)
    return value


class CallbackUrls:
    """Makes and checks the per-shot callback URLs."""

    def __init__(self, public_base: str, secret: bytes) -> None:
        self._base = public_base.rstrip("/")
        self._secret = secret

    def token(self, provider: str, job_id: int) -> str:
        digest = hmac.new(self._secret, f"{provider}:{job_id}".encode(), hashlib.sha256).hexdigest()
        return digest[:TOKEN_CHARS]

    def url_for(self, provider: str, job_id: int) -> str:
        return f"{self._base}/callbacks/{provider}/{job_id}/{self.token(provider, job_id)}"

    def verify(self, provider: str, job_id: int, token: str) -> bool:
        return hmac.compare_digest(self.token(provider, job_id), token)


class UnreadableBodyError(ValueError):
    """A callback body that is not a JSON document this listener can read."""


def read_body(body: bytes) -> object:
    """The JSON document of a callback body, or UnreadableBodyError: not JSON, not UTF-8, a number with more
    digits than Python converts, or nesting deep enough to exhaust the parser's recursion."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UnreadableBodyError(type(exc).__name__) from None


def worth_polling(provider: str, body: bytes | object) -> bool:
    """Whether a callback says something a poll now would pick up (an end), as far as its body (raw or already
    read) tells."""
    spec = catalog.find(provider)
    if spec is None or spec.callback_status is None:  # it calls back once, on completion (fal)
        return True
    try:
        payload = read_body(body) if isinstance(body, bytes) else body
        if not isinstance(payload, Mapping):
            return True
        return spec.callback_status(cast(Mapping[str, Any], payload)) in ENDS
    except Exception:  # the body is only a hint, never believed: whatever it holds (wrong types...), poll
        return True


def _calls_back(provider: str) -> bool:
    spec = catalog.find(provider)
    return spec is not None and spec.calls_back


Nudge = Callable[[str, int], None]  # (provider, job id): poll that job now
Count = Callable[
    [str, str], None
]  # (provider, outcome): polled, progress, duplicate, refused, malformed (bot.infra.metrics)


class CallbackServer:
    """POST /callbacks/<provider>/<job id>/<token>: checks the token, then nudges the worker. Bind it to
    localhost behind a reverse proxy that terminates HTTPS (see the README). Slow or too many clients are shed
    (bot.infra.listeners)."""

    def __init__(
        self,
        urls: CallbackUrls,
        nudge: Nudge,
        host: str,
        port: int,
        *,
        min_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        count: Count | None = None,
        limits: ListenerLimits | None = None,
        signing_secrets: Mapping[str, str] | None = None,
    ) -> None:
        """`signing_secrets`: provider name -> the secret its callbacks are signed with (the others are unsigned)."""
        self._urls = urls
        self._signed = {name: standardwebhooks.Webhook(value) for name, value in (signing_secrets or {}).items()}
        self._nudge = nudge
        self._min_interval = min_interval
        self._clock = clock
        self._count = count or (lambda _provider, _outcome: None)
        self._last_nudge: dict[int, float] = {}
        self._host = host
        app = application(client_max_size=BODY_MAX)
        app.router.add_post("/callbacks/{provider}/{job_id:[0-9]+}/{token}", self._handle)
        app.router.add_get("/callbacks", self._hello)  # for `likeness doctor`: the public URL reaches this bot
        self._listener = Listener(app, host, port, limits or ListenerLimits())

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def open_connections(self) -> int:
        return self._listener.open_connections

    async def start(self) -> None:
        await self._listener.start()
        log.info("provider callbacks on http://%s:%s/callbacks/", self._host, self.port)

    async def close(self) -> None:
        await self._listener.close()

    async def _hello(self, _request: web.Request) -> web.Response:
        return web.Response(status=200, text=HELLO)

    async def _handle(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        job_id = int(request.match_info["job_id"])
        if not self._urls.verify(provider, job_id, request.match_info["token"]):
            self._count(provider if _calls_back(provider) else "other", "refused")  # forged names make no new label
            log.warning("refused a callback for job %s from %s: wrong token", job_id, request.remote)
            return web.Response(status=404, text="not found\n")
        raw = await request.read()
        signed = self._signed.get(provider)
        if signed is not None:
            try:
                signed.verify(raw, dict(request.headers), json_parse=False)
            except standardwebhooks.WebhookVerificationError as exc:
                self._count(provider, "refused")
                log.warning("refused a callback for job %s from %s: %s", job_id, request.remote, exc)
                return web.Response(status=401, text="the signature does not match\n")
        try:
            payload = read_body(raw)
        except UnreadableBodyError as exc:
            self._count(provider, "malformed")
            log.warning(
                "refused a callback for job %s from %s: its body is not readable JSON (%s)", job_id, request.remote, exc
            )
            return web.Response(status=400, text="not a readable JSON body\n")
        if not worth_polling(provider, payload):
            self._count(provider, "progress")
            return web.Response(status=200, text="ok\n")
        now = self._clock()
        if now - self._last_nudge.get(job_id, -self._min_interval) >= self._min_interval:
            self._last_nudge[job_id] = now
            log.info("job %s: %s called back; polling it now", job_id, provider)
            self._count(provider, "polled")
            self._nudge(provider, job_id)
        else:
            self._count(provider, "duplicate")
        if len(self._last_nudge) > 10_000:  # forget old jobs; one nudge more for them is harmless
            self._last_nudge = {j: t for j, t in self._last_nudge.items() if now - t < self._min_interval}
        return web.Response(status=200, text="ok\n")
