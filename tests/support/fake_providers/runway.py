"""A fake Runway API on 127.0.0.1 over real HTTP, imitating providers.md §3.8.

It knows Runway's rules on its own (ratios, tag rule, limits) rather than importing the provider's constants,
so a wrong constant in bot/providers/runway.py shows up as a refused request.

- Every API call needs `Authorization: Bearer <api_key>` (else 401) and `X-Runway-Version: 2024-11-06`
  (missing or unknown: 400, as providers.md §3.8 expects; unconfirmed against the real API).
- `POST /v1/image_to_video` (gen4_turbo, gen4.5, veo3.1, veo3.1_fast, each with its own ratios, durations,
  frame positions and fields, as the official SDK types them: gen4.5 needs `promptText` and 2-10 whole seconds,
  first frame only; Veo takes `position: "last"`, `audio`, `negativePrompt`), `POST /v1/recipes/multi_shot_video`
  (custom or auto mode, 3-5 shots adding up to `duration` 5/10/15, a version, the recipe's ratios) and
  `POST /v1/text_to_image` validate like Runway and answer `{"id", "estimatedCost": {"credits"}}`; a bad field
  (or one the model does not take) gives 400 `{"error": "<field>: <reason>"}`. Asset URIs go through a fetch step: data URIs are decoded and
  sniffed; `http://`, IP hosts, redirects and generic content types are refused; other https URLs must be
  registered in `assets` (there is no network).
- A task moves one step per poll: PENDING (`pending_polls`) -> THROTTLED (`throttled_polls`, or while
  `concurrency` tasks are RUNNING) -> RUNNING (`running_polls`, progress rising) -> SUCCEEDED, or FAILED when
  a failure was queued with `fail_next`. Every poll of a SUCCEEDED task signs fresh output URLs that expire
  after `url_ttl` seconds (then 403, like a signed CDN URL).
- Task answers carry `estimatedCost: {credits}` while PENDING/THROTTLED/RUNNING and `cost: {credits}` once
  SUCCEEDED/FAILED/CANCELLED (R1): the full estimate on success and on a moderation failure (SAFETY.*, billed),
  0 on other failures and on a cancel; `charge_next(n, ...)` makes the next tasks charge n credits instead (a
  refund of unused credits). Credits per second are the fake's own table (the recipe's price is a guess: gen4.5's).
- `GET /v1/organization` answers the account's tier, `creditBalance` and daily usage (a free call: key checks).
- `DELETE /v1/tasks/{id}` cancels an unfinished task (it becomes CANCELLED) or deletes a finished one (404
  afterwards); it answers 204.
- Switches for tests: `rate_limit_next` (429s on creates, with `rate_limit_retry_after` and/or
  `rate_limit_retry_after_ms`), `server_errors_next` (5xx bursts on any API call), `stall_next` (answers after
  `stall_seconds`), `malformed_next` (a 200 that is not JSON),
  `output_errors_next` (503s from the result host), `output_size` / `output_chunked` (big results),
  `latency` (every answer).
- `requests` records every request, downloads included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import io
import ipaddress
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from PIL import Image, ImageDraw

VERSION = "2024-11-06"
VIDEO_RATIOS = frozenset({"1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"})
VIDEO_DURATIONS = frozenset({5, 10})


@dataclass(frozen=True)
class VideoModel:
    """One image_to_video model as the SDK's create params type it."""

    ratios: frozenset[str]
    durations: frozenset[int]
    credits_per_second: int
    positions: frozenset[str] = frozenset({"first"})
    prompt_required: bool = False
    duration_required: bool = False
    fields: frozenset[str] = frozenset()  # optional fields beyond model/promptImage/ratio/duration/promptText/seed
    audio_credits_per_second: int | None = None


