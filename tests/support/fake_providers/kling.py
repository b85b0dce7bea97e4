"""A fake Kling API on 127.0.0.1 over real HTTP, imitating reference/providers.md §1.11.

It knows Kling's rules on its own (models, durations, limits, error codes) rather than importing the provider's
constants, so a wrong constant in bot/providers/kling.py shows up as a refused request.

- Auth: `Authorization: Bearer <JWT>` verified with the secret key (HS256; `iss` must be the access key), checked
  against the fake's own `clock`: missing -> 401/1001, bad signature or not a JWT -> 1002, wrong `iss` -> 1000,
  `nbf` in the future -> 1003, expired -> 1004. A configured `api_key` is accepted as the bearer token too.
- Accounts: `add_account(access_key, secret_key)` adds another Kling account (a server's own key). Each request
  records the account that signed it (`Recorded.account`, the access key); tasks belong to the account that
  created them, and queries, lists, `external_task_id` uniqueness and element ids only see that account's.
- The envelope `{code, message, request_id, data}` on every answer, `message: "SUCCEED"` on success, numeric
  string task ids, timestamps in ms; error codes with the HTTP status of Kling's table.
- Creates (`POST`) on the image and video routes validate like Kling (400/1201; unknown model 404/1203):
  prompt length, `duration` a string in the model's set, `cfg_scale` not on v2.x, images Base64 without a
  `data:` prefix or URLs, JPEG/PNG, >= 300 px, ratio 1:2.5..2.5:1, <= 10 MB, at most 4 in a list,
  `image_reference` only on kling-v1-5, a valid `camera_control`, `external_task_id` unique per account.
- A task moves with the polls of it (`GET <route>/<task_id or external_task_id>`): `submitted`, then
  `processing` from poll `polls_to_start`, then `succeed` (or `success_word`) or `failed` (HTTP 200, code 0,
  with `task_status_msg`) at poll `polls_to_finish`. A task holds a concurrency slot until it ends.
- Results are served by the fake itself at `/results/<task_id>.<ext>` (no auth, like a CDN); they can be
  expired (403), padded past a size, or sent chunked without a length.
- Callbacks: the bare task object is POSTed to `callback_url` on every status change; deliveries can be
  duplicated, held and sent in reverse order at the end, or dropped. With `finish_after` set, a task also ends
  that many seconds after its create without being polled (as a real render does), and calls back then.
- Switches for tests: `concurrency_limit` (+ `busy_http_status` 429 or 200 for 1303), `submit_errors` and
  `query_errors` (forced answers, e.g. 1302, 1102, 1301, 5001), `storm()` (1303 to a share of creates for a
  while), `fail_with`/`fail_next` (HTTP-200 failures), `lose_submits` (the task is created, then the answer is
  lost: `lose_mode` "drop" closes the connection, "500" answers 5000), `hold_submits` (the answer waits until
  the event is set), `reject_auth` (next answers 401/1004 whatever the token), `latency` (every answer).
- Elements (§1.7.8 b): `POST /v1/general/advanced-custom-elements` makes an element task (name <= 20, description
  <= 100, `image_refer` with a frontal image and 1-3 `refer_images`, known tag ids, unique `external_task_id`);
  its query moves with polls like any task and, once `succeed`, holds `task_result.elements[0].element_id` (a
  64-bit int, in `elements`). Omni video (`/v1/videos/omni-video`) checks that every `element_list` id exists,
  `image_list[].image_url`, images + elements <= 7, `aspect_ratio` without a first frame, duration "3".."10"
  ("3".."15" on kling-v3-omni), no end frame with more than 2 images.
- Kling 3.0 on the legacy routes: `sound` on v2.6+ only, kling-v2-6 image-to-video in pro only, `image_tail` pro
  only before v3, and storyboards (`multi_shot`, `shot_type`, `multi_prompt` of 1-6 shots whose seconds add up to
  `duration`, no `prompt` beside them) on kling-v3 / kling-v3-omni only.
- `requests` records every request, downloads and all; `tasks` every task created.

`FakeKlingThread` runs the fake on its own event loop in a thread (benchmarks: its CPU is not the client's).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import copy
import functools
import hmac
import io
import json
import random
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import aiohttp
import jwt
import standardwebhooks
from aiohttp import web
from PIL import Image, ImageDraw

from tests.support.fake_providers import kling_paths

T = TypeVar("T")

IMAGE_GENERATIONS = "/v1/images/generations"
MULTI_IMAGE2IMAGE = "/v1/images/multi-image2image"
OMNI_IMAGE = "/v1/images/omni-image"
TEXT2VIDEO = "/v1/videos/text2video"
IMAGE2VIDEO = "/v1/videos/image2video"
MULTI_IMAGE2VIDEO = "/v1/videos/multi-image2video"
OMNI_VIDEO = "/v1/videos/omni-video"
IMAGE_ROUTES = (IMAGE_GENERATIONS, MULTI_IMAGE2IMAGE, OMNI_IMAGE)
VIDEO_ROUTES = (TEXT2VIDEO, IMAGE2VIDEO, MULTI_IMAGE2VIDEO, OMNI_VIDEO)
ELEMENTS = "/v1/general/advanced-custom-elements"  # §1.7.8 (b): asynchronous element creation
ELEMENT_TAGS = frozenset({"o_101", "o_102", "o_103", "o_104", "o_105", "o_106", "o_107", "o_108"})
ELEMENT_NAME_MAX, ELEMENT_DESCRIPTION_MAX = 20, 100
FIRST_ELEMENT_ID = 863121023120580600

# Models each route accepts (providers.md §1.7).
_I2V_MODELS = frozenset(
    {
        "kling-v1",
        "kling-v1-5",
        "kling-v1-6",
        "kling-v2-master",
        "kling-v2-1",
        "kling-v2-1-master",
        "kling-v2-5-turbo",
        "kling-v2-6",
        "kling-v3",
    }
)
ROUTE_MODELS: dict[str, frozenset[str]] = {
    IMAGE_GENERATIONS: frozenset({"kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3"}),
    MULTI_IMAGE2IMAGE: frozenset({"kling-v2", "kling-v2-1"}),
    OMNI_IMAGE: frozenset({"kling-image-o1", "kling-v3-omni"}),
    TEXT2VIDEO: frozenset(
        {"kling-v1", "kling-v1-6", "kling-v2-master", "kling-v2-1-master", "kling-v2-5-turbo", "kling-v2-6", "kling-v3"}
    ),
    IMAGE2VIDEO: _I2V_MODELS,
    MULTI_IMAGE2VIDEO: frozenset({"kling-v1-6"}),
    OMNI_VIDEO: frozenset({"kling-video-o1", "kling-v3-omni"}),
}
DEFAULT_MODEL = {
    IMAGE_GENERATIONS: "kling-v1",
    MULTI_IMAGE2IMAGE: "kling-v2",
    OMNI_IMAGE: "kling-image-o1",
    TEXT2VIDEO: "kling-v1",
    IMAGE2VIDEO: "kling-v1",
    MULTI_IMAGE2VIDEO: "kling-v1-6",
    OMNI_VIDEO: "kling-video-o1",
}
# Units per second (std, pro) for the fake's bill (§1.9); models not listed bill 0.5 U/s.
VIDEO_RATES: dict[str, tuple[float, float]] = {
    "kling-v1": (0.2, 0.7),
    "kling-v1-5": (0.4, 0.7),
    "kling-v1-6": (0.4, 0.7),
    "kling-v2-1": (0.4, 0.7),
    "kling-v2-master": (2.0, 2.0),
    "kling-v2-1-master": (2.0, 2.0),
    "kling-v2-5-turbo": (0.3, 0.5),
    "kling-v2-6": (0.3, 0.5),
    "kling-v3": (0.6, 0.8),
    "kling-v3-omni": (0.6, 0.8),
    "kling-video-o1": (0.6, 0.8),
}
SOUND_RATES: dict[str, tuple[float, float]] = {
    "kling-v2-6": (1.0, 1.0),
    "kling-v3": (0.9, 1.2),
    "kling-v3-omni": (0.9, 1.2),
}
SOUND_MODELS = frozenset(SOUND_RATES)  # `sound` on v2.6 and later (§1.7.4)
STORYBOARD_MODELS = frozenset({"kling-v3", "kling-v3-omni"})  # multi_shot (providers-2026 §1.1)
# image2video models whose end frame (`image_tail`) is pro only (§1.8); kling-v3 takes it in both modes.
TAIL_PRO_ONLY = frozenset({"kling-v1-5", "kling-v1-6", "kling-v2-1", "kling-v2-5-turbo", "kling-v2-6"})
SHOT_PROMPT_MAX, MAX_SHOTS = 512, 6
VIDEO_ASPECTS = frozenset({"16:9", "9:16", "1:1"})
IMAGE_ASPECTS = frozenset({"16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9"})
CAMERA_TYPES = frozenset({"simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"})
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
PROMPT_MAX = 2500
IMAGE_MAX_BYTES = 10 * 1024 * 1024
HTTP_STATUS = {
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004), 401),
    **dict.fromkeys((1100, 1101, 1102), 429),
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    **dict.fromkeys((1302, 1303, 1304), 429),
    5000: 500,
    5001: 503,
    5002: 504,
}
BUSY_MESSAGE = "parallel task over resource pack limit"
FIRST_TASK_ID = 831922345719271433


@dataclass(frozen=True)
class ForcedError:
    """An answer the fake gives instead of the real one."""

    code: int
    message: str
    http_status: int | None = None  # None: the status of Kling's table for the code

    @property
    def status(self) -> int:
        return self.http_status if self.http_status is not None else HTTP_STATUS.get(self.code, 400)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any  # parsed JSON, or None
    at: float
    status: int = 0
    code: int | None = None
    account: str | None = None  # the access key of the account that signed it (the main one for the API key)


RECORD = web.RequestKey("kling_record", Recorded)  # the request as recorded by the middleware


@dataclass
class FakeTask:
    task_id: str
    route: str
    body: dict[str, Any]
    external_task_id: str | None
    callback_url: str | None
    created_at: int
    updated_at: int
    units: str
    fail_with: str | None
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # the Base64 images, decoded
    element_id: int | None = None  # an element task's element, once it succeeded
    status: str = "submitted"
    status_msg: str = ""
    polls: int = 0
    finished_at: float | None = None
    held_callbacks: list[dict[str, Any]] = field(default_factory=list)
    account: str | None = None  # the access key of the account that created it

    @property
    def is_image(self) -> bool:
        return self.route in IMAGE_ROUTES

    @property
    def is_element(self) -> bool:
        return self.route == ELEMENTS

    @property
    def active(self) -> bool:
        return self.status in ("submitted", "processing")


class _Refused(Exception):
    def __init__(self, code: int, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.error = ForcedError(code, message, http_status)


def _figure(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.42, h * 0.1, w * 0.58, h * 0.3), fill=(230, 190, 160))
    draw.rectangle((w * 0.38, h * 0.3, w * 0.62, h * 0.65), fill=(40, 90, 200))
    draw.rectangle((w * 0.4, h * 0.65, w * 0.6, h * 0.92), fill=(50, 50, 60))
    return image


@functools.cache
def sample_video() -> bytes:
    """A real, small H.264 MP4 (1 s, 320x240): what the fake serves as a rendered clip (made once per process)."""
    from bot.imaging.video import render_camera_move

    return render_camera_move([_figure((240, 320))], duration=1.0, camera="static", caption="", size=(320, 240), fps=12)


@functools.cache
def sample_image() -> bytes:
    """A real PNG sheet (16:9): what the fake serves as a generated image."""
    buffer = io.BytesIO()
    _figure((640, 360)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeKling:
    def __init__(
        self,
        *,
        access_key: str = "ak-test",
        secret_key: str = "sk-test-secret",
        api_key: str | None = None,
        latency: float = 0.0,
        clock: Callable[[], float] = time.time,
        polls_to_start: int = 1,
        polls_to_finish: int = 2,
        video: bytes | None = None,
        image: bytes | None = None,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.accounts: dict[str, str] = {access_key: secret_key}  # access key -> secret key
        self.api_key = api_key
        self.latency = latency
        self.clock = clock
        self.polls_to_start = polls_to_start
        self.polls_to_finish = polls_to_finish
        self.video = video
        self.image = image
        # switches
        self.concurrency_limit: int | None = None  # per pack type (video / image), like Kling
        self.busy_http_status = 429  # the status 1303 comes with: 429 (docs) or 200 (seen by a client)
        self.submit_errors: deque[ForcedError] = deque()  # answers to the next creates
        self.query_errors: deque[ForcedError] = deque()  # answers to the next task queries
        self.fail_with: str | None = None  # every new task fails with this task_status_msg
        self.fail_next: deque[str] = deque()  # the next new tasks fail with these
        self.success_word = "succeed"
        self.final_units: str | None = None  # bill this instead of the fake's own price list
        self.lose_submits = 0  # the next creates make the task, then lose the answer
        self.lose_mode: Literal["drop", "500"] = "drop"
        self.hold_submits = asyncio.Event()  # creates answer only once set (the task exists before)
        self.hold_submits.set()
        self.reject_auth = 0  # the next API answers are 401/1004 whatever the token
        self.results_expired = False  # result URLs answer 403
        self.result_ttl: float | None = None  # or: 403 this many seconds (fake clock) after the task ended
        self.result_padding = 0  # bytes added to every result
        self.chunked_results = False  # results without Content-Length
        self.callback_duplicates = 1  # each callback is posted this many times
        self.reorder_callbacks = False  # callbacks are held and posted newest first when the task ends
        self.drop_callbacks = False
        # Signs callbacks the Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature) when set: the
        # secret an admin copies from Kling's console ("whsec_" + Base64). `sign_with` signs with another (a forgery).
        self.webhook_secret: str | None = None
        self.sign_with: str | None = None
        # seconds (or a function giving them, per task) after its create that a task ends on its own
        self.finish_after: float | Callable[[], float] | None = None
        # records
        self.requests: list[Recorded] = []
        self.tasks: dict[str, FakeTask] = {}
        self.callbacks: list[tuple[str, dict[str, Any], int]] = []  # url, body, status (0: not delivered)
        self.create_attempts = 0
        self._storm_until = 0.0
        self._storm_share = 0.0
        self._storm_status = 429
        self._random = random.Random(0)
        self._next_id = FIRST_TASK_ID
        self._next_element_id = FIRST_ELEMENT_ID
        self.elements: dict[int, FakeTask] = {}  # element id -> the element task that made it
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._port = 0

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        for route in (*IMAGE_ROUTES, *VIDEO_ROUTES, ELEMENTS):
            app.router.add_post(route, functools.partial(self._create, route))
            app.router.add_get(route, functools.partial(self._list, route))
            app.router.add_get(route + "/{id}", functools.partial(self._query, route))
        for route in kling_paths.ROUTES:
            app.router.add_post(route, functools.partial(self._create, route))
        app.router.add_get(kling_paths.TASKS, self._tasks)
        app.router.add_get("/account/costs", self._costs)
        app.router.add_get("/results/{name}", self._result)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def stop(self) -> None:
        self.hold_submits.set()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKling:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------------ helpers for tests

    def storm(self, seconds: float, share: float = 0.8, *, http_status: int = 429) -> None:
        """For `seconds` (fake clock), a `share` of creates answer 1303 (a seeded coin decides which)."""
        self._storm_until = self.clock() + seconds
        self._storm_share = share
        self._storm_status = http_status

    def add_account(self, access_key: str, secret_key: str) -> None:
        """Another Kling account this fake serves (its tasks are its own)."""
        self.accounts[access_key] = secret_key

    def bodies(self, route: str) -> list[dict[str, Any]]:
        """The bodies of the tasks created on a route, oldest first."""
        return [task.body for task in self.tasks.values() if task.route == route]

    def task_for(self, external_task_id: str) -> FakeTask | None:
        return next((t for t in self.tasks.values() if t.external_task_id == external_task_id), None)

    def api_requests(self, method: str | None = None, route: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if not r.path.startswith("/results/")
            and (method is None or r.method == method)
            and (route is None or r.path == route or r.path.startswith(route + "/"))
        ]

    def downloads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/results/")]

    def result_url(self, task: FakeTask) -> str:
        return f"{self.base_url}/results/{task.task_id}.{'png' if task.is_image else 'mp4'}"

    # ------------------------------------------------------------------------------------------ the wire

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = await request.json() if raw else None
            except ValueError:
                body = raw
        record = Recorded(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Authorization"),
            body,
            self.clock(),
        )
        self.requests.append(record)
        if self.latency:
            await asyncio.sleep(self.latency)
        request[RECORD] = record
        if not request.path.startswith("/results/"):
            refused = self._check_auth(request)
            if refused is not None:
                return self._refuse(record, refused)
        response: web.StreamResponse = await handler(request)
        if not record.status:
            record.status = response.status
        return response

    def _check_auth(self, request: web.Request) -> ForcedError | None:
        if self.reject_auth > 0:
            self.reject_auth -= 1
            return ForcedError(1004, "Auth failed: token expired")
        header = request.headers.get("Authorization")
        if not header:
            return ForcedError(1001, "Authorization is empty")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return ForcedError(1002, "Authorization is invalid")
        if self.api_key is not None and hmac.compare_digest(token, self.api_key):
            request[RECORD].account = self.access_key
            return None
        if request.path in kling_paths.ROUTES or request.path == kling_paths.TASKS:
            return ForcedError(1000, "this API takes an API key, not an access key and secret key pair")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            with warnings.catch_warnings():  # short test secrets are fine here
                warnings.simplefilter("ignore")
                claims = jwt.decode(
                    token,
                    self.accounts.get(str(issuer), self.secret_key),
                    algorithms=["HS256"],
                    options={"verify_exp": False, "verify_nbf": False, "require": ["iss", "exp", "nbf"]},
                )
        except jwt.InvalidTokenError:
            return ForcedError(1002, "Authorization is invalid")
        if claims.get("iss") not in self.accounts:
            return ForcedError(1000, "Authentication failed")
        request[RECORD].account = str(claims["iss"])
        now = self.clock()
        if float(claims["nbf"]) > now:
            return ForcedError(1003, "Authorization is not yet valid")
        if float(claims["exp"]) <= now:
            return ForcedError(1004, "Authorization has expired")
        return None

    def _ok(self, record: Recorded, data: Any, status: int = 200) -> web.Response:
        record.status, record.code = status, 0
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data})

    def _refuse(self, record: Recorded, error: ForcedError) -> web.Response:
        record.status, record.code = error.status, error.code
        return web.json_response(
            {"code": error.code, "message": error.message, "request_id": str(uuid.uuid4())}, status=error.status
        )

    # ------------------------------------------------------------------------------------------ routes

    async def _create(self, route: str, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        self.create_attempts += 1
        if self.submit_errors:
            return self._refuse(record, self.submit_errors.popleft())
        now = self.clock()
        if now < self._storm_until and self._random.random() < self._storm_share:
            return self._refuse(record, ForcedError(1303, BUSY_MESSAGE, self._storm_status))
        body = record.body
        try:
            if not isinstance(body, dict):
                raise _Refused(1200, "request body must be a JSON object")
            sizes = self._validate(route, body, record.account)
            if route in kling_paths.ROUTES:
                body = {**body, "external_task_id": kling_paths.external_id_of(body)}
            if self.concurrency_limit is not None and route != ELEMENTS:
                image = route in IMAGE_ROUTES
                running = sum(1 for t in self.tasks.values() if t.active and not t.is_element and t.is_image == image)
                if running >= self.concurrency_limit:
                    raise _Refused(1303, BUSY_MESSAGE, self.busy_http_status)
        except _Refused as refused:
            return self._refuse(record, refused.error)
        task = self._new_task(route, body, sizes)
        task.account = record.account
        self._status_changed(task)
        if self.finish_after is not None and not task.is_element:
            after = self.finish_after() if callable(self.finish_after) else self.finish_after
            timer = asyncio.get_running_loop().create_task(self._finish_later(task, after))
            self._background.add(timer)
            timer.add_done_callback(self._background.discard)
        await self.hold_submits.wait()
        if self.lose_submits > 0:
            self.lose_submits -= 1
            if self.lose_mode == "drop":
                assert request.transport is not None
                request.transport.abort()
                record.status = -1
                return web.Response()
            return self._refuse(record, ForcedError(5000, "internal error"))
        return self._ok(record, self._task_object(task, query=False))

    async def _query(self, route: str, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        if self.query_errors:
            return self._refuse(record, self.query_errors.popleft())
        key = request.match_info["id"]
        task = next(
            (
                t
                for t in self.tasks.values()
                if t.route == route and t.account == record.account and key in (t.task_id, t.external_task_id)
            ),
            None,
        )
        if task is None:
            return self._refuse(record, ForcedError(1203, "task not found"))
        task.polls += 1
        self._advance(task)
        return self._ok(record, self._task_object(task))

    async def _list(self, route: str, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            page = int(request.query.get("pageNum", "1"))
            size = int(request.query.get("pageSize", "30"))
        except ValueError:
            return self._refuse(record, ForcedError(1201, "pageNum and pageSize must be integers"))
        if not (1 <= page <= 1000 and 1 <= size <= 500):
            return self._refuse(record, ForcedError(1201, "pageNum must be 1-1000 and pageSize 1-500"))
        tasks = [t for t in self.tasks.values() if t.route == route and t.account == record.account][::-1]
        return self._ok(record, [self._task_object(t) for t in tasks[(page - 1) * size : page * size]])

    async def _tasks(self, request: web.Request) -> web.StreamResponse:
        """The new API's one query route: `?task_ids=a,b` or `?external_task_ids=x,y` (each poll moves a task)."""
        record = request[RECORD]
        if self.query_errors:
            return self._refuse(record, self.query_errors.popleft())
        ids = [i for i in request.query.get("task_ids", "").split(",") if i]
        externals = [i for i in request.query.get("external_task_ids", "").split(",") if i]
        if not ids and not externals:
            return self._refuse(record, ForcedError(1201, "task_ids or external_task_ids is required"))
        found = [
            t
            for t in self.tasks.values()
            if t.route in kling_paths.ROUTES
            and t.account == record.account
            and (t.task_id in ids or t.external_task_id in externals)
        ]
        for task in found:
            task.polls += 1
            self._advance(task)
        return self._ok(record, {"tasks": [self._task_object(t) for t in found]})

    async def _costs(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        pack = {
            "resource_pack_name": "Video pack",
            "resource_pack_id": "pack-1",
            "resource_pack_type": "decreasing_total",
            "total_quantity": 1000.0,
            "remaining_quantity": 1000.0 - sum(float(t.units) for t in self.tasks.values() if not t.active),
            "status": "online",
        }
        return self._ok(record, {"resource_pack_subscribe_infos": [pack]})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        task_id = request.match_info["name"].rsplit(".", 1)[0]
        task = self.tasks.get(task_id)
        if task is None or task.finished_at is None or task.status == "failed" or task.is_element:
            record.status = 404
            return web.Response(status=404, text="NoSuchKey")
        expired = self.result_ttl is not None and self.clock() - task.finished_at > self.result_ttl
        if self.results_expired or expired:
            record.status = 403
            return web.Response(status=403, text="AccessDenied: Request has expired")
        if task.is_image:
            data, kind = (self.image or sample_image()), "image/png"
        else:
            data, kind = (self.video or sample_video()), "video/mp4"
        data += b"\x00" * self.result_padding
        record.status = 200
        if not self.chunked_results:
            return web.Response(body=data, content_type=kind)
        response = web.StreamResponse(headers={"Content-Type": kind})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 64 * 1024):
            await response.write(data[start : start + 64 * 1024])
        await response.write_eof()
        return response

    # ------------------------------------------------------------------------------------------ rules

    def _validate(self, route: str, body: dict[str, Any], account: str | None) -> list[tuple[int, int]]:
        if route in kling_paths.ROUTES:
            try:
                return kling_paths.validate(
                    route,
                    body,
                    image=self._image,
                    element_exists=lambda element_id: element_id.isdigit() and int(element_id) in self.elements,
                    external_taken=lambda external: any(
                        t.external_task_id == external and t.account == account for t in self.tasks.values()
                    ),
                )
            except kling_paths.PathRefusal as refusal:
                raise _Refused(refusal.code, str(refusal)) from None
        if route == ELEMENTS:
            return self._validate_element(body, account)
        model = body.get("model_name", DEFAULT_MODEL[route])
        if model not in ROUTE_MODELS[route]:
            raise _Refused(1203, f"model_name {model!r} does not exist for this endpoint")
        for name in ("prompt", "negative_prompt"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise _Refused(1201, f"{name} must be a string")
            if isinstance(value, str) and len(value) > PROMPT_MAX:
                raise _Refused(1201, f"{name} must be at most {PROMPT_MAX} characters")
        storyboard = self._storyboard(route, model, body)
        needs_prompt = route in (TEXT2VIDEO, MULTI_IMAGE2VIDEO, OMNI_VIDEO, *IMAGE_ROUTES)
        if needs_prompt and not body.get("prompt") and not storyboard:
            raise _Refused(1201, "prompt is required")
        if "sound" in body:
            if model not in SOUND_MODELS:
                raise _Refused(1201, f"sound is not supported by {model}")
            if body["sound"] not in ("on", "off"):
                raise _Refused(1201, "sound must be on or off")
        if route == IMAGE2VIDEO and model == "kling-v2-6" and body.get("mode", "std") != "pro":
            raise _Refused(1201, "kling-v2-6 image-to-video is only available in pro mode")
        if "duration" in body:
            duration = body["duration"]
            if not isinstance(duration, str):
                raise _Refused(1201, 'duration must be a string, e.g. "5"')
            allowed = {str(n) for n in range(3, 16)} if model in ("kling-v3", "kling-v3-omni") else {"5", "10"}
            if route == OMNI_VIDEO and model == "kling-video-o1":
                allowed = {str(n) for n in range(3, 11)}
            if duration not in allowed:
                raise _Refused(1201, f"duration {duration!r} is not allowed for {model}")
        if "mode" in body and body["mode"] not in ("std", "pro"):
            raise _Refused(1201, "mode must be std or pro")
        if "cfg_scale" in body:
            if model.startswith("kling-v2") or model.startswith("kling-v3"):
                raise _Refused(1201, f"cfg_scale is not supported by {model}")
            scale = body["cfg_scale"]
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale <= 1:
                raise _Refused(1201, "cfg_scale must be a number in [0, 1]")
        if "aspect_ratio" in body:
            aspects = IMAGE_ASPECTS if route in IMAGE_ROUTES else VIDEO_ASPECTS
            if body["aspect_ratio"] not in aspects:
                raise _Refused(1201, f"aspect_ratio {body['aspect_ratio']!r} is not supported")
        callback = body.get("callback_url")
        if callback is not None and (not isinstance(callback, str) or not callback.startswith(("http://", "https://"))):
            raise _Refused(1201, "callback_url must be an http(s) URL")
        external = body.get("external_task_id")
        if external is not None:
            if not isinstance(external, str) or not external:
                raise _Refused(1201, "external_task_id must be a non-empty string")
            if any(t.external_task_id == external and t.account == account for t in self.tasks.values()):
                raise _Refused(1201, f"external_task_id {external} already exists")
        sizes: list[tuple[int, int]] = []
        if route == IMAGE2VIDEO:
            if not body.get("image") and not body.get("image_tail"):
                raise _Refused(1201, "image and image_tail cannot both be empty")
            for name in ("image", "image_tail"):
                if body.get(name):
                    sizes += self._image(body[name], name)
            if body.get("image_tail"):
                if model in TAIL_PRO_ONLY and body.get("mode", "std") != "pro":
                    raise _Refused(1201, f"image_tail is only supported in pro mode on {model}")
                if model == "kling-v2-6" and body.get("sound") == "on":
                    raise _Refused(1201, "image_tail is not supported with sound on kling-v2-6")
            if "camera_control" in body:
                if body.get("image_tail") or body.get("dynamic_masks") or body.get("static_mask"):
                    raise _Refused(1201, "camera_control cannot be used with image_tail or motion brush")
                self._camera(body["camera_control"])
        elif route == MULTI_IMAGE2VIDEO:
            images = body.get("image_list")
            if not isinstance(images, list) or not images:
                raise _Refused(1201, "image_list is required")
            if len(images) > 4:
                raise _Refused(1201, "image_list can hold at most 4 images")
            for item in images:
                if not isinstance(item, dict) or not item.get("image"):
                    raise _Refused(1201, "each image_list item needs an image")
                sizes += self._image(item["image"], "image_list.image")
        elif route == IMAGE_GENERATIONS:
            reference = body.get("image_reference")
            if reference is not None:
                if model != "kling-v1-5":
                    raise _Refused(1201, f"image_reference is not supported by {model}")
                if reference not in ("subject", "face"):
                    raise _Refused(1201, "image_reference must be subject or face")
                if not body.get("image"):
                    raise _Refused(1201, "image_reference needs an image")
            if body.get("image"):
                sizes += self._image(body["image"], "image")
            n = body.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9:
                raise _Refused(1201, "n must be an integer 1-9")
        elif route == MULTI_IMAGE2IMAGE:
            subjects = body.get("subject_image_list")
            if not isinstance(subjects, list) or not 1 <= len(subjects) <= 4:
                raise _Refused(1201, "subject_image_list needs 1-4 images")
        elif route in (OMNI_VIDEO, OMNI_IMAGE):
            images, elements = body.get("image_list") or [], body.get("element_list") or []
            if not isinstance(images, list) or not isinstance(elements, list):
                raise _Refused(1201, "image_list and element_list must be lists")
            count = len(images) + len(elements)
            limit = 10 if route == OMNI_IMAGE else (4 if body.get("video_list") else 7)
            if count > limit:
                raise _Refused(1201, f"images and elements together can be at most {limit}")
            first_frame = False
            for item in images:
                if not isinstance(item, dict) or not item.get("image_url"):
                    raise _Refused(1201, "each image_list item needs an image_url")
                kind = item.get("type")
                if kind is not None and kind not in ("first_frame", "end_frame"):
                    raise _Refused(1201, "image_list type must be first_frame or end_frame")
                first_frame = first_frame or kind == "first_frame"
                sizes += self._image(item["image_url"], "image_list.image_url")
            for item in elements:
                element_id = item.get("element_id") if isinstance(item, dict) else None
                if isinstance(element_id, str) and element_id.isdigit():
                    element_id = int(element_id)
                if (
                    isinstance(element_id, bool)
                    or not isinstance(element_id, int)
                    or element_id not in self.elements
                    or self.elements[element_id].account != account
                ):
                    raise _Refused(1201, f"element_id {element_id!r} does not exist")
            if any(isinstance(i, dict) and i.get("type") == "end_frame" for i in images) and len(images) > 2:
                raise _Refused(1201, "end_frame is not supported with more than 2 images")
            if route == OMNI_VIDEO and not first_frame and not body.get("aspect_ratio"):
                raise _Refused(1201, "aspect_ratio is required without a first frame")
        return sizes

    @staticmethod
    def _storyboard(route: str, model: str, body: dict[str, Any]) -> bool:
        """`multi_shot` + `shot_type` + `multi_prompt` (kling-v3 / v3-omni): True for a custom storyboard."""
        if not body.get("multi_shot"):
            if "multi_prompt" in body:
                raise _Refused(1201, "multi_prompt needs multi_shot")
            return False
        if model not in STORYBOARD_MODELS or route not in (TEXT2VIDEO, IMAGE2VIDEO, OMNI_VIDEO):
            raise _Refused(1201, f"{model} does not support storyboards")
        shot_type = body.get("shot_type")
        if shot_type not in ("customize", "intelligence"):
            raise _Refused(1201, "shot_type must be customize or intelligence")
        if shot_type == "intelligence":
            return False
        shots = body.get("multi_prompt")
        if not isinstance(shots, list) or not 1 <= len(shots) <= MAX_SHOTS:
            raise _Refused(1201, f"multi_prompt must hold 1-{MAX_SHOTS} shots")
        total = 0
        for number, shot in enumerate(shots, start=1):
            if not isinstance(shot, dict) or shot.get("index") != number:
                raise _Refused(1201, "multi_prompt items need index 1, 2, ... in order")
            text, seconds = shot.get("prompt"), shot.get("duration")
            if not isinstance(text, str) or not text or len(text) > SHOT_PROMPT_MAX:
                raise _Refused(1201, f"each multi_prompt prompt must be 1-{SHOT_PROMPT_MAX} characters")
            if not isinstance(seconds, str) or not seconds.isdigit() or int(seconds) < 1:
                raise _Refused(1201, 'each multi_prompt duration must be a string of at least "1"')
            total += int(seconds)
        if str(total) != body.get("duration"):
            raise _Refused(1201, "Total storyboard duration must equal the global duration")
        if body.get("prompt"):
            raise _Refused(1201, "prompt must be empty when multi_prompt is given")
        return True

    def _validate_element(self, body: dict[str, Any], account: str | None) -> list[tuple[int, int]]:
        name, description = body.get("element_name"), body.get("element_description", "")
        if not isinstance(name, str) or not name:
            raise _Refused(1201, "element_name is required")
        if len(name) > ELEMENT_NAME_MAX:
            raise _Refused(1201, f"element_name must be at most {ELEMENT_NAME_MAX} characters")
        if not isinstance(description, str) or len(description) > ELEMENT_DESCRIPTION_MAX:
            raise _Refused(
                1201, f"element_description must be a string of at most {ELEMENT_DESCRIPTION_MAX} characters"
            )
        if body.get("reference_type") != "image_refer":
            raise _Refused(1201, "reference_type must be image_refer or video_refer (video is not imitated)")
        images = body.get("element_image_list")
        if not isinstance(images, dict) or not images.get("frontal_image"):
            raise _Refused(1201, "element_image_list.frontal_image is required")
        refer = images.get("refer_images")
        if not isinstance(refer, list) or not 1 <= len(refer) <= 3:
            raise _Refused(1201, "element_image_list.refer_images needs 1-3 images")
        sizes = self._image(images["frontal_image"], "frontal_image")
        for item in refer:
            if not isinstance(item, dict) or not item.get("image_url"):
                raise _Refused(1201, "each refer_images item needs an image_url")
            sizes += self._image(item["image_url"], "refer_images.image_url")
        tags = body.get("tag_list", [])
        if not isinstance(tags, list) or any(
            not isinstance(t, dict) or t.get("tag_id") not in ELEMENT_TAGS for t in tags
        ):
            raise _Refused(1201, "tag_list holds an unknown tag_id")
        external = body.get("external_task_id")
        if external is not None:
            if not isinstance(external, str) or not external:
                raise _Refused(1201, "external_task_id must be a non-empty string")
            if any(t.external_task_id == external and t.account == account for t in self.tasks.values()):
                raise _Refused(1201, f"external_task_id {external} already exists")
        return sizes

    @staticmethod
    def _image(value: object, name: str) -> list[tuple[int, int]]:
        if not isinstance(value, str):
            raise _Refused(1201, f"{name} must be a string")
        if value.startswith(("http://", "https://")):
            return []  # a URL Kling would fetch; there is no network here
        if value.startswith("data:"):
            raise _Refused(1201, f"{name}: Base64 must not have a data: prefix")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Refused(1201, f"{name} is neither a URL nor valid Base64") from None
        if len(data) > IMAGE_MAX_BYTES:
            raise _Refused(1201, f"{name} is larger than 10MB")
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
        except OSError:
            raise _Refused(1201, f"{name} is not an image") from None
        if kind not in ("JPEG", "PNG"):
            raise _Refused(1201, f"{name} must be jpg or png, not {kind}")
        if min(width, height) < 300:
            raise _Refused(1201, f"{name} must be at least 300px wide and high")
        if not 1 / 2.5 <= width / height <= 2.5:
            raise _Refused(1201, f"{name} aspect ratio must be between 1:2.5 and 2.5:1")
        return [(width, height)]

    @staticmethod
    def _camera(control: object) -> None:
        if not isinstance(control, dict) or control.get("type") not in CAMERA_TYPES:
            raise _Refused(1201, "camera_control.type is invalid")
        config = control.get("config")
        if control["type"] != "simple":
            if config is not None:
                raise _Refused(1201, "camera_control.config is only for type simple")
            return
        if not isinstance(config, dict) or set(config) - set(CAMERA_AXES):
            raise _Refused(1201, "camera_control.config is invalid")
        values = [config.get(axis, 0) for axis in CAMERA_AXES]
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not -10 <= v <= 10 for v in values):
            raise _Refused(1201, "camera_control.config values must be in [-10, 10]")
        if sum(1 for v in values if v != 0) != 1:
            raise _Refused(1201, "camera_control.config needs exactly one non-zero value")

    # ------------------------------------------------------------------------------------------ tasks

    def _new_task(self, route: str, body: dict[str, Any], sizes: list[tuple[int, int]]) -> FakeTask:
        now = int(self.clock() * 1000)
        task_id = str(self._next_id)
        self._next_id += 1
        fail = self.fail_next.popleft() if self.fail_next else self.fail_with
        task = FakeTask(
            task_id=task_id,
            route=route,
            body=body,
            external_task_id=body.get("external_task_id"),
            callback_url=body.get("callback_url") or kling_paths.callback_of(body),
            created_at=now,
            updated_at=now,
            units=self._units(route, body),
            fail_with=fail,
            image_sizes=sizes,
        )
        self.tasks[task_id] = task
        return task

    def _units(self, route: str, body: dict[str, Any]) -> str:
        if route == ELEMENTS:
            return "0"
        if self.final_units is not None:
            return self.final_units
        if route in kling_paths.ROUTES:
            return kling_paths.units(route, body)
        model = body.get("model_name", DEFAULT_MODEL[route])
        if route in IMAGE_ROUTES:
            per_image = 8 if body.get("image") or route != IMAGE_GENERATIONS else 4
            return str(per_image * int(body.get("n", 1)))
        rates = SOUND_RATES if body.get("sound") == "on" else VIDEO_RATES
        std, pro = rates.get(model, VIDEO_RATES.get(model, (0.5, 0.5)))
        seconds = int(body.get("duration", "5"))
        return f"{(pro if body.get('mode') == 'pro' else std) * seconds:g}"

    async def _finish_later(self, task: FakeTask, after: float) -> None:
        await asyncio.sleep(after)
        self.end_now(task)

    def end_now(self, task: FakeTask) -> None:
        """The render ends now, unpolled (succeeds, or fails as set up), and calls back as Kling does."""
        task.polls = max(task.polls, self.polls_to_finish)
        self._advance(task)

    def _advance(self, task: FakeTask) -> None:
        if not task.active:
            return
        if task.polls >= self.polls_to_start and task.status == "submitted":
            self._set(task, "processing")
        if task.polls >= self.polls_to_finish:
            if task.status == "submitted":
                self._set(task, "processing")
            if task.fail_with is not None:
                self._set(task, "failed", task.fail_with)
            else:
                if task.is_element:
                    task.element_id = self._next_element_id
                    self._next_element_id += 1
                    self.elements[task.element_id] = task
                self._set(task, self.success_word)

    def _set(self, task: FakeTask, status: str, message: str = "") -> None:
        task.status, task.status_msg = status, message
        task.updated_at = max(task.updated_at + 1, int(self.clock() * 1000))
        if not task.active:
            task.finished_at = self.clock()
        self._status_changed(task)

    def _task_object(self, task: FakeTask, *, query: bool = True) -> dict[str, Any]:
        if task.route in kling_paths.ROUTES:
            finished = not task.active and task.status != "failed"
            return kling_paths.task_object(
                task_id=task.task_id,
                status=task.status,
                status_msg=task.status_msg,
                external=task.external_task_id,
                created_at=task.created_at,
                updated_at=task.updated_at,
                units_billed=(task.units if finished else "0") if not task.active else None,
                result_url=self.result_url(task) if finished else None,
                seconds=int(task.body.get("settings", {}).get("duration", 5)),
            )
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": task.status,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }
        if task.external_task_id is not None:
            data["task_info"] = {"external_task_id": task.external_task_id}
        if not query:
            return data
        data["task_status_msg"] = task.status_msg
        data["watermark_info"] = {"enabled": False}
        if not task.active:
            data["final_unit_deduction"] = task.units if task.status != "failed" else "0"
        if task.is_element:
            if task.element_id is not None:
                element = {
                    "element_id": task.element_id,
                    "element_name": task.body.get("element_name"),
                    "element_description": task.body.get("element_description", ""),
                    "reference_type": "image_refer",
                    "element_image_list": task.body.get("element_image_list"),
                    "tag_list": [
                        {"id": t.get("tag_id"), "name": "", "description": ""} for t in task.body.get("tag_list", [])
                    ],
                    "owned_by": "account",
                    "status": "succeed",
                }
                data["task_result"] = {"elements": [element]}
        elif task.status not in ("submitted", "processing", "failed"):
            url = self.result_url(task)
            if task.is_image:
                data["task_result"] = {"images": [{"index": 0, "url": url}]}
            else:
                data["task_result"] = {
                    "videos": [
                        {
                            "id": f"v-{task.task_id}",
                            "url": url,
                            "duration": f"{float(task.body.get('duration', '5')):.1f}",
                        }
                    ]
                }
        return data

    # ------------------------------------------------------------------------------------------ callbacks

    def _status_changed(self, task: FakeTask) -> None:
        if task.callback_url is None or self.drop_callbacks:
            return
        body = copy.deepcopy(self._task_object(task))
        if self.reorder_callbacks:
            task.held_callbacks.append(body)
            if task.active:
                return
            bodies, task.held_callbacks = task.held_callbacks[::-1], []
        else:
            bodies = [body]
        deliveries = [b for b in bodies for _ in range(self.callback_duplicates)]
        background = asyncio.get_running_loop().create_task(self._deliver(task.callback_url, deliveries))
        self._background.add(background)
        background.add_done_callback(self._background.discard)

    def _signature(self, raw: bytes) -> dict[str, str]:
        secret = self.sign_with or self.webhook_secret
        if secret is None:
            return {}
        message_id = f"msg_{uuid.uuid4().hex}"
        when = datetime.fromtimestamp(self.clock(), tz=UTC)
        signature = standardwebhooks.Webhook(secret).sign(message_id, when, raw)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
        }

    async def _deliver(self, url: str, bodies: list[dict[str, Any]]) -> None:
        assert self._session is not None
        for body in bodies:  # in order, one at a time, as a single sender would
            status = 0
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **self._signature(raw)}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.post(url, data=raw, headers=headers) as response:
                    status = response.status
            self.callbacks.append((url, body, status))


class FakeKlingThread:
    """The fake on its own event loop in a thread, for benchmarks (its CPU is not billed to the client's loop).

    Use as a context manager; `call(fn)` runs `fn(fake)` on the fake's loop (switches, records) and returns
    its result; `cpu_seconds()` is the CPU time the fake's thread has used."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kling", daemon=True)
        self.fake: FakeKling | None = None
        self.base_url = ""

    def __enter__(self) -> FakeKlingThread:
        self._thread.start()
        fake: FakeKling = self._run(self._start())
        self.fake, self.base_url = fake, fake.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.fake is not None:
                self._run(self.fake.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _start(self) -> FakeKling:
        fake = FakeKling(**self._options)
        await fake.start()
        return fake

    def _run(self, coroutine: Any) -> Any:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    def call(self, fn: Callable[[FakeKling], T]) -> T:
        fake = self.fake
        assert fake is not None

        async def run() -> T:
            return fn(fake)

        return self._run(run())

    def cpu_seconds(self) -> float:
        async def measure() -> float:
            return time.thread_time()

        return self._run(measure())
