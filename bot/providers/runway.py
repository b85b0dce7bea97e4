"""Runway's API (providers.md §3, providers-2026.md R1-R5 and §1.3): image-to-video clips (gen4_turbo, gen4.5 and
the Veo 3.1 models Runway resells), gen4.5 multi-shot clips through the multi-shot recipe, and gen4_image
character sheets.

- Auth: `Authorization: Bearer <key>` and `X-Runway-Version: 2024-11-06` on every API call (never on the
  result downloads: those are signed CDN URLs, and the key must not leave for another host).
- `POST /v1/image_to_video` (ANIMATE): `promptImage` (the request's start frame, else its first view), a ratio
  such as `1280:720` and the clip's seconds, per the model's row (ROWS): gen4_turbo 5 or 10 s, first frame only;
  gen4.5 any whole second 2-10, `promptText` required, first frame only; veo3.1 / veo3.1_fast 4, 6 or 8 s, an
  end frame as `promptImage: [{uri, position: "first"}, {uri, position: "last"}]`, native `audio`, and a
  `negativePrompt`.
- `POST /v1/recipes/multi_shot_video` (ANIMATE with `request.shots`, gen4.5 only): `mode: "custom"`,
  `version: "2026-06"`, `shots: [{prompt, duration}]` (3-5, adding up to `duration`, which is 5, 10 or 15),
  `ratio` from the 720p (standard tier) set, `firstFrame: {uri}`.
- `POST /v1/text_to_image` (SHEET): up to 3 `referenceImages` with tags; the prompt already names them as
  `@tag` (DIALECT), and the tags sent here are derived the same way.
- Creates return `{"id", "estimatedCost": {"credits"}}`; `GET /v1/tasks/{id}` is polled (no webhooks exist);
  `DELETE /v1/tasks/{id}` cancels. A finished task (SUCCEEDED, FAILED, CANCELLED) carries `cost: {"credits"}`,
  what Runway really charged (a refund lowers it): it is returned as PollResult.charged, at $0.01 a credit.
- Result URLs expire within 24-48 h: the worker downloads at once, and a later poll gives fresh URLs.

Not built: the Kling and Seedance models Runway also resells (kling3.0_*, klingO3_*, kling_4, seedance2*): their
fields are in the official SDK but no source gives their price in credits, and a row without a price would hold
nothing against the budget.

Errors: 400/401/403/404 are final (with Runway's own words as the detail, the key never echoed); 408/409/429
and 5xx, timeouts and network errors are retryable (Retry-After honoured), 429 and 503 as "busy" (the worker
waits for capacity). Runway cannot be asked whether a task was created for a job (no idempotency key, no task
list), so a create whose outcome is unknown (a timeout or a dropped connection after it was sent, a 5xx other
than 503, an unreadable success) raises OutcomeUnknownError: the worker never sends it again on its own. A FAILED task is always final for
the worker (it cannot be polled back to life): its message says when re-rolling the shot may work, and the
error code keeps Runway's `failureCode`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import math
import mimetypes
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, Field, SecretStr

from bot.domain import Money, WorkKind
from bot.imaging.prep import ProviderImageLimits
from bot.providers.base import (
    BOT_KEYS,
    Artifact,
    Capabilities,
    Dialect,
    FinalError,
    Frame,
    KeyOwner,
    ModelRow,
    MultiShot,
    OutcomeUnknownError,
    PollResult,
    Referable,
    ReferenceImage,
    RenderRequest,
    RetryableError,
    Submission,
    TaskStatus,
    free_seconds,
    request_problems,
)
from bot.providers.http import (
    KEY_REFUSED,
    PaidSubmit,
    TooLargeError,
    read_capped,
    timed_request,
    transport_errors,
)
from bot.providers.spec import BuildContext, KeyField, ProviderSpec

log = logging.getLogger(__name__)

API_VERSION = "2024-11-06"
DEFAULT_BASE_URL = "https://api.dev.runwayml.com"

TAG_MIN, TAG_MAX = 3, 16  # providers.md §3.2: 3-16 chars, a letter first, letters/digits/_


def runway_tag(label: str, taken: set[str]) -> str:
    """A Runway reference tag for this label, unique (case-insensitively) among `taken`, which it joins."""
    ascii_label = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9]+", "_", ascii_label).strip("_")
    if not base[:1].isalpha():
        base = f"ref_{base}" if base else "ref"
    if len(base) < TAG_MIN:
        base = f"{base}_ref"
    base = base[:TAG_MAX].rstrip("_")
    tag, number = base, 2
    while tag.casefold() in taken:
        suffix = f"_{number}"
        tag = base[: TAG_MAX - len(suffix)].rstrip("_") + suffix
        number += 1
    taken.add(tag.casefold())
    return tag


def _tokens(references: Sequence[Referable]) -> tuple[str, ...]:
    taken: set[str] = set()
    return tuple(f"@{runway_tag(ref.label, taken)}" for ref in references)


# `@tag`, the tag derived from the label (strip the `@` for `referenceImages[].tag`).
DIALECT = Dialect("runway", _tokens)

# Ratios per §3.2/§3.3, for the frame shapes members choose. Sheets use the 1080p tier (8 credits).
VIDEO_RATIOS: dict[str, str] = {"16:9": "1280:720", "9:16": "720:1280", "1:1": "960:960"}
VEO_RATIOS: dict[str, str] = {"16:9": "1280:720", "9:16": "720:1280"}  # the SDK's veo3.1 720p ratios (no square)
IMAGE_RATIOS: dict[str, str] = {"16:9": "1920:1080", "9:16": "1080:1920", "1:1": "1080:1080"}

CREDIT = Money.from_usd("0.01")  # one Runway credit
# Credits per second of clip (runwayml/skills rw-api-reference: gen4_turbo 5, gen4.5 12, veo3.1 20-40, veo3.1_fast
# 10-15; the SDK says audio "affects pricing", so the low figure is silent and the high one with audio).
VIDEO_CREDITS_PER_SECOND: dict[str, int] = {"gen4_turbo": 5, "gen4.5": 12, "veo3.1": 20, "veo3.1_fast": 10}
AUDIO_CREDITS_PER_SECOND: dict[str, int] = {"veo3.1": 40, "veo3.1_fast": 15}
IMAGE_CREDITS: dict[str, int] = {"gen4_image": 8, "gen4_image_turbo": 2}  # gen4_image at 1080p (5 at 720p)
IMAGE_MODELS_NEEDING_REFERENCES = frozenset({"gen4_image_turbo"})
PROMPT_REQUIRED = frozenset({"gen4.5"})  # the SDK types gen4.5's promptText as Required
RATIOS_BY_MODEL: dict[str, dict[str, str]] = {
    "gen4_turbo": VIDEO_RATIOS,
    "gen4.5": VIDEO_RATIOS,
    "veo3.1": VEO_RATIOS,
    "veo3.1_fast": VEO_RATIOS,
}

DURATIONS = (5, 10)  # gen4_turbo: the SDK types duration as int; 5 and 10 are the values every source agrees on
GEN45_DURATIONS = free_seconds(2, 10, 5)  # "Must be an integer from 2 to 10" (SDK, image_to_video_create_params)
VEO_DURATIONS = (8, 4, 6)  # Literal[4, 6, 8]
PROMPT_MAX_UNITS = 1000  # UTF-16 code units
MAX_SHEET_REFERENCES = 3
TAG_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,15}$")
DATA_URI_MAX_CHARS = 5_000_000  # "5 MB" for a data URI; read as the whole URI in decimal bytes, the strictest way

# The multi-shot recipe (providers-2026.md §1.3; SDK recipe_multi_shot_video_params): custom mode, 3-5 shots whose
# seconds add up to `duration` (5, 10 or 15; gen4.5's row stops at 10 s, so 15 s is not reached). The shortest shot
# and a shot prompt's limit are not documented: 1 s and the 1000 of promptText.
RECIPE_PATH = "/v1/recipes/multi_shot_video"
RECIPE_VERSION = "2026-06"
RECIPE_DURATIONS = (5, 10, 15)
GEN45_MULTI_SHOT = MultiShot(max_shots=5, min_shots=3, min_shot_seconds=1, shot_prompt_max=PROMPT_MAX_UNITS)


def _veo_row(model: str, note: str) -> ModelRow:
    return ModelRow(
        model=model,
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=VEO_DURATIONS,
        resolutions={"": "720p"},
        aspect_ratios=tuple(VEO_RATIOS),
        max_images=1,
        start_frame="promptImage",
        end_frame="promptImage[position=last]",
        audio=True,
        negative_prompt=True,
        prompt_max_chars=PROMPT_MAX_UNITS,
        element_syntax=DIALECT,
        price_per_second={"": CREDIT * VIDEO_CREDITS_PER_SECOND[model]},
        audio_price_per_second={"": CREDIT * AUDIO_CREDITS_PER_SECOND[model]},
        route="/v1/image_to_video",
        note=note,
    )


ROWS: tuple[ModelRow, ...] = (
    ModelRow(
        model="gen4_turbo",
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=DURATIONS,
        resolutions={"": "720p"},
        aspect_ratios=tuple(VIDEO_RATIOS),
        max_images=1,
        start_frame="promptImage",
        prompt_max_chars=PROMPT_MAX_UNITS,
        element_syntax=DIALECT,
        price_per_second={"": CREDIT * VIDEO_CREDITS_PER_SECOND["gen4_turbo"]},
        route="/v1/image_to_video",
        note="the first view as the first frame; fast and cheap",
    ),
    ModelRow(
        model="gen4.5",
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=GEN45_DURATIONS,
        free_durations=True,
        resolutions={"": "720p"},
        aspect_ratios=tuple(VIDEO_RATIOS),
        max_images=1,
        start_frame="promptImage",
        multi_shot=GEN45_MULTI_SHOT,
        prompt_max_chars=PROMPT_MAX_UNITS,
        element_syntax=DIALECT,
        price_per_second={"": CREDIT * VIDEO_CREDITS_PER_SECOND["gen4.5"]},
        route="/v1/image_to_video (3-5 shots: /v1/recipes/multi_shot_video)",
        note="Runway's best; first frame only, a prompt is required; 3-5 shots in one 5 or 10 s clip",
    ),
    _veo_row("veo3.1", "Google Veo 3.1 through Runway: an end frame, native audio (priced higher)"),
    _veo_row("veo3.1_fast", "Google Veo 3.1 Fast through Runway: an end frame, native audio, cheaper"),
    *(
        ModelRow(
            model=model,
            kinds=frozenset({WorkKind.SHEET}),
            aspect_ratios=tuple(IMAGE_RATIOS),
            max_images=MAX_SHEET_REFERENCES,
            prompt_max_chars=PROMPT_MAX_UNITS,
            element_syntax=DIALECT,
            price_per_image=CREDIT * credits,
            route="/v1/text_to_image",
            note="sheets from up to 3 tagged references",
        )
        for model, credits in IMAGE_CREDITS.items()
    ),
)

# The prepared images travel as data URIs: base64 grows them by 4/3, so the raw cap leaves room for that.
RUNWAY_IMAGE_LIMITS = ProviderImageLimits(
    min_side=320,  # no documented minimum; a floor so the first frame of a 720p clip is not a thumbnail
    max_bytes=3_700_000,
    min_aspect=0.5,  # 0.5-2.0 is what ComfyUI's Runway nodes check before sending (providers.md §3.3)
    max_aspect=2.0,
    formats=("JPEG", "PNG", "WEBP"),
)

TYPICAL_SECONDS = 60.0  # a first guess for gen4_turbo; the worker learns the real figure
_DETAIL_MAX = 300  # characters of Runway's own words kept in an error
_DOWNLOAD_DEADLINE_FACTOR = 10  # a whole download may take this many `timeout`s; each read still has one
_QUEUED = frozenset({"PENDING", "THROTTLED"})
_UNANSWERED_CREATE = PaidSubmit(
    "Runway did not answer after the shot was sent.", "Runway may have started it, and cannot be asked"
)


class RunwayProvider:
    """The Provider protocol over Runway's REST API; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        video_model: str = "gen4_turbo",
        image_model: str = "gen4_image",
        max_concurrency: int = 2,
        timeout: float = 30.0,
        max_download_bytes: int = 200 * 1024 * 1024,
        owner: KeyOwner = BOT_KEYS,
        download_deadline: float | None = None,
    ) -> None:
        """`download_deadline`: seconds a whole result download may take (default ten `timeout`s)."""
        if not api_key.strip():
            raise ValueError("a Runway API key is needed")
        self._owner = owner
        if video_model not in VIDEO_CREDITS_PER_SECOND:
            raise ValueError(
                f"unknown Runway video model {video_model!r} (known: {', '.join(VIDEO_CREDITS_PER_SECOND)})"
            )
        if image_model not in IMAGE_CREDITS:
            raise ValueError(f"unknown Runway image model {image_model!r} (known: {', '.join(IMAGE_CREDITS)})")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout <= 0 or max_download_bytes < 1:
            raise ValueError("timeout and max_download_bytes must be positive")
        self.capabilities = Capabilities(
            name="runway",
            display_name="Runway",
            kinds=frozenset({WorkKind.ANIMATE, WorkKind.SHEET}),
            rows=ROWS,
            default_model=video_model,
            image_limits=RUNWAY_IMAGE_LIMITS,
            max_concurrency=max_concurrency,
            typical_seconds=TYPICAL_SECONDS,
            image_model=image_model,
            findable=False,  # no lookup by our job id: a create whose outcome is unknown waits for a manager
        )
        self._api_key = api_key.strip()
        self._base_url = base_url.rstrip("/")
        self._video_model = video_model
        self._image_model = image_model
        self._timeout = timeout
        self._download_deadline = download_deadline or timeout * _DOWNLOAD_DEADLINE_FACTOR
        self._max_download_bytes = max_download_bytes
        self._api_headers = {
            "Authorization": f"Bearer {self._api_key}",
            "X-Runway-Version": API_VERSION,
            "Accept": "application/json",
        }
        # One client for the API and the downloads. No default headers: the key is added per API call only.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max(10, max_concurrency * 4), max_keepalive_connections=10),
        )
        self._closed = False

    def __repr__(self) -> str:  # never the key
        return f"RunwayProvider(base_url={self._base_url!r}, video_model={self._video_model!r})"

    # ----------------------------------------------------------------------------------------------------------
    # The Provider protocol

    async def submit(self, request: RenderRequest) -> Submission:
        if request.kind is WorkKind.ANIMATE:
            path, body = self._video_body(request)
        elif request.kind is WorkKind.SHEET:
            path, body = "/v1/text_to_image", self._image_body(request)
        else:
            raise FinalError(f"Runway cannot make {request.kind.value} jobs.", code="invalid")
        # No retry here: a POST that timed out may still have created (and billed) a task, and Runway has no
        # idempotency key to find it by (see `find`): such a POST raises OutcomeUnknownError (never re-sent).
        data = await self._api("POST", path, json_body=body, creating=True)
        task_id = data.get("id")
        if not isinstance(task_id, str) or not task_id:
            # The task may exist; sending it again could bill twice, so this is not retryable.
            raise FinalError(
                "Runway accepted the shot but did not say which task it started.",
                detail=_clip(data),
                code="bad_response",
            )
        log.info(
            "runway: job %s submitted as task %s (%s, estimated %s credits)",
            request.job_id,
            task_id,
            path,
            _credits(data.get("estimatedCost")),
        )
        return Submission(task_id=task_id, status_url=self._task_url(task_id))

    async def find(self, job_id: int) -> Submission | None:
        # Runway takes no idempotency key or metadata on a task and has no endpoint that lists tasks, so a task
        # submitted just before a crash (before the worker saved its id) cannot be found again
        # (`Capabilities.findable` is False): the worker leaves such a job to a manager instead of paying twice.
        return None

    async def poll(self, submission: Submission) -> PollResult:
        data = await self._api("GET", self._task_path(submission.task_id))
        status = data.get("status")
        if status in _QUEUED:
            return PollResult(TaskStatus.QUEUED, progress=0.0)
        if status == "RUNNING":
            return PollResult(TaskStatus.RUNNING, progress=_progress(data.get("progress")))
        charged = charged_cost(data)
        if status == "SUCCEEDED":
            urls = [url for url in data.get("output") or [] if isinstance(url, str) and url]
            if not urls:
                error = FinalError("Runway finished the task but returned no result.", code="no_output", charged=True)
                return PollResult(TaskStatus.FAILED, error=error, charged=charged)
            artifacts = tuple(Artifact(url=url, mime=_guess_mime(url)) for url in urls)
            return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=artifacts, charged=charged)
        if status == "FAILED":
            error = task_failure(data.get("failureCode"), data.get("failure"))
            if charged is not None:  # Runway's own figure says whether it billed, over the failure code's rule
                error.charged = charged > Money.ZERO
            return PollResult(TaskStatus.FAILED, error=error, charged=charged)
        if status == "CANCELLED":
            return PollResult(TaskStatus.CANCELED, charged=charged)
        # An unknown or missing status: never spin on it forever; the worker gives up after a few attempts.
        raise RetryableError("Runway gave an answer I don't understand.", detail=_clip(data), code="bad_response")

    async def cancel(self, submission: Submission) -> None:
        try:
            await self._api("DELETE", self._task_path(submission.task_id), expect_json=False)
        except FinalError as error:
            if error.code != "not_found":  # already gone: nothing to stop
                raise

    async def fetch(self, artifact: Artifact) -> bytes:
        scheme = urlsplit(artifact.url).scheme
        if scheme not in ("http", "https"):
            raise FinalError("This result link is not a web address.", code="bad_url")
        self._check_open()
        async with (
            _transport_errors(
                "Downloading the result from Runway timed out.",
                "The connection to Runway broke while downloading the result.",
            ),
            asyncio.timeout(self._download_deadline),
        ):
            return await self._download(artifact.url)

    def estimate_cost(self, request: RenderRequest) -> Money:
        caps = self.capabilities
        if request.kind is WorkKind.SHEET:
            return CREDIT * IMAGE_CREDITS[self._image_model_for(request)]
        row = caps.find_row(request.model) or caps.row(self._video_model)
        return row.clip_cost(request.mode, request.duration, audio=request.audio)

    async def close(self) -> None:
        self._closed = True
        await self._client.aclose()

    async def ping(self) -> float:
        """The time to first byte (seconds) of `GET /v1/organization` (the account's tier and credits: free), for
        `likeness doctor`. FinalError with code KEY_REFUSED on a 401, RetryableError (`timeout`, `network`) when
        Runway cannot be reached, the usual typed error for any other refusal."""
        self._check_open()
        async with (
            _transport_errors("Runway did not answer in time.", "I couldn't reach Runway."),
            asyncio.timeout(self._timeout),
        ):
            response, first_byte = await timed_request(
                self._client, "GET", self._base_url + "/v1/organization", headers=self._api_headers
            )
        if response.status_code == 401:
            raise FinalError(
                "Runway did not accept the API key.", detail=self._redact(_error_text(response)), code=KEY_REFUSED
            )
        if response.status_code >= 300:
            self._raise_for(response)
        return first_byte

    # ----------------------------------------------------------------------------------------------------------
    # Request bodies (what Runway would refuse with a 400 is refused here first, with the same reasons)

    def _video_body(self, request: RenderRequest) -> tuple[str, dict[str, Any]]:
        """The path and body of a clip: `/v1/image_to_video`, or the multi-shot recipe when `request.shots` is set.
        The model's row (request_problems) and Runway's own rules are checked first; every problem is named."""
        model = request.model or self._video_model
        row = self.capabilities.find_row(model)
        if row is None:
            _refuse([f"unknown model {model!r} (available: {', '.join(self.capabilities.models)})"])
        assert row is not None
        # What is sent: the start frame, else the first view (the other views are not sent to image_to_video).
        sent = replace(request, images=request.images[:1] if request.start_frame is None else ())
        problems = request_problems(row, sent)
        first = _frame_uri(request.start_frame, "start frame") if request.start_frame is not None else None
        if first is None and request.images:
            first = _data_uri(request.images[0])
        prompt = _video_prompt(request.prompt, request.images)
        ratio = RATIOS_BY_MODEL.get(model, VIDEO_RATIOS).get(request.aspect_ratio)
        if request.shots:
            return RECIPE_PATH, self._recipe_body(request, problems, ratio, first)
        if first is None:
            problems.append("a reference image is needed for the first frame")
        problems += _prompt_problems(prompt, required=model in PROMPT_REQUIRED, model=model)
        _refuse(problems)
        assert ratio is not None and first is not None
        image: str | list[dict[str, str]] = first
        if request.end_frame is not None:  # request_problems let it through: the row takes a last frame
            last = _frame_uri(request.end_frame, "end frame")
            image = [{"uri": first, "position": "first"}, {"uri": last, "position": "last"}]
        body: dict[str, Any] = {"model": model, "promptImage": image, "ratio": ratio, "duration": request.duration}
        if prompt:
            body["promptText"] = prompt
        if row.audio:
            body["audio"] = request.audio  # explicit: Veo's default is not documented, and audio costs more
        if row.negative_prompt and request.negative_prompt and request.negative_prompt.strip():
            body["negativePrompt"] = request.negative_prompt.strip()
        return "/v1/image_to_video", body

    def _recipe_body(
        self, request: RenderRequest, problems: list[str], ratio: str | None, first: str | None
    ) -> dict[str, Any]:
        """`POST /v1/recipes/multi_shot_video` in custom mode: our shots, their seconds adding up to the clip's."""
        if request.duration not in RECIPE_DURATIONS:
            problems.append(
                f"a multi-shot clip lasts {', '.join(map(str, RECIPE_DURATIONS[:-1]))} or {RECIPE_DURATIONS[-1]} s, "
                f"not {request.duration} s"
            )
        shots = [
            {"prompt": _video_prompt(shot.prompt, request.images), "duration": shot.duration} for shot in request.shots
        ]
        for number, shot in enumerate(shots, start=1):
            if not str(shot["prompt"]).strip():
                problems.append(f"shot {number} has no prompt")
            elif prompt_units(str(shot["prompt"])) > PROMPT_MAX_UNITS:
                problems.append(f"shot {number}'s prompt is longer than {PROMPT_MAX_UNITS} characters")
        _refuse(problems)
        assert ratio is not None
        body: dict[str, Any] = {
            "mode": "custom",
            "version": RECIPE_VERSION,
            "shots": shots,
            "duration": request.duration,
            "ratio": ratio,
        }
        if first is not None:
            body["firstFrame"] = {"uri": first}
        return body

    def _image_body(self, request: RenderRequest) -> dict[str, Any]:
        model = self._image_model_for(request)
        problems: list[str] = []
        ratio = IMAGE_RATIOS.get(request.aspect_ratio)
        if ratio is None:
            problems.append(f"the frame shape {request.aspect_ratio!r} is not one of {', '.join(IMAGE_RATIOS)}")
        if len(request.images) > MAX_SHEET_REFERENCES:
            problems.append(f"at most {MAX_SHEET_REFERENCES} reference images, got {len(request.images)}")
        if model in IMAGE_MODELS_NEEDING_REFERENCES and not request.images:
            problems.append(f"{model} needs at least one reference image")
        problems += _prompt_problems(request.prompt, required=True)
        _refuse(problems)
        assert ratio is not None
        tags = sheet_tags(request.images)
        references = [{"uri": _data_uri(image), "tag": tag} for image, tag in zip(request.images, tags, strict=True)]
        prompt = _mention_tags(request.prompt, tags)
        body: dict[str, Any] = {"model": model, "promptText": prompt, "ratio": ratio}
        if references:
            body["referenceImages"] = references
        return body

    def _image_model_for(self, request: RenderRequest) -> str:
        """The job's model when it names a Runway image model, else the configured one (jobs carry the clip's)."""
        return request.model if request.model in IMAGE_CREDITS else self._image_model

    # ----------------------------------------------------------------------------------------------------------
    # HTTP

    def _task_path(self, task_id: str) -> str:
        return f"/v1/tasks/{quote(task_id, safe='')}"

    def _task_url(self, task_id: str) -> str:
        return self._base_url + self._task_path(task_id)

    def _check_open(self) -> None:
        if self._closed:
            raise RetryableError("The Runway connection is shutting down; try again in a moment.", code="closing")

    async def _api(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        expect_json: bool = True,
        creating: bool = False,
    ) -> dict[str, Any]:
        """One API call: the JSON object it answered, or a typed error. Every call has an overall deadline.
        `creating`: a POST that makes a paid task, whose unknown outcome is OutcomeUnknownError."""
        self._check_open()
        async with (
            _transport_errors(
                "Runway did not answer in time.",
                "I couldn't reach Runway.",
                paid_submit=_UNANSWERED_CREATE if creating else None,
            ),
            asyncio.timeout(self._timeout),
        ):
            response = await self._client.request(
                method, self._base_url + path, json=json_body, headers=self._api_headers
            )
        if response.status_code >= 300:
            if creating and response.status_code >= 500 and response.status_code != 503:
                raise OutcomeUnknownError(
                    "Runway had a server problem while taking the shot.",
                    detail=self._redact(_error_text(response)) or f"HTTP {response.status_code}",
                    code=f"http_{response.status_code}",
                )
            self._raise_for(response)
        if not expect_json or response.status_code == 204:
            return {}
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            unreadable = OutcomeUnknownError if creating else RetryableError  # a success: the task may exist
            raise unreadable(
                "Runway gave an answer I don't understand.",
                detail=self._redact(_clip(response.text)),
                code="bad_response",
            )
        return data

    def _raise_for(self, response: httpx.Response) -> NoReturn:
        status = response.status_code
        said = self._redact(_error_text(response))
        if status == 400:
            raise FinalError("Runway refused this shot.", detail=said, code="invalid")
        if status == 401:
            # The key is never part of the message or the detail.
            where = self._owner.fix or "in the bot's settings"
            raise FinalError(
                f"Runway did not accept {self._owner.whose} API key. An admin needs to check the Runway key {where} "
                "(a key from the Runway developer portal, for api.dev.runwayml.com).",
                code="auth",
            )
        if status == 403:
            raise FinalError(
                f"Runway refused to do this for {self._owner.whose} account.", detail=said, code="forbidden"
            )
        if status == 404:
            raise FinalError("Runway no longer knows this task.", detail=said, code="not_found")
        if status == 429:
            raise RetryableError(
                "Runway's limit for this account was reached (too many generations today, or too many at once); "
                "I'll try again later.",
                detail=said,
                code="rate_limited",
                retry_after=retry_after(response.headers),
                rate_limited=True,
            )
        if status == 503:  # busy: Runway did not take the request
            raise RetryableError(
                "Runway is busy or having trouble right now.",
                detail=said or f"HTTP {status}",
                code=f"http_{status}",
                retry_after=retry_after(response.headers),
                rate_limited=True,
            )
        if status in (408, 409) or status >= 500:
            raise RetryableError(
                "Runway is busy or having trouble right now.",
                detail=said or f"HTTP {status}",
                code=f"http_{status}",
                retry_after=retry_after(response.headers),
            )
        raise FinalError("Runway refused the request.", detail=said or f"HTTP {status}", code=f"http_{status}")

    async def _download(self, url: str) -> bytes:
        async with self._client.stream("GET", url, headers={"Accept": "*/*"}, follow_redirects=True) as response:
            status = response.status_code
            if status in (401, 403, 404, 410):
                # Signed CDN URLs answer 403 (or 404/410) once they expire.
                raise FinalError(
                    "The result's download link from Runway expired before I could fetch it. Re-roll the shot "
                    "to render it again.",
                    detail=f"HTTP {status}",
                    code="expired",
                )
            if status == 429 or status >= 500:
                raise RetryableError(
                    "Runway's file server is busy; I'll try the download again.",
                    detail=f"HTTP {status}",
                    code=f"http_{status}",
                    retry_after=retry_after(response.headers),
                )
            if status != 200:
                raise FinalError("Runway's result could not be downloaded.", detail=f"HTTP {status}", code="download")
            try:
                body = await read_capped(response, self._max_download_bytes)
            except TooLargeError as error:
                raise self._too_large(error.size) from None
        if not body:
            raise RetryableError("Runway's result came back empty; I'll try the download again.", code="empty")
        return body

    def _too_large(self, size: int) -> FinalError:
        limit = self._max_download_bytes / (1024 * 1024)
        return FinalError(
            f"Runway's result is larger than this bot accepts ({limit:g} MB).",
            detail=f"{size} bytes or more",
            code="too_large",
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "key_…") if self._api_key else text


