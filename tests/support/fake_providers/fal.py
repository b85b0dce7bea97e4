"""A fake fal.ai queue server on 127.0.0.1, over real HTTP, imitating reference/providers.md §2.9.

- `Authorization: Key <key>` on every queue call (401 otherwise); result files are public, like fal's CDN.
- `POST /{owner}/{name}[/subpath]` queues a request and answers `request_id` with `status_url`, `response_url` and
  `cancel_url` that leave out the subpath, under `url_prefix` (set it to prove a client follows the URLs it was
  given instead of rebuilding them).
- The status moves with the polls: IN_QUEUE (`queue_position` counting down) for `queue_polls` polls, IN_PROGRESS
  for `progress_polls`, then COMPLETED (`metrics.inference_time`). Every status answer is HTTP 200 (fal's queue
  OpenAPI) and carries a `logs` key (the official client reads `data["logs"]`): a list with `?logs=1` (or the
  client's `?logs=true`), else null. A failed request is COMPLETED with `error`/`error_type`, and its result
  answers with the HTTP error and fal's body.
- The input is checked like fal does (required prompt, duration and aspect enums as strings, at most 7 elements +
  images + start image, 1..3 reference images per element, each image >= 300 px with aspect 0.4..2.5; on O3 also
  `prompt` or `multi_prompt` but not both, each shot's duration a string enum adding up to the clip's, the frames,
  `generate_audio` a boolean): by default the problems surface at COMPLETED, as a 422 `detail[]` on the result
  (what fal's backend does); `validate_at_submit` refuses at submit. Each problem has fal's documented shape:
  `loc`, `msg`, `type`, `url`, and `input` (and `ctx` where it says a limit).
- Result files: a real small MP4 for clips, a real PNG sheet (three figures side by side on white) for images,
  hosted under `/fal-media/files/...`, expirable on demand.
- Switches for a test: `fail_next`, `rate_limit_submits` (+ `retry_after`), `rate_limit_polls`, `server_errors`,
  `storm()`, `result_size`, `chunked_results`, `expire_files()`, `foreign_urls`, `locked_balance`, `stall_next`,
  `flag_nsfw`, `latency`. Every request is recorded in `requests`.
- Webhooks: a submit with `?fal_webhook=<url>` is, when `webhook_after` is set, completed that many seconds later
  whatever the polls, and its end is POSTed to the URL as fal does (`{request_id, gateway_request_id, status:
  "OK"|"ERROR", payload, error}`); each delivery's URL and answer status land in `webhook_deliveries`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import ClientError, ClientSession, web
from PIL import Image, ImageDraw

from bot.imaging import video

KEY = "fal-test-key-0123456789abcdef"
MEDIA_PATH = "/fal-media/files"
RESULT_WAIT_MSG = "Request is still in progress"

O1_DURATIONS = tuple(str(d) for d in range(3, 11))
O3_DURATIONS = tuple(str(d) for d in range(3, 16))
SHOT_TYPES = ("customize", "intelligent")
ERRORS_URL = "https://docs.fal.ai/errors"
ASPECTS = ("16:9", "9:16", "1:1")
SEEDREAM_SIZES = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
    "auto",
    "auto_2K",
    "auto_4K",
)
VIDEO_ENDPOINTS = {
    "fal-ai/kling-video/o1/reference-to-video": O1_DURATIONS,
    "fal-ai/kling-video/o1/standard/reference-to-video": O1_DURATIONS,
    "fal-ai/kling-video/o3/standard/reference-to-video": O3_DURATIONS,
    "fal-ai/kling-video/o3/pro/reference-to-video": O3_DURATIONS,
    "fal-ai/kling-video/o3/4k/reference-to-video": O3_DURATIONS,
    "fal-ai/kling-video/v1.6/standard/elements": ("5", "10"),
}
O3_ENDPOINTS = frozenset(endpoint for endpoint in VIDEO_ENDPOINTS if "/o3/" in endpoint)
IMAGE_ENDPOINTS = (
    "fal-ai/bytedance/seedream/v4/edit",
    "fal-ai/nano-banana/edit",
    "fal-ai/nano-banana-2/edit",
    "fal-ai/flux-pro/kontext/multi",
)
SHEET_COLOURS = ((210, 50, 50), (50, 170, 60), (50, 60, 210))


# --------------------------------------------------------------------------------------------------------------
# Media


def figure(draw: ImageDraw.ImageDraw, left: int, top: int, width: int, height: int, colour: tuple[int, ...]) -> None:
    """A simple standing figure: a head, a body and two legs, in a width x height box."""
    centre = left + width // 2
    head = width // 2
    draw.ellipse((centre - head // 2, top, centre + head // 2, top + head), fill=colour)
    body_bottom = top + head + (height - head) * 3 // 5
    draw.rectangle((left, top + head, left + width, body_bottom), fill=colour)
    leg = width // 3
    draw.rectangle((centre - leg, body_bottom, centre - 6, top + height), fill=(40, 40, 60))
    draw.rectangle((centre + 6, body_bottom, centre + leg, top + height), fill=(40, 40, 60))


@functools.cache
def sample_png() -> bytes:
    """A 16:9 sheet on flat white with three figures side by side, well apart (a splitter finds 3 figures)."""
    width, height = 1344, 768
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    slot = width // 3
    for index, colour in enumerate(SHEET_COLOURS):
        figure(draw, index * slot + slot // 2 - 90, 120, 180, 540, colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@functools.cache
def sample_mp4() -> bytes:
    """A real one-second H.264 MP4 (320x180) of a figure, rendered with the bot's own video code."""
    cutout = Image.new("RGBA", (240, 660), (0, 0, 0, 0))
    figure(ImageDraw.Draw(cutout), 30, 30, 180, 600, (*SHEET_COLOURS[0], 255))
    return video.render_camera_move([cutout], duration=1.0, camera="push_in", caption="", size=(320, 180), fps=12)


