"""fal.ai: Kling clips (O1/O3 reference-to-video, or Kling 1.6 elements) and character sheets from an image model,
through fal's queue API (reference/providers.md §2).

The queue protocol:
- submit: `POST {base_url}/{endpoint}` with `Authorization: Key <key>` and the model's input as JSON. The answer
  carries `request_id` and the `status_url`, `response_url` and `cancel_url` to use from then on. Those URLs leave
  out the endpoint's subpath (`fal-ai/kling-video/requests/<id>`, not `.../o1/reference-to-video/requests/<id>`),
  so they are kept exactly as given and never rebuilt.
- status: `GET status_url?logs=0` answers IN_QUEUE (with `queue_position`), IN_PROGRESS or COMPLETED. There is no
  FAILED: a failed request is COMPLETED with `error`/`error_type` in the status, and its `response_url` answers
  with an HTTP error and fal's reasons (a 422 `detail[]` list, or an infrastructure error).
- result: `GET response_url` gives the model's output: `{"video": File}` for clips, `{"images": [File]}` for images.
  A failure can show only here (a COMPLETED status without `error`), so COMPLETED is never taken as success until
  the result says so.
- cancel: `PUT cancel_url`.

Every fal clip endpoint is a row of the capability table (`Capabilities.rows`); a shot names its model and is sent to
that endpoint (the configured `video_model` is the default). Kling O3 reference-to-video (providers-2026.md §1.2,
providers.md §2.7) takes the most: several characters, each its own element (`@Element1`, `@Element2`...: one per
cast member, its views grouped as `frontal_image_url` + `reference_image_urls`), a storyboard (`multi_prompt` +
`shot_type: customize`, no `prompt`), `start_image_url` / `end_image_url`, and `generate_audio`. Its `duration`, like
every fal Kling endpoint's, is a string enum ("3".."15"): a number is a 422.

How a task is found again after a restart: `Submission.task_id` is fal's `request_id` and `Submission.status_url`
holds a small JSON object (the worker stores it as the job's status URL):
`{"v": 1, "status_url": ..., "response_url": ..., "cancel_url": ..., "kind": "animate", "duration": 5}`, the three
URLs exactly as fal returned them. A plain URL ending in `/status` is read too (response and cancel URLs then
follow fal's documented scheme). The key is only ever sent to the origin of `base_url`: a URL on another host is
refused, so neither a strange answer nor a tampered row can send the key elsewhere. Result files are downloaded
without the key (fal's CDN URLs are public).

Reference images travel inline as base64 data URIs. fal documents uploads to its CDN as the universal way and says
"some models" take data URIs; the fal clients encode files as data URIs for exactly these URL fields, and inline
images keep the bot free of a second, stateful upload API. The images are kept within 2 MB each (after the
worker's provider prep) so a shot of 7 references stays a request of at most ~19 MB.

`find` cannot look a task up by our job id (see `find`). So a submit whose outcome is unknown (a read timeout, a
connection dropped after the request went out, a 5xx other than 503, an unreadable success) raises
OutcomeUnknownError, and the worker never sends it again without a manager's press; a refusal that proves it did not
arrive (no connection, a 4xx, a 429 or 503 "busy") stays a plain error and is retried or reported.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr

from bot.domain import Money, WorkKind
from bot.imaging.prep import ProviderImageLimits
from bot.providers.base import (
    BOT_KEYS,
    PLAIN,
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
    ProviderError,
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

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_VIDEO_MODEL = "fal-ai/kling-video/o1/reference-to-video"
DEFAULT_IMAGE_MODEL = "fal-ai/bytedance/seedream/v4/edit"

# fal's Kling inputs: >= 300 px, <= 10 MB, aspect 0.40..2.50 (the OmniVideoElementInput schema), JPEG/PNG. The byte
# cap is ours: images travel inline as base64, so each is kept at 2 MB (see the module docstring).
FAL_IMAGE_LIMITS = ProviderImageLimits(
    min_side=300, max_bytes=2 * 1024 * 1024, min_aspect=0.4, max_aspect=2.5, formats=("JPEG", "PNG")
)

ASPECT_RATIOS = ("16:9", "9:16", "1:1")
PROMPT_MAX_CHARS = 2500  # Kling's prompt limit, on fal as on Kling's own API
TYPICAL_SECONDS = 120.0  # a 5 s Kling clip on fal: one to three minutes; the worker learns the real figure
ELEMENT_MAX_REFERENCES = 3  # an element: 1 frontal image + 1..3 reference images (fal rejects 0 with a 422)
CANCELED_ERROR_TYPES = frozenset({"client_cancelled", "request_cancelled", "cancelled", "canceled"})
_MAX_DETAIL = 300  # characters of fal's own words kept in an error
_MAX_RETRY_AFTER = 600.0
NO_SUCH_REQUEST = "00000000-0000-0000-0000-000000000000"  # the request `ping` asks about
_UNANSWERED_SUBMIT = PaidSubmit(
    "fal.ai did not answer after the shot was sent.", "fal may have queued it, and cannot be asked"
)


# The prompt's dialect (Kling O1/O3 reference-to-video and v3 image-to-video, providers.md §2.7): each character's
# views travel as ONE element, {frontal_image_url: first view, reference_image_urls: the next views}: the first
# character is @Element1, a second one in the same shot its own element (@Element2...), numbered in order of first
# appearance together with each bound element (outfit, prop...), which is its own element too. Elements are the one
# form all three fal endpoints take (v3 image-to-video has no image_urls) and the form fal's own example uses
# ("@Element1 and @Element2 enter the scene from two sides"). A Kling element holds 1 frontal + at most 3 more
# angles (providers.md §1.7.8), so a character's fifth view spills into image_urls as @Image1 (O1/O3 only).
ELEMENT_MAX_IMAGES = 4


def _tokens(references: Sequence[Referable]) -> tuple[str, ...]:
    """`@ElementN` / `@ImageN`: the references sharing a token form one element (one per character, by `subject`),
    the first of them its frontal image."""
    tokens: list[str] = []
    elements = images = 0
    characters: dict[int, tuple[int, int]] = {}  # subject -> (its element number, views in it so far)
    for ref in references:
        if ref.role == "element":
            elements += 1
            tokens.append(f"@Element{elements}")
            continue
        number, views = characters.get(ref.subject, (0, 0))
        if number == 0:
            elements += 1
            number = elements
        if views < ELEMENT_MAX_IMAGES:
            characters[ref.subject] = (number, views + 1)
            tokens.append(f"@Element{number}")
        else:
            images += 1
            tokens.append(f"@Image{images}")
    return tuple(tokens)


DIALECT = Dialect("fal", _tokens)


@dataclass(frozen=True)
class VideoEndpoint:
    """What one fal Kling endpoint takes (its capability row is built from it, `_video_row`)."""

    family: Literal["reference", "elements"]  # reference: O1/O3 `elements` + `image_urls`; elements: Kling 1.6
    durations: tuple[int, ...]  # the first is the default (bot/animate.py uses durations[0])
    max_images: int
    negative_prompt: bool
    element_syntax: Dialect
    price_per_second: Money
    audio: bool = False  # `generate_audio`
    audio_price_per_second: Money | None = None  # with audio on, where it is known to cost more
    frames: bool = False  # `start_image_url` and `end_image_url`
    multi_shot: MultiShot | None = None  # `multi_prompt` + `shot_type`
    note: str = ""


@dataclass(frozen=True)
class ImageEndpoint:
    family: Literal["seedream", "nano_banana", "kontext_multi"]
    max_images: int
    price_per_image: Money


_O1_DURATIONS = free_seconds(3, 10, 5)  # "3".."10", 5 first: the default
_O3_DURATIONS = free_seconds(3, 15, 5)  # "3".."15"
# O1/O3 reference-to-video: "max 7 total" (elements + image_urls + the start image), providers.md §2.7. Every
# character is one element, so this is also how many characters one shot may hold.
REFERENCE_MAX_INPUTS = 7
# O3's storyboard: `multi_prompt: [{prompt, duration}]`, each duration the same string enum "3".."15" (fal's
# KlingV3MultiPromptElement), adding up to the clip's; 6 shots at most and 512 characters a shot, as on Kling's own
# API (providers-2026.md §1.1), since fal passes them on to Kling.
O3_MULTI_SHOT = MultiShot(max_shots=6, min_shot_seconds=3, shot_prompt_max=512)


def _reference_to_video(durations: tuple[int, ...], price: Money, note: str, **o3: Any) -> VideoEndpoint:
    """O1/O3 reference-to-video: 7 inputs at most in all (elements + image_urls + frames), no negative prompt."""
    return VideoEndpoint("reference", durations, REFERENCE_MAX_INPUTS, False, DIALECT, price, note=note, **o3)


def _o3(price: Money, audio_price: Money | None, note: str) -> VideoEndpoint:
    return _reference_to_video(
        _O3_DURATIONS,
        price,
        note,
        audio=True,
        audio_price_per_second=audio_price,
        frames=True,
        multi_shot=O3_MULTI_SHOT,
    )


_O1_NOTE = "Kling O1: each character's views as one element, outfits and props as elements too (7 in all)"
_O3_NOTE = "Kling O3: several characters as elements, 3-15 s, audio, start/end frames, up to 6 shots"
# Prices from reference/providers.md §2.7/§2.8 (USD). [T] marks a third-party figure, [?] an unconfirmed fact.
VIDEO_ENDPOINTS: dict[str, VideoEndpoint] = {
    "fal-ai/kling-video/o1/reference-to-video": _reference_to_video(_O1_DURATIONS, Money.from_usd("0.112"), _O1_NOTE),
    "fal-ai/kling-video/o1/standard/reference-to-video": _reference_to_video(
        _O1_DURATIONS, Money.from_usd("0.084"), _O1_NOTE + "; standard quality"
    ),
    # [T] providers.md gives ~$0.14/s for O3 standard and pro; a copy of fal's O3 pro page gives $0.112/s with audio
    # off and $0.14/s with audio on. [?] standard's audio surcharge: none found, so $0.14/s either way (an estimate
    # that holds no less than the pro price with audio).
    "fal-ai/kling-video/o3/standard/reference-to-video": _o3(Money.from_usd("0.14"), None, _O3_NOTE),
    "fal-ai/kling-video/o3/pro/reference-to-video": _o3(Money.from_usd("0.112"), Money.from_usd("0.14"), _O3_NOTE),
    # [O] $0.42/s (its page); [?] any audio surcharge
    "fal-ai/kling-video/o3/4k/reference-to-video": _o3(Money.from_usd("0.42"), None, _O3_NOTE + "; 4K"),
    # Kling 1.6 elements: up to 4 input_image_urls, which the prompt cannot name; takes a negative prompt.
    "fal-ai/kling-video/v1.6/standard/elements": VideoEndpoint(
        "elements",
        (5, 10),
        4,
        True,
        PLAIN,
        Money.from_usd("0.056"),
        note="Kling 1.6: 1-4 views of one character; a negative prompt; no audio, frames or storyboard",
    ),
}
IMAGE_ENDPOINTS: dict[str, ImageEndpoint] = {
    "fal-ai/bytedance/seedream/v4/edit": ImageEndpoint("seedream", 10, Money.from_usd("0.03")),
    "fal-ai/nano-banana/edit": ImageEndpoint("nano_banana", 10, Money.from_usd("0.039")),  # [T] price, [?] image count
    "fal-ai/nano-banana-2/edit": ImageEndpoint("nano_banana", 10, Money.from_usd("0.08")),  # [?] image count
    "fal-ai/flux-pro/kontext/multi": ImageEndpoint("kontext_multi", 10, Money.from_usd("0.04")),  # [?] image count
}
# Seedream `image_size` per aspect ratio: at least 921,600 px of area (its minimum), each side <= 4096.
SHEET_SIZES: dict[str, tuple[int, int]] = {"16:9": (2048, 1152), "9:16": (1152, 2048), "1:1": (1536, 1536)}


def _video_row(model: str, endpoint: VideoEndpoint) -> ModelRow:
    return ModelRow(
        model=model,
        kinds=frozenset({WorkKind.ANIMATE}),
        durations=endpoint.durations,
        free_durations=endpoint.family == "reference",
        aspect_ratios=ASPECT_RATIOS,
        max_images=endpoint.max_images,
        max_subjects=REFERENCE_MAX_INPUTS if endpoint.family == "reference" else 1,  # one element per character
        start_frame="start_image_url" if endpoint.frames else None,
        end_frame="end_image_url" if endpoint.frames else None,
        multi_shot=endpoint.multi_shot,
        audio=endpoint.audio,
        negative_prompt=endpoint.negative_prompt,
        prompt_max_chars=PROMPT_MAX_CHARS,
        element_syntax=endpoint.element_syntax,
        price_per_second={"": endpoint.price_per_second},
        audio_price_per_second={"": endpoint.audio_price_per_second} if endpoint.audio_price_per_second else {},
        route=model,
        note=endpoint.note,
    )


def _image_row(model: str, endpoint: ImageEndpoint) -> ModelRow:
    return ModelRow(
        model=model,
        kinds=frozenset({WorkKind.SHEET}),
        max_images=endpoint.max_images,
        prompt_max_chars=PROMPT_MAX_CHARS,
        price_per_image=endpoint.price_per_image,
        route=model,
    )


@dataclass(frozen=True)
class _Handle:
    """A submitted request, as kept in `Submission.status_url`."""

    status_url: str
    response_url: str
    cancel_url: str
    kind: WorkKind
    duration: int | None

    def encode(self) -> str:
        record = {
            "v": 1,
            "status_url": self.status_url,
            "response_url": self.response_url,
            "cancel_url": self.cancel_url,
            "kind": self.kind.value,
            "duration": self.duration,
        }
        return json.dumps(record, separators=(",", ":"))


class FalProvider:
    """The fal.ai queue API; see the module docstring for the protocol and how tasks survive a restart."""

    def __init__(
        self,
        *,
        key: str,
        base_url: str = DEFAULT_BASE_URL,
        video_model: str = DEFAULT_VIDEO_MODEL,
        image_model: str = DEFAULT_IMAGE_MODEL,
        max_concurrency: int = 2,
        timeout: float = 30.0,
        max_download_bytes: int = 200 * 1024 * 1024,
        owner: KeyOwner = BOT_KEYS,
        download_deadline: float = 600.0,
    ) -> None:
        """`download_deadline`: seconds a whole result download may take (each read has `timeout`); past it the
        download is retried, so a host that drips bytes cannot hold a job and its slot."""
        if not key.strip():
            raise ValueError("a fal.ai key is needed")
        self._owner = owner
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if video_model not in VIDEO_ENDPOINTS:
            raise ValueError(f"unsupported fal video model {video_model!r}; known: {', '.join(VIDEO_ENDPOINTS)}")
        if image_model not in IMAGE_ENDPOINTS:
            raise ValueError(f"unsupported fal image model {image_model!r}; known: {', '.join(IMAGE_ENDPOINTS)}")
        self._key = key.strip()
        self._base_url = base_url.rstrip("/")
        self._origin = _origin(httpx.URL(self._base_url))
        self._image = IMAGE_ENDPOINTS[image_model]
        self.video_model = video_model
        self.image_model = image_model
        self._max_download = max_download_bytes
        self._download_deadline = download_deadline
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self.capabilities = Capabilities(
            name="fal",
            display_name="fal.ai",
            kinds=frozenset({WorkKind.ANIMATE, WorkKind.SHEET}),
            # every clip endpoint (a server may choose any), the configured one the default; the one image model
            rows=(
                *(_video_row(model, e) for model, e in VIDEO_ENDPOINTS.items()),
                _image_row(image_model, self._image),
            ),
            default_model=video_model,
            image_limits=FAL_IMAGE_LIMITS,
            max_concurrency=max_concurrency,
            needs_key=True,
            typical_seconds=TYPICAL_SECONDS,
            image_model=image_model,
            callbacks=True,
            findable=False,  # no lookup by our job id: a submit whose outcome is unknown waits for a manager
        )

    # ----------------------------------------------------------------------------------------------------------
    # The Provider protocol

    async def submit(self, request: RenderRequest) -> Submission:
        endpoint = self._validate(request)
        content = await asyncio.to_thread(self._encoded_body, request)  # base64 + JSON of a few MB: off the loop
        url = f"{self._base_url}/{endpoint}"
        # fal POSTs the result there on completion: the bot takes it as a nudge to poll now (bot.jobs.callbacks)
        params = {"fal_webhook": request.callback_url} if request.callback_url else None
        response = await self._request("POST", url, content=content, params=params, submitting=True)
        if not response.is_success:
            raise self._http_error(response, stage="submit", endpoint=endpoint)
        try:
            data = _json_object(response)
        except RetryableError as error:  # a success we cannot read: fal may well have queued it
            raise OutcomeUnknownError(error.message, detail=error.detail, code="bad_answer") from None
        request_id = str(data.get("request_id") or "").strip()
        if not request_id:
            raise FinalError(
                "fal.ai accepted the shot but sent no request id, so it cannot be followed.",
                detail=self._redact(response.text[:_MAX_DETAIL]),
                code="bad_answer",
            )
        handle = self._handle_from_answer(data, endpoint, request_id, request)
        log.info("fal: job %s submitted to %s as request %s", request.job_id, endpoint, request_id)
        return Submission(task_id=request_id, status_url=handle.encode())

    async def find(self, job_id: int) -> Submission | None:
        """Always None: fal's queue has no lookup by a client's key and no idempotency key or metadata field on
        submit (reference/providers.md §2.2), so a task submitted before a crash cannot be found by our job id
        (`Capabilities.findable` is False). A submit whose answer never arrived, or a crash between the answer and
        the worker saving it, leaves the job to a manager (JobState.UNSURE) rather than paying twice. Once the
        answer is stored, the task is followed by its stored URLs, never resubmitted."""
        return None

    async def poll(self, submission: Submission) -> PollResult:
        handle = self._handle(submission)
        response = await self._request("GET", handle.status_url, params={"logs": "0"})
        if not response.is_success:
            raise self._http_error(response, stage="status")
        data = _json_object(response)
        status = data.get("status")
        if status == "IN_QUEUE":
            position = data.get("queue_position")
            log.debug("fal: request %s in queue at position %s", submission.task_id, position)
            return PollResult(TaskStatus.QUEUED)
        if status == "IN_PROGRESS":
            return PollResult(TaskStatus.RUNNING)
        if status == "COMPLETED":
            return await self._completed(handle, data)
        raise RetryableError(
            "fal.ai sent a status I don't understand; I'll ask again.",
            detail=self._redact(str(status)[:100]),
            code="bad_status",
        )

    async def cancel(self, submission: Submission) -> None:
        handle = self._handle(submission)
        response = await self._request("PUT", handle.cancel_url)
        if response.is_success:
            return
        state = _json_or_none(response)
        if isinstance(state, dict) and state.get("status") in ("ALREADY_COMPLETED", "NOT_FOUND"):
            return  # finished or gone: nothing left to stop
        raise self._http_error(response, stage="cancel")

    async def fetch(self, artifact: Artifact) -> bytes:
        """Download a result within `max_download_bytes`, streaming; the key is never sent to the file host."""
        url = artifact.url
        if url.startswith("data:"):
            return self._decode_data_uri(url)
        if httpx.URL(url).scheme not in ("http", "https"):
            raise FinalError("fal.ai returned a result link I cannot download.", detail=url[:100], code="bad_url")
        limit_mb = self._max_download / 1048576
        too_large = FinalError(
            f"The result from fal.ai is larger than this bot accepts ({limit_mb:g} MB).", code="too_large"
        )
        try:
            async with (
                transport_errors(
                    "Downloading the result from fal.ai timed out; I'll try again.",
                    "Could not download the result from fal.ai; I'll try again.",
                    coded=False,
                ),
                asyncio.timeout(self._download_deadline),
                self._client.stream("GET", url, follow_redirects=True) as response,
            ):
                if response.status_code in (403, 404, 410):
                    raise FinalError(
                        "The result's download link at fal.ai has expired; the clip is no longer available.",
                        detail=f"HTTP {response.status_code}",
                        code="expired",
                    )
                if not response.is_success:
                    raise self._http_error(response, stage="download")
                try:
                    data = await read_capped(response, self._max_download)
                except TooLargeError:
                    raise too_large from None
        except TimeoutError:
            raise RetryableError(
                f"Downloading the result from fal.ai took longer than {self._download_deadline:g} s; I'll try again.",
                code="download_deadline",
            ) from None
        return data

    def estimate_cost(self, request: RenderRequest) -> Money:
        if request.kind is WorkKind.SHEET:
            return self._image.price_per_image  # one image per sheet
        row = self.capabilities.find_row(request.model) or self.capabilities.default_row
        return row.clip_cost(None, request.duration, audio=request.audio)

    async def close(self) -> None:
        await self._client.aclose()

    async def ping(self) -> float:
        """The time to first byte (seconds) of a status query for a request that does not exist, for `likeness
        doctor`. fal has no free call meant for checking a key, but every queue call is authenticated first: a
        refused key answers 401 (FinalError with code KEY_REFUSED), a locked account 403, an accepted one 404.
        RetryableError (`timeout`, `network`) when fal cannot be reached."""
        url = f"{self._base_url}/{_app_id(self.video_model)}/requests/{NO_SUCH_REQUEST}/status"
        headers = {"Authorization": f"Key {self._key}", "Accept": "application/json"}
        with transport_errors("fal.ai did not answer in time.", "Could not reach fal.ai."):
            response, first_byte = await timed_request(self._client, "GET", url, headers=headers)
        if response.is_success or response.status_code == 404:
            return first_byte
        error = self._http_error(response, stage="status")
        if error.code == "auth" and response.status_code == 401:
            raise FinalError(error.message, detail=error.detail, code=KEY_REFUSED)
        raise error

    # ----------------------------------------------------------------------------------------------------------
    # Requests

    def _validate(self, request: RenderRequest) -> str:
        """The endpoint for this request, or a final error with what fal would refuse (before paying for a 422)."""
        problems: list[str] = []
        if request.kind is WorkKind.SHEET:
            endpoint = self.image_model
            if request.model != self.image_model:
                problems.append(f"unknown image model {request.model!r} (available: {self.image_model})")
            if len(request.images) > self._image.max_images:
                problems.append(f"at most {self._image.max_images} reference images, got {len(request.images)}")
        elif request.kind is WorkKind.ANIMATE:
            endpoint = request.model
            row = self.capabilities.find_row(request.model)
            if row is None:
                problems.append(f"unknown model {request.model!r} (available: {', '.join(self.capabilities.models)})")
            else:
                problems += request_problems(row, request)  # durations, audio, frames, characters, shots...
                if VIDEO_ENDPOINTS[request.model].family == "reference":
                    problems += _reference_problems(request)
        else:
            raise FinalError(f"fal.ai cannot do {request.kind.value} work here.", code="unsupported")
        if not request.images:
            problems.append("at least one reference image is needed")
        if not request.shots and len(request.prompt) > PROMPT_MAX_CHARS:
            problems.append(f"the prompt is longer than {PROMPT_MAX_CHARS} characters")
        if problems:
            raise FinalError("fal.ai cannot take this request: " + "; ".join(problems) + ".", code="invalid")
        return endpoint

    def _encoded_body(self, request: RenderRequest) -> bytes:
        return json.dumps(self.body(request), separators=(",", ":")).encode()

    def body(self, request: RenderRequest) -> dict[str, Any]:
        """The model input fal receives for this request (public so tests can compare)."""
        if request.kind is WorkKind.SHEET:
            return self._sheet_body(request)
        endpoint = VIDEO_ENDPOINTS[request.model]
        if endpoint.family == "elements":
            body: dict[str, Any] = {
                "prompt": request.prompt,
                "input_image_urls": [_data_uri(image) for image in request.images],
                "duration": str(request.duration),
                "aspect_ratio": request.aspect_ratio,
            }
            if request.negative_prompt:
                body["negative_prompt"] = request.negative_prompt
            return body
        elements, image_urls = fal_elements(request.images)
        if request.shots:  # a storyboard: `multi_prompt` instead of `prompt` (fal takes one or the other)
            body = {
                "multi_prompt": [{"prompt": shot.prompt, "duration": str(shot.duration)} for shot in request.shots],
                "shot_type": "customize",
            }
        else:
            body = {"prompt": request.prompt}
        body["elements"] = elements
        if image_urls:
            body["image_urls"] = image_urls
        if request.start_frame is not None:
            body["start_image_url"] = _frame_uri(request.start_frame)
        if request.end_frame is not None:
            body["end_image_url"] = _frame_uri(request.end_frame)
        body["duration"] = str(request.duration)  # a string enum ("3".."15"): fal answers 422 to a number
        body["aspect_ratio"] = request.aspect_ratio
        if endpoint.audio:
            body["generate_audio"] = request.audio  # said either way: O3's default (off) is not v3's (on)
        return body

    def _sheet_body(self, request: RenderRequest) -> dict[str, Any]:
        urls = [_data_uri(image) for image in request.images]
        aspect = request.aspect_ratio if request.aspect_ratio in SHEET_SIZES else "16:9"
        if self._image.family == "seedream":
            width, height = SHEET_SIZES[aspect]
            return {
                "prompt": request.prompt,
                "image_urls": urls,
                "image_size": {"width": width, "height": height},
                "num_images": 1,
                "max_images": 1,
                "enable_safety_checker": True,
            }
        return {
            "prompt": request.prompt,
            "image_urls": urls,
            "num_images": 1,
            "aspect_ratio": aspect,
            "output_format": "png",
        }

    def _handle_from_answer(
        self, data: dict[str, Any], endpoint: str, request_id: str, request: RenderRequest
    ) -> _Handle:
        """The URLs fal returned, verbatim; fal's documented scheme only for one it left out."""
        fallback = f"{self._base_url}/{_app_id(endpoint)}/requests/{request_id}"
        urls = {
            "status_url": data.get("status_url") or f"{fallback}/status",
            "response_url": data.get("response_url") or fallback,
            "cancel_url": data.get("cancel_url") or f"{fallback}/cancel",
        }
        for name, url in urls.items():
            if not isinstance(url, str) or not self._own_origin(url):
                raise FinalError(
                    "fal.ai answered with a link to another host; the bot will not send its key there.",
                    detail=f"{name}: {str(url)[:200]}",
                    code="bad_url",
                )
        duration = request.duration if request.kind is WorkKind.ANIMATE else None
        return _Handle(urls["status_url"], urls["response_url"], urls["cancel_url"], request.kind, duration)

    def _handle(self, submission: Submission) -> _Handle:
        stored = (submission.status_url or "").strip()
        lost = FinalError("The bot lost track of this fal.ai request.", detail=stored[:200], code="lost")
        if stored.startswith("{"):
            try:
                record = json.loads(stored)
                handle = _Handle(
                    status_url=str(record["status_url"]),
                    response_url=str(record["response_url"]),
                    cancel_url=str(record["cancel_url"]),
                    kind=WorkKind(record.get("kind", WorkKind.ANIMATE.value)),
                    duration=int(record["duration"]) if record.get("duration") is not None else None,
                )
            except (ValueError, KeyError, TypeError):
                raise lost from None
        elif stored.endswith("/status"):  # a bare status URL: fal's documented siblings
            response_url = stored.removesuffix("/status")
            handle = _Handle(stored, response_url, f"{response_url}/cancel", WorkKind.ANIMATE, None)
        else:
            raise lost
        if not all(self._own_origin(url) for url in (handle.status_url, handle.response_url, handle.cancel_url)):
            raise FinalError(
                "This fal.ai request points at another host; the bot will not send its key there.",
                detail=handle.status_url[:200],
                code="bad_url",
            )
        return handle

    def _own_origin(self, url: str) -> bool:
        try:
            return _origin(httpx.URL(url)) == self._origin
        except httpx.InvalidURL:
            return False

    async def _request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        submitting: bool = False,
    ) -> httpx.Response:
        """One call to fal's queue API, with the key; network failures become retryable errors."""
        headers = {"Authorization": f"Key {self._key}", "Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        with transport_errors(
            "fal.ai did not answer in time; I'll try again.",
            "Could not reach fal.ai; I'll try again.",
            paid_submit=_UNANSWERED_SUBMIT if submitting else None,  # fal may have queued it: never simply sent again
        ):
            return await self._client.request(method, url, content=content, params=params, headers=headers)

    # ----------------------------------------------------------------------------------------------------------
    # A finished request

    async def _completed(self, handle: _Handle, status: dict[str, Any]) -> PollResult:
        status_error = _text(status.get("error"))
        error_type = _text(status.get("error_type"))
        if error_type in CANCELED_ERROR_TYPES:
            return PollResult(TaskStatus.CANCELED)
        try:
            response = await self._request("GET", handle.response_url)
        except RetryableError:
            if status_error:  # the status already says why: don't hold the job on a second failure
                return PollResult(TaskStatus.FAILED, error=self._status_failure(status_error, error_type))
            raise
        if response.is_success:
            if status_error:
                return PollResult(TaskStatus.FAILED, error=self._status_failure(status_error, error_type))
            return self._output(handle, _json_object(response))
        code = response.status_code
        if code == 499:
            return PollResult(TaskStatus.CANCELED)
        transient = code in (408, 409, 429) or (code >= 500 and "x-fal-request-id" not in response.headers)
        if code in (401, 402, 403) or ((transient or code == 404) and not status_error):
            raise self._http_error(response, stage="result")  # the key, the balance, or not the request's fault
        if transient or code == 404:
            return PollResult(TaskStatus.FAILED, error=self._status_failure(status_error, error_type))
        return PollResult(TaskStatus.FAILED, error=self._request_failure(response, status_error, error_type))

    def _output(self, handle: _Handle, output: dict[str, Any]) -> PollResult:
        video = output.get("video")
        if isinstance(video, dict) and isinstance(video.get("url"), str):
            mime = _text(video.get("content_type")) or "video/mp4"
            duration = float(handle.duration) if handle.duration is not None else None
            return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=(Artifact(video["url"], mime, duration),))
        images = output.get("images")
        if isinstance(images, list) and images:
            flags = output.get("has_nsfw_concepts")
            flagged = flags if isinstance(flags, list) else []
            artifacts = tuple(
                Artifact(image["url"], _text(image.get("content_type")) or "image/png")
                for index, image in enumerate(images)
                if isinstance(image, dict)
                and isinstance(image.get("url"), str)
                and not (index < len(flagged) and flagged[index] is True)
            )
            if artifacts:
                return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=artifacts)
            if flagged:
                error = FinalError(
                    "fal.ai's safety checker blocked the generated image. Try other reference images or wording.",
                    detail="has_nsfw_concepts",
                    code="content_policy",
                )
                return PollResult(TaskStatus.FAILED, error=error)
        error = FinalError(
            "fal.ai finished but returned no file.", detail=self._redact(json.dumps(output)[:_MAX_DETAIL]), code="empty"
        )
        return PollResult(TaskStatus.FAILED, error=error)

    def _status_failure(self, status_error: str, error_type: str) -> FinalError:
        what = status_error or error_type or "no reason given"
        return FinalError(
            "fal.ai could not render this shot.",
            detail=self._redact(what[:_MAX_DETAIL]),
            code=error_type or "failed",
        )

    def _request_failure(self, response: httpx.Response, status_error: str, error_type: str) -> FinalError:
        """Why a completed request failed, from the error its result answered with."""
        body = _json_or_none(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, list) and detail:
            return self._detail_error(detail)
        kind = error_type or (_text(body.get("error_type")) if isinstance(body, dict) else "")
        words = _text(detail) or status_error or response.text[:_MAX_DETAIL] or f"HTTP {response.status_code}"
        if response.status_code >= 500:
            return FinalError(
                "fal.ai could not render this shot because of a problem on its side; nothing was charged. "
                "Try again in a while.",
                detail=self._redact(words[:_MAX_DETAIL]),
                code=kind or "server_error",
            )
        return FinalError("fal.ai refused this shot.", detail=self._redact(words[:_MAX_DETAIL]), code=kind or "failed")

    def _detail_error(self, detail: Sequence[Any]) -> FinalError:
        """A 422 `detail[]` list as one readable error: "prompt: field required; duration: ..."."""
        items = [item for item in detail if isinstance(item, dict)]
        safety = [item for item in items if "content_policy" in _text(item.get("type"))]
        if safety:
            fields = ", ".join(dict.fromkeys(_field(item) for item in safety))
            return FinalError(
                f"fal.ai's content checker blocked this shot ({fields}). Change the description or the reference "
                "images and try again.",
                detail=self._redact("; ".join(_text(item.get("msg")) for item in safety)[:_MAX_DETAIL]),
                code="content_policy",
            )
        summary = "; ".join(
            f"{_field(item)}: {(_text(item.get('msg')) or _text(item.get('type'))).rstrip('.')}" for item in items
        )
        code = _text(items[0].get("type")) if items else ""
        return FinalError(
            f"fal.ai refused this shot: {self._redact(summary[:_MAX_DETAIL]) or 'invalid input'}.",
            code=code or "validation",
        )

    # ----------------------------------------------------------------------------------------------------------
    # Errors

    def _http_error(self, response: httpx.Response, *, stage: str, endpoint: str = "") -> ProviderError:
        """An HTTP error answer as a typed error. `stage`: submit, status, result, cancel or download."""
        code = response.status_code
        body = _json_or_none(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        words = self._redact((_text(detail) if not isinstance(detail, list) else "") or response.text[:_MAX_DETAIL])
        words = words[:_MAX_DETAIL]
        if _balance_problem(code, words):
            return FinalError(
                "The fal.ai account is out of credit or locked. An admin needs to top it up at fal.ai.",
                detail=words,
                code="balance",
            )
        if code in (401, 403):
            where = self._owner.fix or "in the bot's settings (LIKENESS_FAL_KEY)"
            return FinalError(
                f"fal.ai refused {self._owner.whose} API key. An admin needs to check the fal.ai key {where}.",
                detail=f"HTTP {code}",
                code="auth",
            )
        if code in (408, 409, 429) or _needs_retry(response):
            full = code in (409, 429)  # a rate or concurrency limit: fal is full, not failing
            return RetryableError(
                f"{'fal.ai is busy right now' if full else 'fal.ai timed out'}; I'll try again shortly.",
                detail=words,
                code=(_text(body.get("error_type")) if isinstance(body, dict) else "") or "rate_limited",
                retry_after=_retry_after(response.headers.get("retry-after")),
                rate_limited=full,
            )
        if code == 503:  # busy: fal did not take the request
            return RetryableError(
                "fal.ai is busy right now; I'll try again shortly.",
                detail=words or f"HTTP {code}",
                code=(_text(body.get("error_type")) if isinstance(body, dict) else "") or "unavailable",
                retry_after=_retry_after(response.headers.get("retry-after")),
                rate_limited=True,
            )
        if code >= 500 and stage == "submit":  # it may have been queued before fal failed to answer
            return OutcomeUnknownError(
                "fal.ai had a server problem while taking the shot.",
                detail=words or f"HTTP {code}",
                code=(_text(body.get("error_type")) if isinstance(body, dict) else "") or "server_error",
            )
        if code >= 500:
            return RetryableError(
                "fal.ai had a server problem; I'll try again.",
                detail=words or f"HTTP {code}",
                code=(_text(body.get("error_type")) if isinstance(body, dict) else "") or "server_error",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        if isinstance(detail, list) and detail:
            return self._detail_error(detail)
        if code == 404:
            if stage == "submit":
                return FinalError(f"fal.ai has no model {endpoint}.", detail=words, code="unknown_model")
            if stage == "download":
                return FinalError("The result at fal.ai is no longer available.", detail=words, code="expired")
            return FinalError(
                "fal.ai no longer knows this request (it may have expired).", detail=words, code="not_found"
            )
        return FinalError(f"fal.ai refused the {stage} request (HTTP {code}).", detail=words, code=f"http_{code}")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[key]") if self._key in text else text

    def _decode_data_uri(self, url: str) -> bytes:
        header, _, payload = url.partition(",")
        if len(payload) * 3 // 4 > self._max_download:
            raise FinalError("The result from fal.ai is larger than this bot accepts.", code="too_large")
        try:
            return base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
        except (binascii.Error, ValueError):
            raise FinalError("fal.ai returned a damaged result.", code="bad_result") from None


# --------------------------------------------------------------------------------------------------------------
# Elements: the same grouping as the prompt's tokens (DIALECT)


def _reference_problems(request: RenderRequest) -> list[str]:
    """What O1/O3 refuse beyond the row: more than 7 elements, images and frames in all."""
    tokens = set(_tokens(request.images))
    frames = (request.start_frame is not None) + (request.end_frame is not None)
    if len(tokens) + frames > REFERENCE_MAX_INPUTS:
        return [
            f"at most {REFERENCE_MAX_INPUTS} characters, outfit or prop elements, extra views and frames in all "
            f"(this shot has {len(tokens) + frames})"
        ]
    return []


def fal_elements(images: Sequence[ReferenceImage]) -> tuple[list[dict[str, Any]], list[str]]:
    """`elements` and `image_urls` for O1/O3, built from the tokens the compiled prompt used for these images.

    `DIALECT` names each image `@ElementN` or `@ImageN`: the images sharing `@ElementN` form
    element N (the first is its frontal image, the rest its reference images: one character's views), every bound
    element is its own `@ElementN`, and a character's views past the fourth are `@ImageN` in `image_urls`. fal
    answers 422 to an element whose `reference_image_urls` is empty (providers-2026.md §1.2), so an element with a
    single image repeats it as its reference.
    """
    tokens = _tokens(images)
    grouped: dict[int, list[str]] = {}
    image_urls: dict[int, str] = {}
    for image, token in zip(images, tokens, strict=True):
        uri = _data_uri(image)
        if token.startswith("@Element"):
            grouped.setdefault(int(token.removeprefix("@Element")), []).append(uri)
        else:
            image_urls[int(token.removeprefix("@Image"))] = uri
    elements = []
    for number in sorted(grouped):
        frontal, *references = grouped[number]
        elements.append(
            {"frontal_image_url": frontal, "reference_image_urls": (references or [frontal])[:ELEMENT_MAX_REFERENCES]}
        )
    return elements, [image_urls[number] for number in sorted(image_urls)]


# --------------------------------------------------------------------------------------------------------------
# Small helpers


def _data_uri(image: ReferenceImage) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def _frame_uri(frame: Frame) -> str:
    return f"data:{frame.mime};base64,{base64.b64encode(frame.data).decode('ascii')}"


def _app_id(endpoint: str) -> str:
    """`owner/name` of an endpoint id: the part status and result URLs keep (3 parts for workflows/comfy)."""
    parts = endpoint.split("/")
    keep = 3 if parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    default = 443 if url.scheme == "https" else 80
    return url.scheme, url.host, url.port or default


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    data = _json_or_none(response)
    if not isinstance(data, dict):
        raise RetryableError(
            "fal.ai sent an answer I could not read; I'll ask again.",
            detail=f"HTTP {response.status_code}, {len(response.content)} bytes",
            code="bad_answer",
        )
    return data


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _field(item: dict[str, Any]) -> str:
    """ "prompt", "elements.0.reference_image_urls" from a `loc` like ["body", "elements", 0, ...]."""
    loc = item.get("loc")
    parts = [str(part) for part in loc] if isinstance(loc, list) else []
    if parts[:1] == ["body"]:
        parts = parts[1:]
    return ".".join(parts) or "input"


def _needs_retry(response: httpx.Response) -> bool:
    flag = response.headers.get("x-fal-needs-retry") or response.headers.get("x-fal-retryable") or ""
    return flag.strip().lower() in ("1", "true") and response.status_code < 500


def _balance_problem(code: int, words: str) -> bool:
    folded = words.casefold()
    return code == 402 or (code in (401, 403) and ("exhausted balance" in folded or "user is locked" in folded))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), within 0..600; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


# --------------------------------------------------------------------------------------------------------------
# The plug-in: settings, keys, factory (bot.providers.spec)


class FalSettings(BaseModel):
    key: SecretStr | None = Field(default=None, description="fal.ai API key. Never logged.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="fal.ai queue host.")
    concurrency: int = Field(default=2, ge=1, le=100, description="fal.ai requests your account runs at once.")


def _build(context: BuildContext[FalSettings]) -> FalProvider:
    return FalProvider(
        key=context.keys.get("key") or "",
        base_url=context.settings.base_url,
        max_concurrency=context.settings.concurrency,
        owner=context.owner,
        download_deadline=context.download_deadline,
    )


SPEC = ProviderSpec(
    name="fal",
    label="fal.ai",
    settings=FalSettings,
    build=_build,
    key_fields=(
        KeyField(
            "key",
            "API key",
            "API key",
            "id:secret, from fal.ai > Keys",
            10,
            300,
            re.compile(r"^[^\s:]+:[^\s:]+$"),
            "`id:secret`",
        ),
    ),
    key_source="fal.ai > Dashboard > Keys (an id:secret pair)",
    dialects=(DIALECT,),
    calls_back=True,
    rows=(
        *(_video_row(model, endpoint) for model, endpoint in VIDEO_ENDPOINTS.items()),
        *(_image_row(model, endpoint) for model, endpoint in IMAGE_ENDPOINTS.items()),
    ),
)