# --------------------------------------------------------------------------------------------------------------
# Pure helpers (module level so tests and other code can use them)


def _transport_errors(timeout: str, network: str, *, paid_submit: PaidSubmit | None = None) -> transport_errors:
    """The transport-error mapper as Runway's calls use it: each call has an overall deadline (a built-in
    TimeoutError is a timeout too), a timeout says no more than that, and the httpx error is not chained."""
    return transport_errors(timeout, network, deadline=True, timeout_detail=False, chain=False, paid_submit=paid_submit)


def sheet_tags(images: Sequence[ReferenceImage]) -> list[str]:
    """The `referenceImages[].tag` values: the same `runway_tag`s, in the same order, as the compiled prompt's
    `@tag`s (DIALECT)."""
    taken: set[str] = set()
    return [runway_tag(image.label, taken) for image in images]


def task_failure(code: object, failure: object) -> FinalError:
    """A FAILED task as the member's error. The task is over either way, so the error is final for the worker;
    where Runway says a new attempt may work, the message invites re-rolling the shot (a new task)."""
    failure_code = code if isinstance(code, str) else ""
    detail = _clip(failure) if failure else failure_code
    if failure_code.startswith("SAFETY.INPUT"):
        return FinalError(
            "Runway's moderation refused this shot's inputs (the prompt or a reference image). Change them "
            "before trying again: repeated refusals can get the Runway account suspended.",
            detail=detail,
            code=failure_code,
            charged=True,  # moderated generations cost the same credits (providers.md §3.4)
        )
    if failure_code.startswith("SAFETY.OUTPUT"):
        return FinalError(
            "Runway's moderation blocked the result. Re-rolling the shot (perhaps with a different action) may work.",
            detail=detail,
            code=failure_code,
            charged=True,
        )
    if failure_code.startswith("INTERNAL.BAD_OUTPUT"):
        return FinalError(
            "Runway rejected its own result as flawed (text or logos in a reference image often cause this). "
            "Re-rolling the shot may work.",
            detail=detail,
            code=failure_code,
        )
    if failure_code.startswith("INTERNAL"):
        return FinalError(
            "Runway failed on its side while rendering. Re-rolling the shot may work.",
            detail=detail,
            code=failure_code,
        )
    if failure_code.startswith("ASSET"):
        return FinalError(
            "Runway could not use a reference image. Try a different picture for this character.",
            detail=detail,
            code=failure_code,
        )
    return FinalError("Runway could not render this shot.", detail=detail, code=failure_code or "failed")


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from `retry-after-ms` (preferred, as Runway's SDK does) or `Retry-After` (seconds or a
    date); None when neither is given or readable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