# --------------------------------------------------------------------------------------------------------------
# State


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any  # the parsed JSON body, or None
    status: int = 0  # what the fake answered


@dataclass
class Failure:
    """How a request ends when it fails: its status says `error`/`error_type`, its result answers `status`."""

    status: int = 422
    detail: list[dict[str, Any]] | str = field(
        default_factory=lambda: [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
    )
    error: str | None = None  # the status's `error`; "Invalid status code: <status>" when None
    error_type: str | None = None
    request_id_header: bool = True  # False: the 5xx looks like an ingress error (no x-fal-request-id)
    in_status: bool = True  # False: the status says COMPLETED with no error; only the result tells

    def status_error(self) -> str:
        return self.error or f"Invalid status code: {self.status}"


def content_policy(field_name: str = "prompt") -> Failure:
    return Failure(
        status=422,
        detail=[
            {
                "loc": ["body", field_name],
                "msg": "The content was flagged by a content checker.",
                "type": "content_policy_violation",
                "url": "https://docs.fal.ai/errors#content_policy_violation",
            }
        ],
    )


def runner_error() -> Failure:
    return Failure(
        status=500,
        detail="Internal server error",
        error="Internal server error",
        error_type="runner_server_error",
        request_id_header=True,
    )


@dataclass
class QueuedRequest:
    request_id: str
    app: str  # owner/name: what the status and result URLs keep
    endpoint: str  # the full endpoint id, subpath included
    body: dict[str, Any]
    state: Literal["queued", "running", "done", "canceled"] = "queued"
    polls: int = 0
    failure: Failure | None = None
    output: dict[str, Any] | None = None
    webhook: str | None = None  # ?fal_webhook= of the submit


@dataclass
class MediaFile:
    data: bytes
    content_type: str
    expired: bool = False


def _now() -> str:
    """A log entry's timestamp, as fal writes it (ISO 8601, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"


def app_id(endpoint: str) -> str:
    parts = endpoint.split("/")
    return "/".join(parts[: 3 if parts[0] in ("workflows", "comfy") else 2])


# --------------------------------------------------------------------------------------------------------------
# Input checks (what fal's schema and backend refuse)


def problem(loc: list[str | int], msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    """One `detail[]` entry as fal documents it (model-apis/errors): `loc`, `msg`, `type`, `url`, and `input` /
    `ctx` when given."""
    return {"loc": ["body", *loc], "msg": msg, "type": kind, "url": f"{ERRORS_URL}#{kind}", **extra}


def check_image(loc: list[str | int], value: object) -> list[dict[str, Any]]:
    """A URL field: an http(s) URL is taken as is; a data URI must hold an image within Kling's limits."""
    if not isinstance(value, str):
        return [problem(loc, "Input should be a valid string", "string_type")]
    if value.startswith(("http://", "https://")):
        return []
    if not value.startswith("data:"):
        return [problem(loc, "Failed to download the file.", "file_download_error")]
    header, _, payload = value.partition(",")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except (binascii.Error, ValueError, OSError):
        return [problem(loc, "Failed to load the image.", "image_load_error")]
    if len(data) > 10 * 1024 * 1024:
        return [problem(loc, "File is too large.", "file_too_large", ctx={"max_size": 10 * 1024 * 1024})]
    if min(width, height) < 300:
        return [problem(loc, "Image is too small.", "image_too_small", ctx={"min_width": 300, "min_height": 300})]
    if not 0.4 <= width / height <= 2.5:
        return [problem(loc, "Image aspect ratio is out of range.", "invalid_aspect_ratio", ctx={"min": 0.4})]
    return []


def check_prompt(body: dict[str, Any], *, required: bool = True) -> list[dict[str, Any]]:
    prompt = body.get("prompt")
    if prompt is None:
        return [problem(["prompt"], "field required", "missing")] if required else []
    if not isinstance(prompt, str):
        return [problem(["prompt"], "Input should be a valid string", "string_type")]
    if not prompt.strip():
        return [problem(["prompt"], "String should have at least 1 character", "string_too_short")]
    if len(prompt) > 2500:
        return [problem(["prompt"], "String should have at most 2500 characters", "string_too_long")]
    return []


def check_enum(
    body: dict[str, Any], name: str, allowed: tuple[str, ...], loc: list[str | int] | None = None
) -> list[dict[str, Any]]:
    """A string enum (fal's `duration` is "3".."15", so the number 5 is refused like "16": a Literal)."""
    if name not in body or (isinstance(body[name], str) and body[name] in allowed):
        return []
    expected = ", ".join(f"'{value}'" for value in allowed)
    return [
        problem(
            [*(loc or []), name],
            f"Input should be {expected}",
            "literal_error",
            ctx={"expected": expected},
            input=body[name],
        )
    ]


def check_multi_prompt(body: dict[str, Any], shots: object) -> list[dict[str, Any]]:
    """O3's storyboard: 1..6 `{prompt, duration}`, each duration a string enum, the sum the clip's duration."""
    problems: list[dict[str, Any]] = []
    if body.get("prompt") is not None:
        problems.append(
            problem(["prompt"], "Either prompt or multi_prompt must be provided, but not both.", "value_error")
        )
    if not isinstance(shots, list) or not shots:
        return [*problems, problem(["multi_prompt"], "List should have at least 1 item", "too_short", input=shots)]
    if len(shots) > 6:
        problems.append(problem(["multi_prompt"], "List should have at most 6 items", "too_long"))
    total = 0
    for index, shot in enumerate(shots):
        if not isinstance(shot, dict):
            problems.append(problem(["multi_prompt", index], "Input should be a valid dictionary", "dict_type"))
            continue
        text = shot.get("prompt")
        if not isinstance(text, str) or not text.strip():
            problems.append(problem(["multi_prompt", index, "prompt"], "field required", "missing", input=text))
        elif len(text) > 512:
            problems.append(
                problem(["multi_prompt", index, "prompt"], "String should have at most 512 characters", "too_long")
            )
        given = {"duration": "5", **shot}  # fal's default
        wrong = check_enum(given, "duration", O3_DURATIONS, ["multi_prompt", index])
        problems += wrong
        if not wrong:
            total += int(given["duration"])
    clip = body.get("duration", "5")
    if not problems and isinstance(clip, str) and clip.isdigit() and total != int(clip):
        problems.append(
            problem(
                ["multi_prompt"],
                f"The shots' durations add up to {total} s; they must equal the video's duration ({clip} s).",
                "value_error",
            )
        )
    return problems


def validate(endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    if endpoint in VIDEO_ENDPOINTS and endpoint.endswith("/elements"):
        return validate_elements_v16(body)
    if endpoint in VIDEO_ENDPOINTS:
        return validate_reference(endpoint, body)
    return validate_image(endpoint, body)


def validate_reference(endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    o3 = endpoint in O3_ENDPOINTS  # O1 has no storyboard, frames or audio: fal ignores unknown fields there
    if o3 and body.get("multi_prompt") is not None:
        problems = check_multi_prompt(body, body["multi_prompt"])
        problems += check_enum(body, "shot_type", SHOT_TYPES)
    else:
        problems = check_prompt(body)
    if o3:
        for name in ("start_image_url", "end_image_url"):
            if body.get(name) is not None:
                problems += check_image([name], body[name])
        if "generate_audio" in body and not isinstance(body["generate_audio"], bool):
            problems.append(
                problem(
                    ["generate_audio"], "Input should be a valid boolean", "bool_type", input=body["generate_audio"]
                )
            )
    problems += check_enum(body, "duration", VIDEO_ENDPOINTS[endpoint])
    problems += check_enum(body, "aspect_ratio", ASPECTS)
    elements = body.get("elements") or []
    image_urls = body.get("image_urls") or []
    if not isinstance(elements, list) or not isinstance(image_urls, list):
        return [*problems, problem(["elements"], "Input should be a valid list", "list_type")]
    total = len(elements) + len(image_urls) + (1 if body.get("start_image_url") else 0)
    if total > 7:
        problems.append(
            problem(["elements"], "Maximum 7 total (elements + reference images + start image).", "too_long")
        )
    for index, element in enumerate(elements):
        if not isinstance(element, dict) or "frontal_image_url" not in element:
            problems.append(problem(["elements", index, "frontal_image_url"], "field required", "missing"))
            continue
        problems += check_image(["elements", index, "frontal_image_url"], element["frontal_image_url"])
        references = element.get("reference_image_urls") or []
        if not isinstance(references, list) or not 1 <= len(references) <= 3:
            # what fal answers to a frontal image with no reference images (providers-2026.md §1.2): Kling's own
            # words passed on, in a 422 `detail[]`
            problems.append(
                problem(
                    ["elements", index, "reference_image_urls"],
                    "elementReferList: size must be between 1 and 3",
                    "invalid_value",
                    input=element.get("reference_image_urls"),
                    ctx={"min_length": 1, "max_length": 3},
                )
            )
            continue
        for number, url in enumerate(references):
            problems += check_image(["elements", index, "reference_image_urls", number], url)
    for index, url in enumerate(image_urls):
        problems += check_image(["image_urls", index], url)
    return problems


def validate_elements_v16(body: dict[str, Any]) -> list[dict[str, Any]]:
    problems = check_prompt(body)
    problems += check_enum(body, "duration", ("5", "10"))
    problems += check_enum(body, "aspect_ratio", ASPECTS)
    urls = body.get("input_image_urls")
    if not isinstance(urls, list) or not urls:
        return [*problems, problem(["input_image_urls"], "field required", "missing")]
    if len(urls) > 4:
        problems.append(problem(["input_image_urls"], "List should have at most 4 items", "too_long"))
    for index, url in enumerate(urls):
        problems += check_image(["input_image_urls", index], url)
    return problems


def validate_image(endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    problems = check_prompt(body)
    urls = body.get("image_urls")
    if not isinstance(urls, list) or not urls:
        return [*problems, problem(["image_urls"], "field required", "missing")]
    if "seedream" in endpoint:
        if len(urls) > 10:
            problems.append(problem(["image_urls"], "List should have at most 10 items", "too_long"))
        size = body.get("image_size")
        if isinstance(size, dict):
            width, height = size.get("width", 0), size.get("height", 0)
            if not (isinstance(width, int) and isinstance(height, int)) or width * height < 921_600:
                problems.append(problem(["image_size"], "Image area must be at least 921600 pixels", "value_error"))
            elif max(width, height) > 4096:
                problems.append(problem(["image_size"], "Each side must be at most 4096 pixels", "value_error"))
        elif size is not None and size not in SEEDREAM_SIZES:
            problems.append(problem(["image_size"], "Input should be a valid image size", "literal_error"))
    for index, url in enumerate(urls):
        problems += check_image(["image_urls", index], url)
    return problems


# --------------------------------------------------------------------------------------------------------------
# The server


_REQUEST_PATH = re.compile(r"^(?P<app>.+)/requests/(?P<id>[^/]+)(?P<tail>/status|/cancel)?$")


class FakeFal:
    def __init__(self, *, key: str = KEY, latency: float = 0.005, url_prefix: str = "") -> None:
        self.key = key
        self.latency = latency
        self.url_prefix = url_prefix.rstrip("/")  # the returned URLs live under it; submits do not
        # the lifecycle
        self.queue_polls = 2
        self.progress_polls = 1
        # switches
        self.validate_at_submit = False
        self.fail_next: list[Failure] = []  # the next submitted requests end with these failures, in order
        self.rate_limit_submits = 0
        self.rate_limit_polls = 0
        self.retry_after: str | None = None  # the Retry-After header sent with 429s
        self.server_errors = 0  # the next N queue calls get an ingress 502 (no x-fal-request-id)
        self.result_size: int | None = None  # pad result files to this many bytes
        self.chunked_results = False  # stream result files without Content-Length
        self.foreign_urls = False  # answer submits with URLs on another host
        self.locked_balance = False
        self.flag_nsfw = False  # image outputs come back flagged by the safety checker
        self.stall_next = 0.0  # extra seconds before the next queue answer (client timeouts)
        # the next N submits are queued (and would be billed) but their answer never comes until stop(): a lost answer
        self.lose_submit_answers = 0
        self._answers_lost = asyncio.Event()
        self.drip_downloads = 0  # the next N result downloads send one byte every `drip_seconds` (a slow host)
        self.drip_seconds = 0.05
        self.webhook_after: float | None = None  # seconds after a submit with a webhook that it completes
        self.webhook_deliveries: list[tuple[str, int]] = []  # (url, the receiver's status)
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._storm_until = 0.0
        self._storm_pass_every = 10
        self._storm_count = 0
        # what happened
        self.queued: dict[str, QueuedRequest] = {}
        self.files: dict[str, MediaFile] = {}
        self.requests: list[Recorded] = []
        self.rate_limited = 0  # 429s sent
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(sample_mp4)  # render once, before any timing
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._answers_lost.set()
        for task in self._webhook_tasks:
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ helpers for tests

    def storm(self, seconds: float, pass_every: int = 10) -> None:
        """For `seconds`, answer submits with 429 except every `pass_every`-th."""
        self._storm_until = time.monotonic() + seconds
        self._storm_pass_every = max(1, pass_every)
        self._storm_count = 0

    def expire_files(self) -> None:
        for media in self.files.values():
            media.expired = True

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not r.path.startswith(MEDIA_PATH)]

    def submits(self) -> list[Recorded]:
        return [r for r in self.api_requests() if r.method == "POST"]

    def accepted_submits(self) -> list[Recorded]:
        return [r for r in self.submits() if r.status == 200]

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        raw = await request.read()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        record = Recorded(request.method, request.path, dict(request.query), request.headers.get("Authorization"), body)
        self.requests.append(record)
        response = await self._answer(request, body, raw)
        record.status = response.status
        return response

    async def _answer(self, request: web.Request, body: Any, raw: bytes) -> web.StreamResponse:
        if request.path.startswith(MEDIA_PATH + "/"):
            return await self._media(request)
        await asyncio.sleep(self.latency)
        if self.stall_next:
            stall, self.stall_next = self.stall_next, 0.0
            await asyncio.sleep(stall)
        if request.headers.get("Authorization") != f"Key {self.key}":
            return web.json_response({"detail": "Authentication is required to access this application."}, status=401)
        if self.locked_balance:
            return web.json_response(
                {
                    "detail": "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
                },
                status=403,
            )
        if self.server_errors > 0:
            self.server_errors -= 1
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        path = request.path
        if self.url_prefix and path.startswith(self.url_prefix + "/"):
            path = path[len(self.url_prefix) :]
            prefixed = True
        else:
            prefixed = not self.url_prefix
        match = _REQUEST_PATH.match(path.lstrip("/"))
        if match is not None:
            queued = self.queued.get(match["id"])
            if queued is None or queued.app != match["app"] or not prefixed:
                return web.json_response({"detail": "Request not found"}, status=404)
            tail = match["tail"]
            if request.method == "GET" and tail == "/status":
                return self._status(request, queued)
            if request.method == "GET" and tail is None:
                return self._result(queued)
            if request.method == "PUT" and tail == "/cancel":
                return self._cancel(queued)
            return web.json_response({"detail": "Method not allowed"}, status=405)
        if request.method == "POST":
            answer = self._submit(request, path.lstrip("/"), body, raw)
            if answer.status == 200 and self.lose_submit_answers > 0:
                self.lose_submit_answers -= 1
                await self._answers_lost.wait()  # queued at fal; the client gives up waiting for the answer
            return answer
        return web.json_response({"detail": "Not found"}, status=404)

    def _rate_limited(self) -> web.Response:
        self.rate_limited += 1
        headers = {"X-Fal-Needs-Retry": "1"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.json_response(
            {"detail": "Too many concurrent requests.", "error_type": "concurrent_requests_limit"},
            status=429,
            headers=headers,
        )

    def _submit(self, request: web.Request, endpoint: str, body: Any, raw: bytes) -> web.Response:
        if self.rate_limit_submits > 0:
            self.rate_limit_submits -= 1
            return self._rate_limited()
        if time.monotonic() < self._storm_until:
            self._storm_count += 1
            if self._storm_count % self._storm_pass_every:
                return self._rate_limited()
        if endpoint not in VIDEO_ENDPOINTS and endpoint not in IMAGE_ENDPOINTS:
            return web.json_response({"detail": f"Application '{endpoint}' not found"}, status=404)
        if not isinstance(body, dict):
            detail = [problem([], "Input should be a valid dictionary" if raw else "field required", "json_invalid")]
            return web.json_response({"detail": detail}, status=422)
        if self.validate_at_submit and (problems := validate(endpoint, body)):
            return web.json_response({"detail": problems}, status=422)
        request_id = str(uuid.uuid4())
        queued = QueuedRequest(request_id, app_id(endpoint), endpoint, body, webhook=request.query.get("fal_webhook"))
        if self.fail_next:
            queued.failure = self.fail_next.pop(0)
        self.queued[request_id] = queued
        if queued.webhook and self.webhook_after is not None:
            task = asyncio.get_running_loop().create_task(self._complete_and_call_back(queued, self.webhook_after))
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)
        origin = "http://files.fal.invalid:9" if self.foreign_urls else self.url
        base = f"{origin}{self.url_prefix}/{queued.app}/requests/{request_id}"
        answer = {
            "request_id": request_id,
            "gateway_request_id": request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
            "status": "IN_QUEUE",
            "queue_position": max(0, self.queue_polls - 1),
        }
        return web.json_response(answer, headers={"x-fal-request-id": request_id})

    def _status(self, request: web.Request, queued: QueuedRequest) -> web.Response:
        if self.rate_limit_polls > 0:
            self.rate_limit_polls -= 1
            return self._rate_limited()
        urls = self._urls(queued)
        headers = {"x-fal-request-id": queued.request_id}
        # always a `logs` key, always HTTP 200 (fal's queue OpenAPI; the official client reads data["logs"])
        with_logs = request.query.get("logs", "").lower() in ("1", "true")
        if queued.state == "canceled":
            body = {
                "status": "COMPLETED",
                "logs": [] if with_logs else None,
                "error": "Request was cancelled",
                "error_type": "client_cancelled",
                **urls,
            }
            return web.json_response(body, headers=headers)
        queued.polls += 1
        if queued.state != "done" and queued.polls <= self.queue_polls:
            body: dict[str, Any] = {
                "status": "IN_QUEUE",
                "queue_position": self.queue_polls - queued.polls,
                "logs": [] if with_logs else None,
                **urls,
            }
            return web.json_response(body, headers=headers)
        if queued.state != "done" and queued.polls <= self.queue_polls + self.progress_polls:
            queued.state = "running"
            logs = [{"message": "Generating...", "level": "INFO", "source": "USER", "timestamp": _now()}]
            body = {"status": "IN_PROGRESS", "logs": logs if with_logs else None, **urls}
            return web.json_response(body, headers=headers)
        if queued.state != "done":
            self._finish(queued)
        body = {
            "status": "COMPLETED",
            "logs": [{"message": "Done.", "level": "INFO", "source": "USER", "timestamp": _now()}]
            if with_logs
            else None,
            "metrics": {"inference_time": 1.25},
            **urls,
        }
        if queued.failure is not None and queued.failure.in_status:
            body["error"] = queued.failure.status_error()
            body["error_type"] = queued.failure.error_type
        return web.json_response(body, headers=headers)

    async def _complete_and_call_back(self, queued: QueuedRequest, after: float) -> None:
        await asyncio.sleep(after)
        if queued.state == "canceled":
            return
        if queued.state != "done":
            self._finish(queued)
        assert queued.webhook is not None
        failed = queued.failure is not None
        body = {
            "request_id": queued.request_id,
            "gateway_request_id": queued.request_id,
            "status": "ERROR" if failed else "OK",
            "payload": {"detail": queued.failure.detail} if queued.failure is not None else queued.output,
            "error": queued.failure.status_error() if queued.failure is not None else None,
        }
        try:
            async with ClientSession() as session, session.post(queued.webhook, json=body) as answer:
                self.webhook_deliveries.append((queued.webhook, answer.status))
        except (OSError, ClientError):
            self.webhook_deliveries.append((queued.webhook, 0))

    def _urls(self, queued: QueuedRequest) -> dict[str, str]:
        base = f"{self.url}{self.url_prefix}/{queued.app}/requests/{queued.request_id}"
        return {
            "request_id": queued.request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _finish(self, queued: QueuedRequest) -> None:
        queued.state = "done"
        if queued.failure is None and (problems := validate(queued.endpoint, queued.body)):
            queued.failure = Failure(status=422, detail=problems)
        if queued.failure is not None:
            return
        if queued.endpoint in VIDEO_ENDPOINTS:
            url, size = self._host(sample_mp4(), "video/mp4", "output.mp4")
            queued.output = {
                "video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4", "file_size": size}
            }
            return
        url, size = self._host(sample_png(), "image/png", "sheet.png")
        image = {"url": url, "content_type": "image/png", "file_name": "sheet.png", "file_size": size}
        queued.output = {"images": [{**image, "width": 1344, "height": 768}], "seed": 42}
        if self.flag_nsfw:
            queued.output["has_nsfw_concepts"] = [True]

    def _host(self, data: bytes, content_type: str, name: str) -> tuple[str, int]:
        if self.result_size is not None and self.result_size > len(data):
            data += b"\0" * (self.result_size - len(data))
        token = uuid.uuid4().hex
        self.files[token] = MediaFile(data, content_type)
        return f"{self.url}{MEDIA_PATH}/{token}/{name}", len(data)

    def _result(self, queued: QueuedRequest) -> web.Response:
        if queued.state == "canceled":
            return web.json_response({"detail": "Request was cancelled", "error_type": "client_cancelled"}, status=499)
        if queued.state != "done":
            return web.json_response({"detail": RESULT_WAIT_MSG}, status=400)
        failure = queued.failure
        if failure is None:
            return web.json_response(queued.output, headers={"x-fal-request-id": queued.request_id})
        headers = {"X-Fal-Retryable": "true" if failure.status >= 500 else "false"}
        if failure.request_id_header:
            headers["x-fal-request-id"] = queued.request_id
        body: dict[str, Any] = {"detail": failure.detail}
        if isinstance(failure.detail, str):
            body["error_type"] = failure.error_type or "internal_error"
            headers["X-Fal-Error-Type"] = body["error_type"]
        return web.json_response(body, status=failure.status, headers=headers)

    def _cancel(self, queued: QueuedRequest) -> web.Response:
        if queued.state in ("done", "canceled"):
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        queued.state = "canceled"
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def _media(self, request: web.Request) -> web.StreamResponse:
        token = request.path.removeprefix(MEDIA_PATH + "/").split("/", 1)[0]
        media = self.files.get(token)
        if media is None or media.expired:
            return web.json_response({"detail": "File not found"}, status=404)
        if self.drip_downloads > 0:
            self.drip_downloads -= 1
            response = web.StreamResponse(headers={"Content-Type": media.content_type})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for index in range(len(media.data)):  # one byte at a time: each read is quick, the whole never ends
                await response.write(media.data[index : index + 1])
                await asyncio.sleep(self.drip_seconds)
            await response.write_eof()
            return response
        if not self.chunked_results:
            return web.Response(body=media.data, content_type=media.content_type)
        response = web.StreamResponse(headers={"Content-Type": media.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(media.data), 64 * 1024):
            await response.write(media.data[start : start + 64 * 1024])
        await response.write_eof()
        return response


# --------------------------------------------------------------------------------------------------------------
# Running the fake on its own thread (benchmarks: its CPU is not the client's)


class ThreadedFakeFal:
    """A FakeFal served by its own event loop on its own thread."""

    def __init__(self, fake: FakeFal) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-fal", daemon=True)

    @property
    def url(self) -> str:
        return self.fake.url

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def thread_cpu(self) -> float:
        """CPU seconds the fake's thread has used so far."""

        async def measure() -> float:
            return time.thread_time()

        return self.call(measure())

    def start(self) -> None:
        self._thread.start()
        self.call(self.fake.start())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def serve_in_thread(fake: FakeFal) -> Iterator[ThreadedFakeFal]:
    server = ThreadedFakeFal(fake)
    server.start()
    try:
        yield server
    finally:
        server.stop()