_VEO_RATIOS = frozenset({"1280:720", "720:1280", "1080:1920", "1920:1080"})
VIDEO_MODELS: dict[str, VideoModel] = {
    "gen4_turbo": VideoModel(VIDEO_RATIOS, VIDEO_DURATIONS, 5, fields=frozenset({"contentModeration"})),
    "gen4.5": VideoModel(
        VIDEO_RATIOS,
        frozenset(range(2, 11)),
        12,
        prompt_required=True,
        duration_required=True,
        fields=frozenset({"contentModeration", "outputFormat", "proresProfile"}),
    ),
    "veo3.1": VideoModel(
        _VEO_RATIOS,
        frozenset({4, 6, 8}),
        20,
        positions=frozenset({"first", "last"}),
        fields=frozenset({"audio", "negativePrompt"}),
        audio_credits_per_second=40,
    ),
    "veo3.1_fast": VideoModel(
        _VEO_RATIOS,
        frozenset({4, 6, 8}),
        10,
        positions=frozenset({"first", "last"}),
        fields=frozenset({"audio", "negativePrompt"}),
        audio_credits_per_second=15,
    ),
}
RECIPE_RATIOS = frozenset({"1280:720", "720:1280", "960:960", "1920:1080", "1080:1920", "1440:1440"})
RECIPE_VERSIONS = frozenset({"2026-06", "unsafe-latest"})
RECIPE_DURATIONS = frozenset({5, 10, 15})
RECIPE_CREDITS_PER_SECOND = 12  # not documented: gen4.5's
IMAGE_CREDITS = {"gen4_image": 8, "gen4_image_turbo": 2}
IMAGE_MODELS = frozenset({"gen4_image", "gen4_image_turbo"})
IMAGE_RATIOS = frozenset(
    {
        *("1024:1024", "1080:1080", "1168:880", "1360:768", "1440:1080", "1080:1440", "1808:768"),
        *("1920:1080", "1080:1920", "2112:912", "1280:720", "720:1280", "720:720", "960:720", "720:960", "1680:720"),
    }
)
MAX_REFERENCES = 3
PROMPT_MAX_UNITS = 1000
TAG = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,15}$")
DATA_URI_MAX = 5 * 1024 * 1024
URL_MAX = 2048
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
BODY = web.RequestKey("runway_body", object)  # the request's parsed JSON body, read once by the middleware
FAILURES = {  # failureCode -> the human-readable `failure` Runway gives with it (paraphrased)
    "SAFETY.INPUT.TEXT": "The prompt text did not pass content moderation.",
    "SAFETY.INPUT.IMAGE": "An input image did not pass content moderation.",
    "SAFETY.OUTPUT.IMAGE": "The output did not pass content moderation.",
    "SAFETY.OUTPUT.VIDEO": "The output did not pass content moderation.",
    "INTERNAL.BAD_OUTPUT.CODE01": "The output did not meet our quality bar.",
    "INTERNAL": "An unexpected error occurred.",
    "ASSET.INVALID": "An input asset could not be processed.",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None


@dataclass(frozen=True)
class Asset:
    """What a registered https asset URL answers to Runway's fetcher."""

    content_type: str = "image/png"
    status: int = 200
    redirect: bool = False


@dataclass
class FakeTask:
    id: str
    endpoint: str  # "image_to_video" | "text_to_image" | "multi_shot_video"
    body: dict[str, Any]
    created_at: str
    credits: int = 0  # the estimate: what the task may charge
    final_credits: int | None = None  # what it charges when it ends (None: the fake's rule)
    failure_code: str | None = None
    status: str = "PENDING"
    polls: int = 0
    throttled: int = 0
    running: int = 0
    progress: float = 0.0
    deleted: bool = False


class Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@functools.cache
def sample_video() -> bytes:
    """A real (small) H.264 MP4, made with the bot's own renderer."""
    from bot.imaging.video import render_camera_move

    figure = Image.new("RGBA", (60, 120), (0, 0, 0, 0))
    ImageDraw.Draw(figure).rectangle((10, 10, 50, 110), fill=(200, 40, 40, 255))
    return render_camera_move([figure], duration=1.0, camera="static", caption="", size=(128, 72), fps=8)


@functools.cache
def sample_png() -> bytes:
    """A real PNG: a tiny 'character sheet' on white."""
    image = Image.new("RGB", (192, 108), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for index, colour in enumerate(((200, 40, 40), (40, 160, 60), (40, 60, 200))):
        draw.rectangle((20 + index * 60, 20, 50 + index * 60, 90), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeRunway:
    def __init__(
        self,
        *,
        api_key: str = "key_" + "ab" * 64,
        latency: float = 0.005,
        pending_polls: int = 1,
        throttled_polls: int = 0,
        running_polls: int = 2,
        concurrency: int | None = None,
        url_ttl: float = 3600.0,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.pending_polls = pending_polls
        self.throttled_polls = throttled_polls
        self.running_polls = running_polls
        self.concurrency = concurrency
        self.url_ttl = url_ttl
        # switches
        self.rate_limit_next = 0
        self.rate_limit_retry_after: str | None = None
        self.rate_limit_retry_after_ms: str | None = None
        self.server_errors_next = 0
        self.server_error_status = 503
        self.server_error_retry_after: str | None = None
        self.stall_next = 0
        self.stall_seconds = 1.0
        # the next N creates make (and would bill) a task but their answer never comes until stop(): a lost answer
        self.lose_create_answers = 0
        self._answers_lost = asyncio.Event()
        self.malformed_next = 0
        self.output_errors_next = 0  # the result host answers 503 this many times
        self.output_size: int | None = None  # pad results to this many bytes
        self.output_chunked = False  # send results without Content-Length
        self.credit_balance = 5000  # what GET /v1/organization reports
        self.assets: dict[str, Asset] = {}
        # what happened
        self.requests: list[Recorded] = []
        self.tasks: dict[str, FakeTask] = {}
        self.served: dict[str, int] = {"429": 0, "5xx": 0, "stalled": 0}
        self._failures: deque[str] = deque()
        self._charges: deque[int] = deque()
        self._secret = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ control

    def fail_next(self, *codes: str) -> None:
        """The next tasks created end FAILED with these failure codes, one each, in order."""
        self._failures.extend(codes)

    def charge_next(self, *credits: int) -> None:
        """The next tasks created charge these many credits when they end, one each, in order."""
        self._charges.extend(credits)

    @property
    def base_url(self) -> str:
        return self.url

    def count(self, method: str, prefix: str = "/v1/") -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.startswith(prefix))

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v1/")]

    async def start(self) -> str:
        await asyncio.to_thread(sample_video)  # rendered once, off the loop
        await asyncio.to_thread(sample_png)
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/image_to_video", self._image_to_video)
        app.router.add_post("/v1/text_to_image", self._text_to_image)
        app.router.add_post("/v1/recipes/multi_shot_video", self._multi_shot_video)
        app.router.add_get("/v1/tasks/{id}", self._get_task)
        app.router.add_get("/v1/organization", self._organization)
        app.router.add_delete("/v1/tasks/{id}", self._delete_task)
        app.router.add_get("/outputs/{id}/{name}", self._output)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        self._answers_lost.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeRunway:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        request[BODY] = body
        self.requests.append(Recorded(request.method, request.path, request.query_string, dict(request.headers), body))
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            if request.path.startswith("/v1/"):
                await self._gate(request)
            return await handler(request)
        except Refusal as refusal:
            return web.json_response({"error": refusal.message}, status=refusal.status, headers=refusal.headers)

    async def _gate(self, request: web.Request) -> None:
        """What every API call goes through: load shedding, stalls, auth, the version header."""
        if self.server_errors_next > 0:
            self.server_errors_next -= 1
            self.served["5xx"] += 1
            headers = {"Retry-After": self.server_error_retry_after} if self.server_error_retry_after else {}
            raise Refusal(self.server_error_status, "The service is temporarily overloaded.", headers)
        if self.stall_next > 0:
            self.stall_next -= 1
            self.served["stalled"] += 1
            await asyncio.sleep(self.stall_seconds)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise Refusal(401, "Invalid API key.")
        version = request.headers.get("X-Runway-Version")
        if version is None:
            raise Refusal(400, "X-Runway-Version: the header is required.")
        if version != VERSION:
            raise Refusal(400, f"X-Runway-Version: unknown version {version!r}.")

    def _rate_limit(self) -> None:
        if self.rate_limit_next <= 0:
            return
        self.rate_limit_next -= 1
        self.served["429"] += 1
        headers: dict[str, str] = {}
        if self.rate_limit_retry_after is not None:
            headers["Retry-After"] = self.rate_limit_retry_after
        if self.rate_limit_retry_after_ms is not None:
            headers["retry-after-ms"] = self.rate_limit_retry_after_ms
        raise Refusal(429, "You have exceeded your daily generation limit.", headers)

    def _malformed(self) -> web.Response | None:
        if self.malformed_next <= 0:
            return None
        self.malformed_next -= 1
        return web.Response(status=200, text="<html>upstream hiccup</html>", content_type="text/html")

    @staticmethod
    def _body(request_body: object) -> dict[str, Any]:
        if not isinstance(request_body, dict):
            raise Refusal(400, "body: must be a JSON object.")
        return request_body

    def _create(self, endpoint: str, body: dict[str, Any], credits: int) -> web.Response:
        task_id = str(uuid.uuid4())
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        failure = self._failures.popleft() if self._failures else None
        final = self._charges.popleft() if self._charges else None
        self.tasks[task_id] = FakeTask(
            task_id, endpoint, body, created, credits=credits, final_credits=final, failure_code=failure
        )
        return web.json_response({"id": task_id, "estimatedCost": {"credits": credits}})

    # ------------------------------------------------------------------ creates

    async def _image_to_video(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request[BODY])
        if (malformed := self._malformed()) is not None:
            return malformed
        name = body.get("model")
        model = VIDEO_MODELS.get(name) if isinstance(name, str) else None
        if model is None or not isinstance(name, str):
            raise Refusal(400, f"model: must be one of {', '.join(sorted(VIDEO_MODELS))}.")
        known = {"model", "promptImage", "ratio", "duration", "promptText", "seed", *model.fields}
        for key in body:
            if key not in known:
                raise Refusal(400, f"{key}: not a field of {name}.")
        self._check_prompt_image(name, model, body.get("promptImage"))
        if body.get("ratio") not in model.ratios:
            raise Refusal(400, f"ratio: must be one of {', '.join(sorted(model.ratios))}.")
        duration = body.get("duration")
        if duration is None and not model.duration_required:
            duration = max(model.durations) if name.startswith("veo") else 5
        if isinstance(duration, bool) or duration not in model.durations:
            raise Refusal(400, f"duration: {name} takes {', '.join(map(str, sorted(model.durations)))} seconds.")
        self._check_prompt(body.get("promptText"), required=model.prompt_required)
        audio = body.get("audio", False)
        if not isinstance(audio, bool):
            raise Refusal(400, "audio: must be a boolean.")
        negative = body.get("negativePrompt")
        if negative is not None and (not isinstance(negative, str) or not negative.strip()):
            raise Refusal(400, "negativePrompt: a non-empty string.")
        self._check_seed(body.get("seed"))
        per_second = model.audio_credits_per_second if audio and model.audio_credits_per_second else None
        credits = (per_second or model.credits_per_second) * duration
        self._rate_limit()
        created = self._create("image_to_video", body, credits)
        if self.lose_create_answers > 0:
            self.lose_create_answers -= 1
            await self._answers_lost.wait()  # the task exists; the client gives up waiting for the answer
        return created

    async def _text_to_image(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request[BODY])
        if (malformed := self._malformed()) is not None:
            return malformed
        model = body.get("model")
        if model not in IMAGE_MODELS:
            raise Refusal(400, f"model: must be one of {', '.join(sorted(IMAGE_MODELS))}.")
        self._check_prompt(body.get("promptText"), required=True)
        if body.get("ratio") not in IMAGE_RATIOS:
            raise Refusal(400, "ratio: not a supported ratio for this model.")
        references = body.get("referenceImages", [])
        if not isinstance(references, list):
            raise Refusal(400, "referenceImages: must be a list.")
        if len(references) > MAX_REFERENCES:
            raise Refusal(400, f"referenceImages: at most {MAX_REFERENCES} reference images.")
        if model == "gen4_image_turbo" and not references:
            raise Refusal(400, "referenceImages: gen4_image_turbo needs 1 to 3 reference images.")
        seen: set[str] = set()
        for index, reference in enumerate(references):
            where = f"referenceImages[{index}]"
            if not isinstance(reference, dict):
                raise Refusal(400, f"{where}: must be an object with a uri.")
            tag = reference.get("tag")
            if tag is not None:
                if not isinstance(tag, str) or not TAG.match(tag):
                    raise Refusal(
                        400,
                        f"{where}.tag: 3-16 characters, starting with a letter, only letters, digits and underscores.",
                    )
                if tag.casefold() in seen:
                    raise Refusal(400, f"{where}.tag: duplicate tag {tag!r}.")
                seen.add(tag.casefold())
            self._check_asset(f"{where}.uri", reference.get("uri"))
        self._check_seed(body.get("seed"))
        self._rate_limit()
        return self._create("text_to_image", body, IMAGE_CREDITS[model])

    def _check_prompt_image(self, name: str, model: VideoModel, prompt_image: object) -> None:
        """A URI, or `[{uri, position}]`: a first frame, and a last one where the model takes it."""
        if isinstance(prompt_image, str):
            self._check_asset("promptImage", prompt_image)
            return
        if not isinstance(prompt_image, list) or not 1 <= len(prompt_image) <= len(model.positions):
            raise Refusal(400, f"promptImage: a URI or {len(model.positions)} {{uri, position}} at most.")
        positions: list[str] = []
        for index, item in enumerate(prompt_image):
            if not isinstance(item, dict):
                raise Refusal(400, f"promptImage[{index}]: must be an object with uri and position.")
            position = item.get("position")
            if position not in model.positions:
                allowed = " or ".join(repr(p) for p in sorted(model.positions))
                raise Refusal(400, f"promptImage[{index}].position: {name} only accepts {allowed}.")
            if position in positions:
                raise Refusal(400, f"promptImage[{index}].position: {position!r} is given twice.")
            positions.append(position)
            self._check_asset(f"promptImage[{index}].uri", item.get("uri"))
        if "first" not in positions:
            raise Refusal(400, "promptImage: a first frame is required (a last frame alone is not supported).")

    async def _multi_shot_video(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request[BODY])
        if (malformed := self._malformed()) is not None:
            return malformed
        mode = body.get("mode")
        if mode not in ("auto", "custom"):
            raise Refusal(400, "mode: must be 'auto' or 'custom'.")
        known = {
            "mode",
            "version",
            "duration",
            "ratio",
            "audio",
            "firstFrame",
            "shots" if mode == "custom" else "prompt",
        }
        for key in body:
            if key not in known:
                raise Refusal(400, f"{key}: not a field of the {mode} multi-shot recipe.")
        if body.get("version") not in RECIPE_VERSIONS:
            raise Refusal(400, f"version: must be one of {', '.join(sorted(RECIPE_VERSIONS))}.")
        duration = body.get("duration", 10)
        if isinstance(duration, bool) or duration not in RECIPE_DURATIONS:
            raise Refusal(400, "duration: must be 5, 10 or 15.")
        if body.get("ratio", "1280:720") not in RECIPE_RATIOS:
            raise Refusal(400, f"ratio: must be one of {', '.join(sorted(RECIPE_RATIOS))}.")
        if not isinstance(body.get("audio", False), bool):
            raise Refusal(400, "audio: must be a boolean.")
        if mode == "auto":
            self._check_prompt(body.get("prompt"), required=True, field="prompt")
        else:
            shots = body.get("shots")
            if not isinstance(shots, list) or not 3 <= len(shots) <= 5:
                raise Refusal(400, "shots: custom mode takes 3 to 5 shots.")
            total = 0
            for index, shot in enumerate(shots):
                if not isinstance(shot, dict) or set(shot) != {"prompt", "duration"}:
                    raise Refusal(400, f"shots[{index}]: must be {{prompt, duration}}.")
                self._check_prompt(shot["prompt"], required=True, field=f"shots[{index}].prompt")
                seconds = shot["duration"]
                if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
                    raise Refusal(400, f"shots[{index}].duration: a whole number of seconds, at least 1.")
                total += seconds
            if total != duration:
                raise Refusal(400, f"shots: the shots' durations add up to {total}, not duration {duration}.")
        first = body.get("firstFrame")
        if first is not None:
            if not isinstance(first, dict) or set(first) != {"uri"}:
                raise Refusal(400, "firstFrame: must be {uri}.")
            self._check_asset("firstFrame.uri", first["uri"])
        self._rate_limit()
        return self._create("multi_shot_video", body, RECIPE_CREDITS_PER_SECOND * duration)

    @staticmethod
    def _check_prompt(prompt: object, *, required: bool, field: str = "promptText") -> None:
        if prompt is None and not required:
            return
        if not isinstance(prompt, str) or not prompt.strip():
            raise Refusal(400, f"{field}: a non-empty string is required.")
        if utf16_units(prompt) > PROMPT_MAX_UNITS:
            raise Refusal(400, f"{field}: must be at most {PROMPT_MAX_UNITS} characters.")

    @staticmethod
    def _check_seed(seed: object) -> None:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 4294967295):
            raise Refusal(400, "seed: must be an integer between 0 and 4294967295.")

    def _check_asset(self, field_name: str, uri: object) -> None:
        """Runway's asset fetch step (§3.5, §3.6)."""
        if not isinstance(uri, str) or not uri:
            raise Refusal(400, f"{field_name}: a URI is required.")
        if uri.startswith("data:"):
            self._check_data_uri(field_name, uri)
            return
        if uri.startswith("runway://"):
            return
        parts = urlsplit(uri)
        if parts.scheme != "https":
            raise Refusal(400, f"{field_name}: only HTTPS URLs are allowed.")
        if len(uri) > URL_MAX:
            raise Refusal(400, f"{field_name}: the URL is longer than {URL_MAX} characters.")
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(parts.hostname or "")
            raise Refusal(400, f"{field_name}: the URL must reference a domain name, not an IP address.")
        asset = self.assets.get(uri)
        if asset is None:
            raise Refusal(400, f"{field_name}: failed to fetch asset.")
        if asset.redirect:
            raise Refusal(400, f"{field_name}: failed to fetch asset: redirects are not followed.")
        if asset.status != 200:
            raise Refusal(400, f"{field_name}: failed to fetch asset (HTTP {asset.status}).")
        if asset.content_type not in IMAGE_TYPES:
            raise Refusal(400, f"{field_name}: unsupported Content-Type {asset.content_type!r}.")

    @staticmethod
    def _check_data_uri(field_name: str, uri: str) -> None:
        if len(uri) > DATA_URI_MAX:
            raise Refusal(400, f"{field_name}: data URIs may be at most 5 MB.")
        match = re.match(r"^data:([\w/+.-]+);base64,(.*)$", uri, re.DOTALL)
        if match is None:
            raise Refusal(400, f"{field_name}: invalid data URI.")
        mime, payload = match.groups()
        if mime not in IMAGE_TYPES:
            raise Refusal(400, f"{field_name}: unsupported asset type {mime!r}.")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal(400, f"{field_name}: invalid data URI (bad base64).") from None
        sniffed = (
            "image/png"
            if data.startswith(b"\x89PNG\r\n\x1a\n")
            else "image/jpeg"
            if data.startswith(b"\xff\xd8\xff")
            else "image/webp"
            if data[:4] == b"RIFF" and data[8:12] == b"WEBP"
            else None
        )
        if sniffed != mime:
            raise Refusal(400, f"{field_name}: invalid data URI (the content is not {mime}).")

    # ------------------------------------------------------------------ tasks

    def _task(self, request: web.Request) -> FakeTask:
        task = self.tasks.get(request.match_info["id"])
        if task is None or task.deleted:
            raise Refusal(404, "Task not found.")
        return task

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if (malformed := self._malformed()) is not None:
            return malformed
        self._advance(task)
        answer: dict[str, Any] = {"id": task.id, "createdAt": task.created_at, "status": task.status}
        if task.status in ("PENDING", "THROTTLED", "RUNNING"):
            answer["estimatedCost"] = {"credits": task.credits}
        else:
            answer["cost"] = {"credits": self._charged(task)}
        if task.status == "RUNNING":
            answer["progress"] = task.progress
        elif task.status == "FAILED":
            code = task.failure_code or "INTERNAL"
            answer["failure"] = FAILURES.get(code, "The task failed.")
            answer["failureCode"] = code
        elif task.status == "SUCCEEDED":
            answer["output"] = [self._signed_url(task)]
        return web.json_response(answer)

    @staticmethod
    def _charged(task: FakeTask) -> int:
        if task.final_credits is not None:
            return task.final_credits
        if task.status == "SUCCEEDED" or (task.status == "FAILED" and (task.failure_code or "").startswith("SAFETY")):
            return task.credits  # moderated generations cost the same credits
        return 0

    async def _organization(self, request: web.Request) -> web.StreamResponse:
        """The account's tier, credits and today's usage (the shape of Runway's skills docs)."""
        used = sum(1 for task in self.tasks.values() if task.status == "SUCCEEDED")
        limits = {"maxConcurrentGenerations": self.concurrency or 2, "maxDailyGenerations": 200}
        return web.json_response(
            {
                "tier": {"maxMonthlyCreditSpend": 10000, "models": {"gen4_turbo": limits, "gen4_image": limits}},
                "creditBalance": self.credit_balance,
                "usage": {"models": {"gen4_turbo": {"dailyGenerations": used}}},
            }
        )

    def _advance(self, task: FakeTask) -> None:
        """One step of the lifecycle per poll."""
        if task.status not in ("PENDING", "THROTTLED", "RUNNING"):
            return
        task.polls += 1
        if task.status in ("PENDING", "THROTTLED"):
            if task.polls <= self.pending_polls:
                return
            running = sum(1 for other in self.tasks.values() if other.status == "RUNNING")
            if task.throttled < self.throttled_polls or (self.concurrency is not None and running >= self.concurrency):
                task.throttled += 1
                task.status = "THROTTLED"
                return
            task.status = "RUNNING"
        task.running += 1
        if task.running <= self.running_polls:
            task.progress = round(task.running / (self.running_polls + 1), 3)
            return
        task.status = "FAILED" if task.failure_code else "SUCCEEDED"

    async def _delete_task(self, request: web.Request) -> web.StreamResponse:
        task = self._task(request)
        if task.status in ("PENDING", "THROTTLED", "RUNNING"):
            task.status = "CANCELLED"
        else:
            task.deleted = True
        return web.Response(status=204)

    # ------------------------------------------------------------------ results

    def _output_name(self, task: FakeTask) -> str:
        return "0.png" if task.endpoint == "text_to_image" else "0.mp4"

    def _signature(self, task_id: str, name: str, expires: str) -> str:
        message = f"{task_id}/{name}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _signed_url(self, task: FakeTask) -> str:
        name = self._output_name(task)
        expires = f"{time.time() + self.url_ttl:.3f}"
        return f"{self.url}/outputs/{task.id}/{name}?exp={expires}&sig={self._signature(task.id, name, expires)}"

    async def _output(self, request: web.Request) -> web.StreamResponse:
        if self.output_errors_next > 0:
            self.output_errors_next -= 1
            return web.Response(status=503, text="Service Unavailable")
        task_id, name = request.match_info["id"], request.match_info["name"]
        expires, signature = request.query.get("exp", ""), request.query.get("sig", "")
        valid = hmac.compare_digest(signature, self._signature(task_id, name, expires))
        try:
            expired = float(expires) < time.time()
        except ValueError:
            expired = True
        if not valid or expired:
            text = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return web.Response(status=403, text=text, content_type="application/xml")
        task = self.tasks.get(task_id)
        if task is None or task.status != "SUCCEEDED":
            return web.Response(status=404)
        video = task.endpoint != "text_to_image"
        data = sample_video() if video else sample_png()
        if self.output_size is not None and self.output_size > len(data):
            data += bytes(self.output_size - len(data))
        content_type = "video/mp4" if video else "image/png"
        if not self.output_chunked:
            return web.Response(body=data, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 64 * 1024):
            await response.write(data[start : start + 64 * 1024])
        await response.write_eof()
        return response


@contextlib.contextmanager
def in_thread(fake: FakeRunway) -> Iterator[FakeRunway]:
    """Run the fake on its own event loop in its own thread (so a bench's CPU time is only the client's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-runway", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=60)
        yield fake
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