def prompt_units(text: str) -> int:
    """Length in UTF-16 code units, Runway's measure of promptText."""
    return len(text.encode("utf-16-le")) // 2


def _video_prompt(prompt: str, images: Sequence[ReferenceImage]) -> str:
    """The clip's prompt without `@tag` syntax: image_to_video binds no tags (its one image is the first frame),
    so the compiled prompt's `@front` becomes `front`. Never longer than the compiled prompt."""
    tags = sorted({token.removeprefix("@") for token in _tokens(images)}, key=len, reverse=True)
    if not tags:
        return prompt
    pattern = re.compile(r"@(" + "|".join(map(re.escape, tags)) + r")(?![A-Za-z0-9_])")
    return pattern.sub(r"\1", prompt)


def _mention_tags(prompt: str, tags: Sequence[str]) -> str:
    """The sheet prompt naming every reference: a prompt compiled by bot/prompts.py already names each `@tag`
    (it is sent as it is); one written without them (the generated-sheet prompt) gets a closing sentence naming
    the missing tags, when it still fits the limit."""
    missing = [tag for tag in tags if not re.search(rf"@{re.escape(tag)}(?![A-Za-z0-9_])", prompt)]
    if not missing:
        return prompt
    text = prompt.rstrip()
    if text and text[-1] not in ".!?…":
        text += "."
    named = f"{text} Reference images: {', '.join(f'@{tag}' for tag in missing)}."
    return named if prompt_units(named) <= PROMPT_MAX_UNITS else prompt


