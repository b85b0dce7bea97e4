"""ComfyUI on the admin's own GPU: the admin's workflow, run by their ComfyUI server. Free, no key.

Turning it on: `LIKENESS_COMFYUI_BASE_URL` (the server, e.g. http://127.0.0.1:8188) and `LIKENESS_COMFYUI_WORKFLOW`
(a workflow exported from ComfyUI with "Export (API)"). ComfyUI takes no key, like local, but unlike local it is
only on when its server is set: its spec's `read_bot_key` answers `{}` (nothing to send, but set up) when the base
URL is set and None when it is not, and bot.providers.building treats a keyless spec with a `read_bot_key` as on
only when it answers. So it is never offered to servers as a key to bring (it has no `key_fields`; the host never
comes from a server), and the doctor checks it like the other providers it has "keys" for.

The workflow carries placeholders in its string inputs, replaced for each shot: `{{prompt}}`, `{{negative_prompt}}`,
`{{seconds}}`, `{{frames}}` (seconds x fps + 1: the first frame and one more per 1/fps s), `{{fps}}`, `{{seed}}`,
`{{width}}`, `{{height}}`, `{{reference_image_1}}`..`{{reference_image_N}}`, `{{start_frame}}`, `{{end_frame}}`.
An input that is just one placeholder gets the value itself (numbers as numbers); one with text around it gets the
value as text. `{{prompt}}` and `{{reference_image_1}}` are required, an unknown name is refused (a typo would
otherwise reach ComfyUI as text), all at build: a bad workflow is a bad setting, not a failed shot. The workflow
decides the capability row: as many reference images as it has slots (a shot with fewer repeats its first image in
the rest), a start/end frame only where it has one (a missing start frame is the first reference), lengths only
with `{{seconds}}`/`{{frames}}`, frame shapes only with `{{width}}`/`{{height}}`, a negative prompt only with its
placeholder.

On the wire (ComfyUI's server.py): images go up with `POST /upload/image` (multipart `image`, `overwrite`; named
by their content hash, so a re-sent shot re-uses them), the filled workflow with `POST /prompt {prompt, client_id,
prompt_id}` (400 with `{error, node_errors}` for a workflow ComfyUI refuses: a final error in its own words). The
prompt id is ours, derived from the installation and the job id, so `find` can look a job up in `GET /queue` and
`GET /history/{id}`: the provider is findable, and a submit whose answer was lost is looked up, not re-sent (a
ComfyUI too old to take a chosen id answers with its own: such a submit is then re-sent at worst, which is free).
Progress comes over one websocket per provider (`/ws?clientId=`: execution_start, execution_cached, executing,
progress, executed, execution_error, execution_interrupted, execution_success): a poll of a prompt the websocket
follows costs no request. A prompt it does not follow (after a restart, or when the socket dropped) is polled with
`GET /history/{id}` then `GET /queue`; its end is always read from the history (the outputs live there). The video
is the first video file in the history's outputs (`videos`, `gifs` or `images` entries: filename, subfolder,
type), fetched with `GET /view`, capped in size and time. Cancel: `POST /interrupt {prompt_id}` when it is running,
and `POST /queue {delete: [id]}` when it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import httpx
from pydantic import BaseModel, Field

from bot.domain import Money, WorkKind
from bot.imaging.prep import ProviderImageLimits
from bot.providers.base import (
    PLAIN,
    Artifact,
    Capabilities,
    FinalError,
    ModelRow,
    OutcomeUnknownError,
    PollResult,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
    free_seconds,
    request_problems,
)
from bot.providers.http import PaidSubmit, TooLargeError, read_capped, timed_request, transport_errors
from bot.providers.spec import BuildContext, Keys, ProviderSpec

log = logging.getLogger(__name__)

DEFAULT_MODEL = "comfyui-workflow"
EXAMPLE_WORKFLOW = Path(__file__).with_name("comfyui_example_workflow.json")
FRAME_SHAPES: dict[str, tuple[int, int]] = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
FIXED_SECONDS = 5  # the length a workflow without {{seconds}}/{{frames}} is assumed to make
MIN_SECONDS = 1
TYPICAL_SECONDS = 180.0  # a first guess for a clip on one consumer GPU; the worker learns the real figure

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
REFERENCE = re.compile(r"^reference_image_([1-9][0-9]*)$")
NAMES = frozenset(
    {"prompt", "negative_prompt", "seconds", "frames", "fps", "seed", "width", "height", "start_frame", "end_frame"}
)
REQUIRED = ("prompt", "reference_image_1")
VIDEO_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
}
OUTPUT_KEYS = ("videos", "gifs", "images")  # where SaveVideo, VHS Video Combine and others list their files

IMAGE_LIMITS = ProviderImageLimits(
    min_side=256, max_bytes=20 * 1024 * 1024, min_aspect=0.25, max_aspect=4.0, formats=("PNG", "JPEG")
)

_ID_NAMESPACE = uuid.UUID("5f0c1c4e-8a43-4d6c-9a55-3c0e2f7d9b11")  # prompt ids: uuid5(this, install id + job id)
_DETAIL_MAX = 400
_DOWNLOAD_DEADLINE_FACTOR = 10
_WS_WAIT = 2.0  # seconds a submit waits for the websocket before it is sent unfollowed (then polled over HTTP)
_WS_BACKOFF = (0.5, 30.0)  # reconnect delay: first, longest
_LIVE_MAX = 1024  # followed prompts kept in memory (a poll that ends one drops it)
_UNANSWERED = PaidSubmit(
    "ComfyUI did not answer after the shot was sent.", "it may have queued it; the job is looked up before a resend"
)


# --------------------------------------------------------------------------------------------------------------
# The workflow


@dataclass(frozen=True)
class Workflow:
    """A workflow in ComfyUI's API format (`{node_id: {class_type, inputs}}`) and the placeholders it holds."""

    graph: Mapping[str, Any]
    placeholders: frozenset[str]
    source: str

    @property
    def references(self) -> int:
        """How many `{{reference_image_N}}` slots it has (1..N, checked consecutive)."""
        return sum(1 for name in self.placeholders if REFERENCE.match(name))

    @classmethod
    def load(cls, path: Path) -> Workflow:
        """Read and check a workflow file; ValueError says what an admin must fix."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"the workflow file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"the workflow file {path} cannot be read ({error})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"the workflow file {path} is not JSON ({error})") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: object, source: str) -> Workflow:
        export = "export it again from ComfyUI with Workflow > Export (API)"
        if isinstance(data, dict) and "nodes" in data and "links" in data:
            raise ValueError(f"{source} is a workflow in ComfyUI's UI format, not its API format: {export}")
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{source} is not a workflow in ComfyUI's API format: {export}")
        for node_id, node in data.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
                raise ValueError(f"{source}: node {node_id} has no class_type, so this is not the API format: {export}")
            if not isinstance(node.get("inputs", {}), dict):
                raise ValueError(f"{source}: node {node_id} has no inputs object: {export}")
        found = frozenset(_placeholders(data))
        unknown = sorted(name for name in found if name not in NAMES and not REFERENCE.match(name))
        if unknown:
            known = ", ".join(f"{{{{{name}}}}}" for name in (*sorted(NAMES), "reference_image_1"))
            raise ValueError(
                f"{source} has placeholders the bot does not fill: {', '.join(f'{{{{{n}}}}}' for n in unknown)} "
                f"(it fills {known}, ...)"
            )
        missing = [name for name in REQUIRED if name not in found]
        if missing:
            raise ValueError(
                f"{source} lacks the placeholders {' and '.join(f'{{{{{n}}}}}' for n in missing)}: put "
                "{{prompt}} in the positive prompt's text and {{reference_image_1}} in a LoadImage node's image"
            )
        numbers = sorted(int(m.group(1)) for name in found if (m := REFERENCE.match(name)))
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{source}: the reference images must be numbered 1, 2, 3... without gaps ({numbers})")
        return cls(graph=data, placeholders=found, source=source)

    def fill(self, values: Mapping[str, object]) -> dict[str, Any]:
        """A copy of the graph with every placeholder replaced (an input that is one placeholder gets its value)."""

        def replace(value: object) -> object:
            if isinstance(value, str):
                whole = PLACEHOLDER.fullmatch(value.strip())
                if whole is not None:
                    return values[whole.group(1)]
                return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
            if isinstance(value, list):
                return [replace(item) for item in value]
            if isinstance(value, dict):
                return {key: replace(item) for key, item in value.items()}
            return value

        graph = copy.deepcopy(dict(self.graph))
        for node in graph.values():
            node["inputs"] = {key: replace(item) for key, item in node.get("inputs", {}).items()}
        return graph


def _placeholders(value: object) -> list[str]:
    if isinstance(value, str):
        return PLACEHOLDER.findall(value)
    if isinstance(value, list):
        return [name for item in value for name in _placeholders(item)]
    if isinstance(value, dict):
        return [name for item in value.values() for name in _placeholders(item)]
    return []


def frame_size(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """The frame for a shape, its long side `long_side`, both sides multiples of 16 (what video models take); a
    square keeps the pixel count of the 16:9 frame."""
    across, down = FRAME_SHAPES[aspect_ratio]
    if across == down:
        side = _round16(math.sqrt(long_side * long_side * 9 / 16))
        return side, side
    short = _round16(long_side * min(across, down) / max(across, down))
    return (_round16(long_side), short) if across > down else (short, _round16(long_side))


def _round16(value: float) -> int:
    return max(16, round(value / 16) * 16)


def row_for(workflow: Workflow, model: str, max_seconds: int, route: str = "") -> ModelRow:
    """The capability row the workflow makes (see the module docstring)."""
    names = workflow.placeholders
    timed = "seconds" in names or "frames" in names
    shaped = "width" in names and "height" in names
    references = workflow.references
    return ModelRow(
        model=model,
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=free_seconds(MIN_SECONDS, max_seconds, min(FIXED_SECONDS, max_seconds))
        if timed
        else (FIXED_SECONDS,),
        free_durations=timed,
        aspect_ratios=tuple(FRAME_SHAPES) if shaped else ("16:9",),
        max_images=references,
        max_subjects=references,
        start_frame="start_frame" if "start_frame" in names else None,
        end_frame="end_frame" if "end_frame" in names else None,
        negative_prompt="negative_prompt" in names,
        prompt_max_chars=4000,
        element_syntax=PLAIN,
        price_per_second={"": Money.ZERO},
        route=route or "your ComfyUI server: POST /prompt",
        note=f"free, on your own GPU: the workflow {Path(workflow.source).name} "
        f"({references} reference image{'s' if references != 1 else ''})",
    )


# --------------------------------------------------------------------------------------------------------------
# What the websocket says of a prompt it follows


@dataclass
class _Live:
    generation: int  # the websocket connection it is followed on
    nodes: int  # nodes in the workflow, for the progress
    started: bool = False
    done: set[str] = field(default_factory=set)  # nodes executed or cached
    node: str | None = None  # the node running now
    step: float = 0.0  # its own progress, 0..1
    ended: bool = False  # execution_success, or `executing` with node null
    error: dict[str, Any] | None = None
    interrupted: bool = False
    news: asyncio.Event = field(default_factory=asyncio.Event)  # set by each event of this prompt

    @property
    def progress(self) -> float:
        return min(1.0, (len(self.done) + self.step) / max(1, self.nodes))


class ComfyUIProvider:
    """The Provider protocol over a ComfyUI server; see the module docstring."""

    def __init__(
        self,
        *,
        base_url: str,
        workflow: Workflow,
        model: str = DEFAULT_MODEL,
        max_concurrency: int = 1,
        long_side: int = 1280,
        fps: int = 24,
        max_seconds: int = 10,
        install_id: str = "",
        timeout: float = 30.0,
        max_download_bytes: int = 500 * 1024 * 1024,
        download_deadline: float | None = None,
        websocket: bool = True,
    ) -> None:
        """`websocket=False`: follow progress by polling only."""
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"LIKENESS_COMFYUI_BASE_URL {base_url!r} is not an http(s) address like http://127.0.0.1:8188"
            )
        if max_concurrency < 1 or fps < 1 or max_seconds < 1 or long_side < 64:
            raise ValueError("concurrency, fps, max_seconds and long_side must be positive")
        self._base_url = base_url.strip().rstrip("/")
        self._host = parts.netloc
        self._workflow = workflow
        self._model = model
        self._long_side, self._fps = long_side, fps
        self._install_id = install_id
        self._timeout = timeout
        self._max_download_bytes = max_download_bytes
        self._download_deadline = download_deadline or timeout * _DOWNLOAD_DEADLINE_FACTOR
        self.row = row_for(workflow, model, max_seconds, route=f"{self._host}: POST /prompt")
        self.capabilities = Capabilities(
            name="comfyui",
            display_name="ComfyUI",
            kinds=frozenset({WorkKind.ANIMATE}),
            rows=(self.row,),
            default_model=model,
            image_limits=IMAGE_LIMITS,
            max_concurrency=max_concurrency,
            needs_key=False,
            typical_seconds=TYPICAL_SECONDS,
            findable=True,  # the prompt id is derived from the job id: /queue and /history find it
        )
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._client_id = uuid.uuid4().hex  # this instance's websocket: ComfyUI sends a prompt's events to its client
        self._use_ws = websocket
        self._session: aiohttp.ClientSession | None = None
        self._listener: asyncio.Task[None] | None = None
        self._ws_up = asyncio.Event()
        self._generation = 0
        self._live: dict[str, _Live] = {}
        self._canceled: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"ComfyUIProvider(base_url={self._base_url!r}, workflow={self._workflow.source!r})"

    # ----------------------------------------------------------------------------------------------------------
    # The Provider protocol

    def prompt_id(self, job_id: int) -> str:
        """Our prompt id for a job: the same after a restart, unique to this installation."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self._install_id}{job_id}"))

    async def submit(self, request: RenderRequest) -> Submission:
        self._check(request)
        self._check_open()
        await self._ensure_listener()
        values = await self._values(request)
        graph = self._workflow.fill(values)
        prompt_id = self.prompt_id(request.job_id)
        if self._ws_up.is_set():  # followed from before it is queued: its first events may beat the answer
            self._follow(prompt_id)
        body = {
            "prompt": graph,
            "client_id": self._client_id,
            "prompt_id": prompt_id,
            "extra_data": {"likeness_job": f"{self._install_id}{request.job_id}"},
        }
        try:
            data = await self._json("POST", "/prompt", json_body=body, creating=True)
        except BaseException:
            self._live.pop(prompt_id, None)
            raise
        given = data.get("prompt_id")
        if not isinstance(given, str) or not given:
            raise OutcomeUnknownError(
                "ComfyUI queued the shot but did not say under which id.", detail=_clip(data), code="bad_response"
            )
        if given != prompt_id:  # a ComfyUI older than client-chosen ids: follow its own
            log.warning("comfyui: the server chose its own prompt id (an old ComfyUI): update it for lookups")
            live = self._live.pop(prompt_id, None)
            if live is not None:
                self._live[given] = live
        log.info("comfyui: job %s queued as prompt %s", request.job_id, given)
        return Submission(task_id=given, status_url=f"{self._base_url}/history/{quote(given, safe='')}")

    async def find(self, job_id: int) -> Submission | None:
        prompt_id = self.prompt_id(job_id)
        if await self._history(prompt_id) is not None or await self._queue_state(prompt_id) is not None:
            return Submission(task_id=prompt_id, status_url=f"{self._base_url}/history/{prompt_id}")
        return None

    async def poll(self, submission: Submission) -> PollResult:
        prompt_id = submission.task_id
        live = self._live.get(prompt_id)
        if live is not None and live.error is not None:
            self._live.pop(prompt_id, None)
            return PollResult(TaskStatus.FAILED, error=execution_failure(live.error))
        followed = live is not None and self._ws_up.is_set() and live.generation == self._generation
        if followed and live is not None and not live.ended and not live.interrupted:
            status = TaskStatus.RUNNING if live.started else TaskStatus.QUEUED
            return PollResult(status, progress=live.progress if live.started else 0.0)
        entry = await self._history(prompt_id)
        if entry is None:
            waiting = await self._queue_state(prompt_id)
            if waiting is not None:
                progress = live.progress if live is not None and waiting is TaskStatus.RUNNING else None
                return PollResult(waiting, progress=progress)
            entry = await self._history(prompt_id)  # it may have ended between the two questions
        if entry is None:
            self._live.pop(prompt_id, None)
            if prompt_id in self._canceled:
                return PollResult(TaskStatus.CANCELED)
            error = FinalError(
                "The ComfyUI server no longer knows this shot (it was restarted or its queue cleared). "
                "Re-roll the shot: it is free.",
                detail=prompt_id,
                code="lost",
            )
            return PollResult(TaskStatus.FAILED, error=error)
        self._live.pop(prompt_id, None)
        return self._ended(entry)

    async def next_event(self, prompt_id: str) -> None:
        """Wait for the websocket's next news of a prompt it follows (at once when it follows none): a caller that
        wants to poll as soon as something changed, rather than on a timer."""
        live = self._live.get(prompt_id)
        if live is None or not self._ws_up.is_set():
            await asyncio.sleep(0)
            return
        await live.news.wait()
        live.news.clear()

    async def cancel(self, submission: Submission) -> None:
        prompt_id = submission.task_id
        self._canceled.add(prompt_id)  # a waiting prompt deleted from the queue leaves no history: canceled, not lost
        self._live.pop(prompt_id, None)  # its end is read from ComfyUI itself
        if await self._queue_state(prompt_id) is TaskStatus.RUNNING:
            # Newer ComfyUI interrupts only this prompt; an older one whatever runs, which was this one just now.
            await self._json("POST", "/interrupt", json_body={"prompt_id": prompt_id}, expect_json=False)
        await self._json("POST", "/queue", json_body={"delete": [prompt_id]}, expect_json=False)

    async def fetch(self, artifact: Artifact) -> bytes:
        if not artifact.url.startswith(f"{self._base_url}/view?"):
            raise FinalError("This result is not from the bot's ComfyUI server.", detail=artifact.url, code="bad_url")
        self._check_open()
        async with (
            _transport_errors(
                "Downloading the clip from ComfyUI timed out.", "The connection to ComfyUI broke during the download."
            ),
            asyncio.timeout(self._download_deadline),
            self._client.stream("GET", artifact.url) as response,
        ):
            if response.status_code == 404:
                raise FinalError("ComfyUI no longer has this clip.", detail=artifact.url, code="expired")
            if response.status_code >= 300:
                await response.aread()
                self._raise_for(response, "/view")
            try:
                return await read_capped(response, self._max_download_bytes)
            except TooLargeError as error:
                raise FinalError(
                    "The clip ComfyUI made is too large to fetch.", detail=f"{error.size} bytes", code="too_large"
                ) from None

    def estimate_cost(self, request: RenderRequest) -> Money:
        return Money.ZERO

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._client.aclose()

    async def ping(self) -> float:
        """The time to first byte (seconds) of `GET /system_stats`, for `likeness doctor`: RetryableError (`timeout`,
        `network`) when the server cannot be reached, FinalError `not_comfyui` when something else answers."""
        self._check_open()
        async with (
            _transport_errors("ComfyUI did not answer in time.", "I couldn't reach the ComfyUI server."),
            asyncio.timeout(self._timeout),
        ):
            response, first_byte = await timed_request(self._client, "GET", f"{self._base_url}/system_stats")
        if response.status_code >= 300:
            self._raise_for(response, "/system_stats")
        data = _json_of(response)
        if not isinstance(data, dict) or "system" not in data or "devices" not in data:
            raise _not_comfyui(self._host, "/system_stats", response)
        return first_byte

    # ----------------------------------------------------------------------------------------------------------
    # The request

    def _check(self, request: RenderRequest) -> None:
        if request.kind is not WorkKind.ANIMATE:
            raise FinalError(f"The ComfyUI workflow makes clips, not {request.kind.value} jobs.", code="invalid")
        problems = request_problems(self.row, request)
        if request.model and request.model != self._model:
            problems.append(f"unknown model {request.model!r} (this server's workflow is {self._model!r})")
        if not request.images:
            problems.append("at least one reference image is needed")
        if len(request.prompt) > self.row.prompt_max_chars:
            problems.append(f"the prompt is longer than {self.row.prompt_max_chars} characters")
        if problems:
            raise FinalError("The ComfyUI workflow cannot take this shot: " + "; ".join(problems) + ".", code="invalid")

    async def _values(self, request: RenderRequest) -> dict[str, object]:
        """Every placeholder's value for this shot; images are uploaded first (each once)."""
        names = self._workflow.placeholders
        width, height = (
            frame_size(request.aspect_ratio, self._long_side) if request.aspect_ratio in FRAME_SHAPES else (0, 0)
        )
        values: dict[str, object] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "seconds": request.duration,
            "frames": request.duration * self._fps + 1,
            "fps": self._fps,
            "seed": int.from_bytes(hashlib.sha256(f"{self._install_id}{request.job_id}".encode()).digest()[:4], "big"),
            "width": width,
            "height": height,
        }
        uploads: dict[str, tuple[bytes, str]] = {}
        for number in range(1, self._workflow.references + 1):
            image = request.images[number - 1] if number <= len(request.images) else request.images[0]
            uploads[f"reference_image_{number}"] = (image.data, image.mime)
        first = request.images[0]
        if "start_frame" in names:
            frame = request.start_frame
            uploads["start_frame"] = (frame.data, frame.mime) if frame is not None else (first.data, first.mime)
        if "end_frame" in names:
            frame = request.end_frame or request.start_frame
            uploads["end_frame"] = (frame.data, frame.mime) if frame is not None else (first.data, first.mime)
        names_by_hash: dict[str, str] = {}
        for slot, (data, mime) in uploads.items():
            digest = hashlib.sha256(data).hexdigest()[:24]
            if digest not in names_by_hash:
                names_by_hash[digest] = await self._upload(data, mime, digest)
            values[slot] = names_by_hash[digest]
        return values

    async def _upload(self, data: bytes, mime: str, digest: str) -> str:
        extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(mime, "png")
        files = {"image": (f"likeness-{digest}.{extension}", data, mime)}
        answer = await self._json("POST", "/upload/image", files=files, form={"overwrite": "true"})
        name, subfolder = answer.get("name"), answer.get("subfolder") or ""
        if not isinstance(name, str) or not name:
            raise _not_comfyui(self._host, "/upload/image", None, said=_clip(answer))
        return f"{subfolder}/{name}" if isinstance(subfolder, str) and subfolder else name

    # ----------------------------------------------------------------------------------------------------------
    # History and queue

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        data = await self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def _queue_state(self, prompt_id: str) -> TaskStatus | None:
        data = await self._json("GET", "/queue")
        for key, status in (("queue_running", TaskStatus.RUNNING), ("queue_pending", TaskStatus.QUEUED)):
            for item in data.get(key) or []:
                if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                    return status
        return None

    def _ended(self, entry: Mapping[str, Any]) -> PollResult:
        given = entry.get("status")
        status: Mapping[str, Any] = given if isinstance(given, dict) else {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
        for kind, data in messages:
            if kind == "execution_interrupted":
                return PollResult(TaskStatus.CANCELED)
            if kind == "execution_error" and isinstance(data, dict):
                return PollResult(TaskStatus.FAILED, error=execution_failure(data))
        if status.get("status_str") == "error":
            error = FinalError("ComfyUI failed to run the workflow.", detail=_clip(status), code="execution_error")
            return PollResult(TaskStatus.FAILED, error=error)
        artifact = self._video_of(entry.get("outputs"))
        if artifact is None:
            error = FinalError(
                "ComfyUI ran the workflow but it saved no video. The bot's admin should end the workflow with a node "
                "that saves one (Save Video, or Video Combine with save_output on and an mp4 format).",
                detail=_clip(entry.get("outputs") or {}),
                code="no_output",
            )
            return PollResult(TaskStatus.FAILED, error=error)
        return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=(artifact,), charged=Money.ZERO)

    def _video_of(self, outputs: object) -> Artifact | None:
        """The first video file the workflow saved (a saved one before a temporary preview)."""
        found: list[tuple[bool, Artifact]] = []
        for node in outputs.values() if isinstance(outputs, dict) else ():
            if not isinstance(node, dict):
                continue
            for key in OUTPUT_KEYS:
                for item in node.get(key) or []:
                    if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                        continue
                    mime = VIDEO_TYPES.get(Path(item["filename"]).suffix.lower())
                    if mime is None:
                        continue
                    query = {
                        "filename": item["filename"],
                        "subfolder": str(item.get("subfolder") or ""),
                        "type": str(item.get("type") or "output"),
                    }
                    url = f"{self._base_url}/view?{urlencode(query)}"
                    found.append((query["type"] == "output", Artifact(url=url, mime=mime)))
        saved = [artifact for is_saved, artifact in found if is_saved]
        return (saved or [artifact for _, artifact in found] or [None])[0]

    # ----------------------------------------------------------------------------------------------------------
    # The websocket

    async def _ensure_listener(self) -> None:
        if not self._use_ws or self._closed:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="likeness-comfyui-ws")
        if not self._ws_up.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_WS_WAIT):
                    await self._ws_up.wait()

    def _follow(self, prompt_id: str) -> None:
        if len(self._live) >= _LIVE_MAX:
            self._live.pop(next(iter(self._live)))
        self._live[prompt_id] = _Live(generation=self._generation, nodes=len(self._workflow.graph))

    async def _listen(self) -> None:
        """Keep the websocket open while the provider is; its events update the prompts it follows."""
        scheme = "wss" if self._base_url.startswith("https://") else "ws"
        url = f"{scheme}://{self._base_url.split('://', 1)[1]}/ws?clientId={self._client_id}"
        delay = _WS_BACKOFF[0]
        while not self._closed:
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10))
                async with self._session.ws_connect(url, heartbeat=30.0, max_msg_size=16 * 1024 * 1024) as ws:
                    self._generation += 1
                    self._ws_up.set()
                    delay = _WS_BACKOFF[0]
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._on_event(message.data)
                        elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                log.debug("comfyui: websocket unavailable (%s); polling meanwhile", type(error).__name__)
            finally:
                self._ws_up.clear()  # the prompts it followed are polled over HTTP from now on
                for live in self._live.values():
                    live.news.set()  # and whoever waits for their news polls at once
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _WS_BACKOFF[1])

    def _on_event(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            return
        kind, data = event.get("type"), event["data"]
        live = self._live.get(str(data.get("prompt_id")))
        if live is None:
            return
        if kind == "execution_start":
            live.started = True
        elif kind == "execution_cached":
            live.started = True
            live.done.update(str(node) for node in data.get("nodes") or [])
        elif kind == "executing":  # the node before it is done
            live.started = True
            live.step = 0.0
            if live.node is not None:
                live.done.add(live.node)
            node = data.get("node")
            live.node = None if node is None else str(node)
            if node is None:
                live.ended = True
        elif kind == "progress":
            value, most = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(most, int | float) and most > 0:
                live.step = min(1.0, max(0.0, value / most))
        elif kind == "executed":
            live.done.add(str(data.get("node")))
            live.step = 0.0
        elif kind == "execution_success":
            live.ended = True
        elif kind == "execution_error":
            live.error = data
        elif kind == "execution_interrupted":
            live.interrupted = True
        live.news.set()

    # ----------------------------------------------------------------------------------------------------------
    # HTTP

    def _check_open(self) -> None:
        if self._closed:
            raise RetryableError("The ComfyUI connection is shutting down; try again in a moment.", code="closing")

    async def _json(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        form: Mapping[str, str] | None = None,
        creating: bool = False,
        expect_json: bool = True,
    ) -> dict[str, Any]:
        """One API call: its JSON object answer, or a typed error (ComfyUI's own words in the detail)."""
        self._check_open()
        async with (
            _transport_errors(
                f"The bot's ComfyUI server ({self._host}) did not answer in time.",
                f"The bot's ComfyUI server ({self._host}) cannot be reached: is ComfyUI running there?",
                paid_submit=_UNANSWERED if creating else None,
            ),
            asyncio.timeout(self._timeout),
        ):
            response = await self._client.request(method, self._base_url + path, json=json_body, files=files, data=form)
        if response.status_code >= 300:
            self._raise_for(response, path, creating=creating)
        if not expect_json:
            return {}
        data = _json_of(response)
        if not isinstance(data, dict):
            if creating:
                raise OutcomeUnknownError(
                    "ComfyUI's answer to the shot could not be read.", detail=_clip(response.text), code="bad_response"
                )
            raise _not_comfyui(self._host, path, response)
        return data

    def _raise_for(self, response: httpx.Response, path: str, *, creating: bool = False) -> None:
        status = response.status_code
        if status == 400 and path == "/prompt":
            raise workflow_refusal(_json_of(response))
        if status in (404, 405) or (300 <= status < 400):
            raise _not_comfyui(self._host, path, response)
        if status in {400, 403, 413}:
            raise FinalError(
                f"The ComfyUI server refused the request ({status}).", detail=_clip(response.text), code="refused"
            )
        if creating and status >= 500 and status != 503:
            raise OutcomeUnknownError(
                f"The ComfyUI server failed ({status}) while taking the shot.",
                detail=_clip(response.text),
                code="server",
            )
        raise RetryableError(
            f"The ComfyUI server is failing ({status}); trying again.", detail=_clip(response.text), code="server"
        )


def _transport_errors(timeout: str, network: str, *, paid_submit: PaidSubmit | None = None) -> transport_errors:
    return transport_errors(timeout, network, deadline=True, paid_submit=paid_submit)


def workflow_refusal(data: object) -> FinalError:
    """A 400 from `POST /prompt`: ComfyUI's `error` and each node's errors, in its own words."""
    message, parts = "", []
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            if error.get("details"):
                message += f": {error['details']}"
        elif isinstance(error, str):
            message = error
        nodes = data.get("node_errors")
        for node_id, node in nodes.items() if isinstance(nodes, dict) else ():
            if not isinstance(node, dict):
                continue
            said = "; ".join(
                f"{e.get('message', '')}{': ' + str(e['details']) if e.get('details') else ''}"
                for e in node.get("errors") or []
                if isinstance(e, dict)
            )
            parts.append(f"{node.get('class_type', 'node')} (node {node_id}): {said}")
    detail = " | ".join(filter(None, [message, *parts])) or _clip(data)
    return FinalError(
        "ComfyUI refused the bot's workflow; the bot's admin should open it in ComfyUI and fix what it says.",
        detail=_clip(detail),
        code="workflow_invalid",
    )


def execution_failure(data: Mapping[str, Any]) -> FinalError:
    """An `execution_error` (websocket event or history message) as the member's error, in ComfyUI's words."""
    node = f"{data.get('node_type') or 'a node'} (node {data.get('node_id')})"
    said = ": ".join(str(x) for x in (data.get("exception_type"), data.get("exception_message")) if x)
    memory = "out of memory" in said.lower() or "OutOfMemory" in said
    hint = " The GPU ran out of memory: a shorter or smaller shot may fit." if memory else ""
    return FinalError(
        f"ComfyUI failed while rendering, at {node}.{hint}", detail=_clip(said or data), code="execution_error"
    )


def _not_comfyui(host: str, path: str, response: httpx.Response | None, *, said: str = "") -> FinalError:
    answer = f"{response.status_code} " if response is not None else ""
    return FinalError(
        f"{host} answers, but not as ComfyUI does: is LIKENESS_COMFYUI_BASE_URL the address ComfyUI prints when it "
        "starts (like http://127.0.0.1:8188)?",
        detail=f"{answer}{path}: {said or (_clip(response.text) if response is not None else '')}".strip(),
        code="not_comfyui",
    )


def _json_of(response: httpx.Response) -> object:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


# --------------------------------------------------------------------------------------------------------------
# The plug-in: settings, "key", factory (bot.providers.spec)


class ComfyUISettings(BaseModel):
    base_url: str | None = Field(
        default=None,
        description="Your ComfyUI server (http://127.0.0.1:8188): set it to turn ComfyUI on. It takes no key: "
        "keep it on a private network.",
    )
    workflow: Path | None = Field(
        default=None,
        description="Your ComfyUI workflow, exported in API format, with {{prompt}}, {{reference_image_1}}... "
        "placeholders (example: bot/providers/comfyui_example_workflow.json).",
    )
    model: str = Field(default=DEFAULT_MODEL, description="The name members see for the ComfyUI workflow.")
    concurrency: int = Field(default=1, ge=1, le=32, description="ComfyUI shots sent at once (it renders one by one).")
    long_side: int = Field(default=1280, ge=256, le=4096, description="{{width}}/{{height}}: the frame's long side.")
    fps: int = Field(default=24, ge=1, le=120, description="{{fps}}, and {{frames}} = seconds x fps + 1.")
    max_seconds: int = Field(default=10, ge=1, le=120, description="The longest ComfyUI clip members may ask for.")


def _base_url(own: ComfyUISettings) -> str | None:
    return own.base_url.strip() if isinstance(own.base_url, str) and own.base_url.strip() else None


def _set_up(own: ComfyUISettings) -> Keys | None:
    """On when the server is set: no key to send (`{}`), None when off (bot.providers.building)."""
    return {} if _base_url(own) is not None else None


def _build(context: BuildContext[ComfyUISettings]) -> ComfyUIProvider:
    own = context.settings
    base_url = _base_url(own)
    if base_url is None:
        raise ValueError("LIKENESS_COMFYUI_BASE_URL is not set")
    if own.workflow is None:
        raise ValueError(
            f"not set: export your workflow in API format and name its file here (example: {EXAMPLE_WORKFLOW})"
        )
    workflow = Workflow.load(Path(own.workflow).expanduser())
    return ComfyUIProvider(
        base_url=base_url,
        workflow=workflow,
        model=own.model,
        max_concurrency=own.concurrency,
        long_side=own.long_side,
        fps=own.fps,
        max_seconds=own.max_seconds,
        install_id=context.install_id(),
        download_deadline=context.download_deadline,
    )


def _example_row() -> ModelRow:
    """The row of the shipped example workflow, for `likeness providers` (the admin's workflow decides its own)."""
    try:
        return row_for(Workflow.load(EXAMPLE_WORKFLOW), DEFAULT_MODEL, ComfyUISettings().max_seconds)
    except ValueError:  # an install without the example file: a row with the required placeholders only
        return row_for(Workflow({}, frozenset(REQUIRED), "workflow.json"), DEFAULT_MODEL, FIXED_SECONDS)


SPEC = ProviderSpec(
    name="comfyui",
    label="ComfyUI",
    settings=ComfyUISettings,
    build=_build,
    read_bot_key=_set_up,
    checked_setting="workflow",
    rows=(_example_row(),),
)