def _prompt_problems(prompt: str, *, required: bool, model: str = "") -> list[str]:
    if required and not prompt.strip():
        return [f"{model} needs a prompt" if model else "the prompt is empty"]
    units = prompt_units(prompt)
    if units > PROMPT_MAX_UNITS:
        return [f"the prompt is {units} characters long; Runway takes at most {PROMPT_MAX_UNITS}"]
    return []


def _refuse(problems: list[str]) -> None:
    if problems:
        raise FinalError("Runway would refuse this shot: " + "; ".join(problems) + ".", code="invalid")


def _data_uri(image: ReferenceImage) -> str:
    return _image_uri(image.data, image.mime, f"reference image “{image.label}”")


def _frame_uri(frame: Frame, what: str) -> str:
    return _image_uri(frame.data, frame.mime, what)


def _image_uri(data: bytes, mime: str, what: str) -> str:
    if mime not in ("image/jpeg", "image/png", "image/webp"):
        raise FinalError(f"The {what} is not a JPEG, PNG or WebP, which Runway needs.", detail=mime, code="invalid")
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    if len(uri) > DATA_URI_MAX_CHARS:
        raise FinalError(
            f"The {what} is too large for Runway (5 MB at most as sent).", detail=f"{len(data)} bytes", code="invalid"
        )
    return uri


def _credits(value: object) -> Decimal | None:
    """The `credits` of a `{"credits": n}` object (`cost` or `estimatedCost`), when it is a finite count >= 0."""
    if not isinstance(value, dict):
        return None
    credits: object = value.get("credits")  # pyright: ignore[reportUnknownMemberType]
    if isinstance(credits, bool) or not isinstance(credits, int | float) or not math.isfinite(credits) or credits < 0:
        return None
    return Decimal(str(credits))


def charged_cost(task: dict[str, Any]) -> Money | None:
    """What Runway says a finished task charged: `cost.credits` at $0.01 a credit (None when it says nothing)."""
    credits = _credits(task.get("cost"))
    return CREDIT * credits if credits is not None else None


def _progress(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return min(1.0, max(0.0, float(value)))
    return None


def _guess_mime(url: str) -> str:
    mime, _ = mimetypes.guess_type(urlsplit(url).path)
    return mime or "application/octet-stream"


def _error_text(response: httpx.Response) -> str:
    """Runway's own words from an error answer: `{"error": "..."}` (plus `issues` when given), else the text."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _clip(response.text)
    if isinstance(data, dict):
        message = data.get("error") or data.get("message") or ""
        issues = data.get("issues")
        if isinstance(issues, list) and issues:
            message = f"{message} {json.dumps(issues, ensure_ascii=False)}".strip()
        if message:
            return _clip(message)
    return _clip(data)


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


# --------------------------------------------------------------------------------------------------------------
# The plug-in: settings, keys, factory (bot.providers.spec)


class RunwaySettings(BaseModel):
    api_key: SecretStr | None = Field(default=None, description="Runway API key. Never logged.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Runway API host.")
    concurrency: int = Field(default=2, ge=1, le=100, description="Runway tasks your tier runs at once.")


def _build(context: BuildContext[RunwaySettings]) -> RunwayProvider:
    return RunwayProvider(
        api_key=context.keys.get("api_key") or "",
        base_url=context.settings.base_url,
        max_concurrency=context.settings.concurrency,
        owner=context.owner,
        download_deadline=context.download_deadline,
    )


SPEC = ProviderSpec(
    name="runway",
    label="Runway",
    settings=RunwaySettings,
    build=_build,
    key_fields=(
        KeyField("api_key", "API key", "API key", "key_..., from the Runway developer portal", max_length=300),
    ),
    key_source="the Runway developer portal > API Keys (a key for api.dev.runwayml.com)",
    dialects=(DIALECT,),
    rows=ROWS,
)
