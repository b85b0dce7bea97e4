"""Kling's official API (the Kling AI developer platform): clips from reference images, and character sheets.

What it sends where:
- a clip bound to one image: `POST /v1/videos/image2video`, the image as the first frame, padded with white to
  the aspect ratio asked for (image2video ignores `aspect_ratio`: the clip takes the first frame's shape);
- a clip bound to 2-4 images on `kling-v1-6`: `POST /v1/videos/multi-image2video` with the images as subjects
  (that endpoint takes no other model; other models get the first image through image2video);
- a sheet: `POST /v1/images/generations` on `kling-v1-5` with the front view as a `subject` reference;
- on `kling-video-o1` (omni, when the admin configures it): the character's views become one Kling element
  (`POST /v1/general/advanced-custom-elements`, asynchronous), keyed by the views' bytes
  (`external_task_id` = `<prefix>el-<sha256[:16]>`), so every shot of the same character version, and the bot
  after a restart, reuses it with no database; while Kling is still making it, `submit` raises a rate-limited
  RetryableError (`element_pending`) and the worker sends the shot again later. The clip is then
  `POST /v1/videos/omni-video` with `element_list` (the character, `<<<element_1>>>` in the prompt) and
  `image_list` (bound outfits and props, `<<<image_N>>>`).

Every task carries `external_task_id` = the job id (with an optional per-install prefix), which Kling keeps
unique per account and accepts in the query path. `find(job_id)` looks the task up there, so a job whose
submit answer was lost (timeout, dropped connection, a crash) is recovered instead of paid for twice.

Auth is a JWT (HS256, `iss` = access key, 30 minutes) signed with the secret key, reused until 5 minutes
before it expires; or a single API key sent as the bearer token. A 401 re-signs once; a second is final.
Kling also reports errors in the body `code` with HTTP 200 (1303 concurrency, failed tasks): the body is
read on every answer, not only the status. Neither the key, the secret nor a token is ever put in a message
or a log line.

Kling has no cancel endpoint: `cancel` is a no-op, the task finishes (and is billed) at Kling.
Callbacks: a shot's `callback_url` (RenderRequest.callback_url, when the bot has a public callback URL) goes
to Kling, which POSTs the task on every status change. The bot takes a callback only as a nudge to poll the
task now (bot.jobs.callbacks): deliveries may repeat, arrive out of order or be forged, and Kling advises confirming
by polling. `parse_callback` reads a callback body into the same `PollResult`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from PIL import Image
from pydantic import BaseModel, Field, SecretStr

from bot.domain import Money, WorkKind
from bot.domain.errors import UserFacingError
from bot.imaging.prep import KLING, prepare_for_provider
from bot.providers import kling_paths
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
from bot.providers.http import KEY_REFUSED, TooLargeError, read_capped, timed_request, transport_errors
from bot.providers.spec import BuildContext, KeyField, Keys, ProviderSpec, secret

log = logging.getLogger(__name__)

NAME = "kling"
IMAGE2VIDEO = "/v1/videos/image2video"
MULTI_IMAGE2VIDEO = "/v1/videos/multi-image2video"
IMAGE_GENERATIONS = "/v1/images/generations"
OMNI_VIDEO = "/v1/videos/omni-video"
ELEMENTS = "/v1/general/advanced-custom-elements"
ACCOUNT_COSTS = "/account/costs"  # free, no /v1 prefix (providers.md §1.7.10)
ENDPOINTS = (IMAGE2VIDEO, MULTI_IMAGE2VIDEO, IMAGE_GENERATIONS, OMNI_VIDEO)

VIDEO_UNIT_USD = Money.from_usd("0.14")  # one prepaid video unit
IMAGE_UNIT_USD = Money.from_usd("0.0035")  # one prepaid image unit
MODES = ("std", "pro")

# Units per second of video by model and mode (reference/providers.md §1.9; no std/pro split on the masters).
_STD_PRO_04_07 = {"std": Decimal("0.4"), "pro": Decimal("0.7")}
_STD_PRO_03_05 = {"std": Decimal("0.3"), "pro": Decimal("0.5")}
_MASTER = {"std": Decimal("2.0"), "pro": Decimal("2.0")}
VIDEO_UNITS_PER_SECOND: dict[str, dict[str, Decimal]] = {
    "kling-v1-5": _STD_PRO_04_07,
    "kling-v1-6": _STD_PRO_04_07,  # image2video and multi-image2video alike
    "kling-v2-1": _STD_PRO_04_07,
    "kling-v2-master": _MASTER,
    "kling-v2-1-master": _MASTER,
    "kling-v2-5-turbo": _STD_PRO_03_05,
    "kling-v2-6": _STD_PRO_03_05,  # image2video is pro only (std is motion control); silent price here
    "kling-v3": {"std": Decimal("0.6"), "pro": Decimal("0.8")},
}
# Native audio (`sound: "on"`), per second (providers.md §1.9).
AUDIO_UNITS_PER_SECOND: dict[str, dict[str, Decimal]] = {
    "kling-v2-6": {"pro": Decimal("1.0")},
    "kling-v3": {"std": Decimal("0.9"), "pro": Decimal("1.2")},
    "kling-v3-omni": {"std": Decimal("0.9"), "pro": Decimal("1.2")},
}
VIDEO_MODELS = tuple(VIDEO_UNITS_PER_SECOND)
# Omni (providers.md §1.7.7, §1.9): no reference video, so the lower rate of each mode.
OMNI_UNITS_PER_SECOND: dict[str, dict[str, Decimal]] = {
    "kling-video-o1": {"std": Decimal("0.6"), "pro": Decimal("0.8")},
    "kling-v3-omni": {"std": Decimal("0.6"), "pro": Decimal("0.8")},
}
OMNI_MODELS = tuple(OMNI_UNITS_PER_SECOND)
# The new-standard API's models (bot.providers.kling_paths): 3.0 and 3.0-Omni at their `/v1` twins' rates; 3.0-Turbo's
# rate is not published [?]: estimated at kling-v2-5-turbo's, and the charge is what Kling's `billing` reports.
PATH_UNITS_PER_SECOND: dict[str, dict[str, Decimal]] = {
    "kling-3.0": VIDEO_UNITS_PER_SECOND["kling-v3"],
    "kling-3.0-turbo": _STD_PRO_03_05,
    "kling-3.0-omni": OMNI_UNITS_PER_SECOND["kling-v3-omni"],
}
PATH_AUDIO_UNITS_PER_SECOND = {
    "kling-3.0": AUDIO_UNITS_PER_SECOND["kling-v3"],
    "kling-3.0-omni": AUDIO_UNITS_PER_SECOND["kling-v3-omni"],
}
ALL_VIDEO_UNITS: dict[str, dict[str, Decimal]] = {
    **VIDEO_UNITS_PER_SECOND,
    **OMNI_UNITS_PER_SECOND,
    **PATH_UNITS_PER_SECOND,
}
OMNI_MAX_INPUTS = 7  # images + elements, without a reference video
ELEMENT_NAME_MAX = 20
ELEMENT_DESCRIPTION_MAX = 100
ELEMENT_REFER_MAX = 3  # refer_images besides the frontal image: 1..3
ELEMENT_TAG = "o_102"  # character
ELEMENT_LABEL = "likeness"
ELEMENT_PENDING_MESSAGE = "Kling is preparing the character's element…"
ELEMENT_RETRY_SECONDS = 3.0
# Image units per sheet: an image-to-image generation (a reference image given) on kling-v1-5.
IMAGE_UNITS: dict[str, Decimal] = {"kling-v1-5": Decimal("8")}
IMAGE_MODELS = tuple(IMAGE_UNITS)
V3_MODELS = frozenset({"kling-v3", "kling-v3-omni"})  # 3-15 s, sound, multi_shot
V3_MULTI_SHOT = MultiShot(max_shots=6, min_shot_seconds=1, shot_prompt_max=512)

MULTI_IMAGE_MODELS = frozenset({"kling-v1-6"})  # the only model multi-image2video takes
CFG_SCALE_MODELS = frozenset({"kling-v1-5", "kling-v1-6"})  # not supported on kling-v2.x
NO_MODE_MODELS = frozenset({"kling-v2-master", "kling-v2-1-master"})
# (model, mode, seconds) where image2video takes `camera_control` (Kling's capability map: v1-5 pro 5 s only).
CAMERA_CONTROL_SUPPORT = frozenset({("kling-v1-5", "pro", 5)})
# Our camera moves as a `simple` camera_control (exactly one non-zero axis, -10..10). Negative zoom narrows the
# field of view (a push-in); negative horizontal moves the camera left. `static` and `orbit` have no simple form:
# the prompt already names the move.
CAMERA_CONFIG: dict[str, dict[str, int]] = {
    "push_in": {"zoom": -5},
    "pull_out": {"zoom": 5},
    "pan_left": {"horizontal": -5},
    "pan_right": {"horizontal": 5},
}
_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
ASPECT_RATIOS: dict[str, float] = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0}
DURATIONS = (5, 10)
PROMPT_MAX = 2500


def _usd(units: Mapping[str, Decimal]) -> dict[str, Money]:
    return {mode: VIDEO_UNIT_USD * per_second for mode, per_second in units.items()}


# Modes where image2video takes an end frame (`image_tail`): pro on every model but the masters (providers.md §1.8).
_TAIL_PRO = ("pro",)
_RESOLUTIONS = {"std": "720p", "pro": "1080p"}


def _omni_row(name: str, durations: tuple[int, ...], note: str, **changes: Any) -> ModelRow:
    """An omni-video model (`name` gives its prices; `model=` in `changes` renames a twin on the new API): the
    character as one element, outfits and props as images, 7 inputs in all."""
    fields: dict[str, Any] = {
        "model": name,
        "kinds": frozenset({WorkKind.ANIMATE}),
        "durations": durations,
        "free_durations": True,
        "modes": MODES,
        "resolutions": _RESOLUTIONS,
        "aspect_ratios": tuple(ASPECT_RATIOS),
        "max_images": OMNI_MAX_INPUTS,
        "max_subjects": OMNI_MAX_INPUTS,
        "start_frame": "image_list[first_frame]",
        "end_frame": "image_list[end_frame]",
        "element_syntax": ELEMENTS_DIALECT,
        "prompt_max_chars": PROMPT_MAX,
        "price_per_second": _usd(OMNI_UNITS_PER_SECOND[name]),
        "route": OMNI_VIDEO,
        "note": note,
    }
    fields.update(changes)
    return ModelRow(**fields)


def _legacy_row(name: str, note: str = "", **changes: Any) -> ModelRow:
    """An image2video model on the `/v1` routes: 5 or 10 s, the first view as the first frame."""
    units = VIDEO_UNITS_PER_SECOND[name]
    modes = () if name in NO_MODE_MODELS else MODES
    fields: dict[str, Any] = {
        "model": name,
        "kinds": frozenset({WorkKind.ANIMATE}),
        "durations": DURATIONS,
        "modes": modes,
        "resolutions": _RESOLUTIONS if modes else {"": "1080p" if name == "kling-v2-1-master" else "720p"},
        "aspect_ratios": tuple(ASPECT_RATIOS),
        "max_images": 4 if name in MULTI_IMAGE_MODELS else 1,
        "start_frame": "image",
        "end_frame": None if name in NO_MODE_MODELS else "image_tail",
        "end_frame_modes": None if name in NO_MODE_MODELS else _TAIL_PRO,
        "negative_prompt": True,
        "prompt_max_chars": PROMPT_MAX,
        "price_per_second": _usd(units) if modes else {"": VIDEO_UNIT_USD * units["pro"]},
        "route": MULTI_IMAGE2VIDEO + " (2-4 images), " + IMAGE2VIDEO if name in MULTI_IMAGE_MODELS else IMAGE2VIDEO,
        "note": note,
    }
    fields.update(changes)
    return ModelRow(**fields)


TOKEN_LIFETIME = 1800.0  # seconds; the docs' example
TOKEN_MARGIN = 300.0  # a cached token is replaced this long before it expires
NOT_BEFORE_SKEW = 5.0  # `nbf` this far in the past, for clock skew
AUTH_CODES = frozenset({1000, 1001, 1002, 1003, 1004})
BALANCE_CODES = frozenset({1101, 1102})
VALIDATION_CODES = frozenset({1200, 1201, 1202, 1203})
SAFETY_CODES = frozenset({1300, 1301})
BUSY_CODES = frozenset({1302, 1303})
SERVER_CODES = frozenset({5000, 5001, 5002})
UNAVAILABLE_CODES = frozenset({5001, 5002})  # temporarily unavailable (maintenance), internal timeout (backlog)
_MAX_BUSY_DELAY = 30.0
_RISK_WORDS = ("risk", "safety", "sensitive", "inappropriate", "violat", "moderat", "nsfw", "policy")
_NOT_FOUND_WORDS = ("not found", "not exist", "does not exist", "no such")


def _image_tokens(references: Sequence[Referable]) -> tuple[str, ...]:
    return tuple(f"<<<image_{number}>>>" for number in range(1, len(references) + 1))


def _element_tokens(references: Sequence[Referable]) -> tuple[str, ...]:
    """Each character's views are its own element, numbered in order of appearance; bound images count apart."""
    tokens: list[str] = []
    images = 0
    elements: dict[int, int] = {}
    for ref in references:
        if ref.role == "element":
            images += 1
            tokens.append(f"<<<image_{images}>>>")
        else:
            number = elements.setdefault(ref.subject, len(elements) + 1)
            tokens.append(f"<<<element_{number}>>>")
    return tuple(tokens)


# `<<<image_N>>>`, N in order (the omni `image_list`).
IMAGES_DIALECT = Dialect("kling", _image_tokens)
# Omni with the element library: every view of a character is that character's one element `<<<element_N>>>` (N by
# cast order), every bound element image is `<<<image_N>>>`, N from 1 in binding order (the omni `image_list`).
ELEMENTS_DIALECT = Dialect("kling_elements", _element_tokens)


_V3_DURATIONS = free_seconds(3, 15, 5)
ROWS: tuple[ModelRow, ...] = (
    _legacy_row("kling-v1-5", "camera control on pro 5 s"),
    _legacy_row("kling-v1-6", "2-4 views as subjects (multi-image2video); the cheapest way to bind several views"),
    _legacy_row("kling-v2-1"),
    _legacy_row("kling-v2-master"),
    _legacy_row("kling-v2-1-master"),
    _legacy_row("kling-v2-5-turbo"),
    _legacy_row(
        "kling-v2-6",
        "image-to-video is pro only; native audio on request (no end frame with audio)",
        modes=("pro",),
        resolutions={"pro": "1080p"},
        price_per_second={"pro": VIDEO_UNIT_USD * VIDEO_UNITS_PER_SECOND["kling-v2-6"]["pro"]},
        audio=True,
        audio_price_per_second=_usd(AUDIO_UNITS_PER_SECOND["kling-v2-6"]),
    ),
    _legacy_row(
        "kling-v3",
        "Kling 3.0: 3-15 s, native audio, a storyboard of up to 6 shots in one task; start and end frames",
        durations=_V3_DURATIONS,
        free_durations=True,
        end_frame_modes=None,
        multi_shot=V3_MULTI_SHOT,
        audio=True,
        audio_price_per_second=_usd(AUDIO_UNITS_PER_SECOND["kling-v3"]),
    ),
    _omni_row(
        "kling-video-o1",
        free_seconds(3, 10, 5),
        "Kling O1: the character's views as one element, outfits and props as images (7 in all); no negative prompt",
    ),
    _omni_row(
        "kling-v3-omni",
        _V3_DURATIONS,
        "Kling 3.0 Omni: holds a character best; several characters as elements, 3-15 s, audio, up to 6 shots",
        multi_shot=V3_MULTI_SHOT,
        audio=True,
        audio_price_per_second=_usd(AUDIO_UNITS_PER_SECOND["kling-v3-omni"]),
    ),
    ModelRow(
        model="kling-v1-5",
        kinds=frozenset({WorkKind.SHEET}),
        aspect_ratios=("16:9",),
        max_images=1,
        prompt_max_chars=PROMPT_MAX,
        price_per_image=IMAGE_UNIT_USD * IMAGE_UNITS["kling-v1-5"],
        route=IMAGE_GENERATIONS,
        note="sheets: the front view as a subject reference",
    ),
)


_PATHS_NOTE = "new API (model in the path): needs LIKENESS_KLING_API_KEY, Kling's single key"
_PATH_FRAMES = {"start_frame": "contents[first_frame]", "end_frame": "contents[last_frame]", "end_frame_modes": None}
PATH_ROWS: tuple[ModelRow, ...] = (
    _legacy_row(
        "kling-v3",
        f"Kling 3.0 on the {_PATHS_NOTE}",
        model="kling-3.0",
        durations=_V3_DURATIONS,
        free_durations=True,
        multi_shot=V3_MULTI_SHOT,
        audio=True,
        audio_price_per_second=_usd(PATH_AUDIO_UNITS_PER_SECOND["kling-3.0"]),
        route=kling_paths.ROUTES["kling-3.0"],
        **_PATH_FRAMES,
    ),
    _legacy_row(
        "kling-v2-5-turbo",
        f"Kling 3.0 Turbo, fast and cheap, only on the {_PATHS_NOTE}; its price is not published (estimated)",
        model="kling-3.0-turbo",
        durations=_V3_DURATIONS,
        free_durations=True,
        route=kling_paths.ROUTES["kling-3.0-turbo"],
        **_PATH_FRAMES,
    ),
    _omni_row(
        "kling-v3-omni",
        _V3_DURATIONS,
        f"Kling 3.0 Omni on the {_PATHS_NOTE}: several characters as elements, audio, up to 6 shots",
        model="kling-3.0-omni",
        multi_shot=V3_MULTI_SHOT,
        audio=True,
        audio_price_per_second=_usd(PATH_AUDIO_UNITS_PER_SECOND["kling-3.0-omni"]),
        route=kling_paths.ROUTES["kling-3.0-omni"],
        **_PATH_FRAMES,
    ),
)


def balance_message(owner: KeyOwner = BOT_KEYS) -> str:
    return f"{owner.Whose} Kling account has no credits left: an admin needs to top it up."


BALANCE_MESSAGE = balance_message()
SAFETY_MESSAGE = "Kling's content safety system refused this shot: change the prompt or the reference images."
VALIDATION_MESSAGE = "Kling refused the settings of this shot."
FAILED_MESSAGE = "Kling could not render this shot."
EXPIRED_MESSAGE = "The result expired at Kling before the bot could download it; please queue the shot again."


@dataclass(frozen=True)
class KlingUpdate:
    """A callback from Kling, read: which task, which job, when, and what it says."""

    task_id: str
    external_task_id: str | None
    updated_at: int  # ms; deliveries may arrive out of order: the newest wins
    result: PollResult


class _NotFound(FinalError):
    """Kling has no such task (or model): 404, code 1203, or a "not found" message."""


def parse_callback(payload: bytes | str | Mapping[str, Any]) -> KlingUpdate:
    """A callback body (the bare task object, no envelope) as an update. Raises FinalError if it is not one."""
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except ValueError:
            raise FinalError("Kling sent a callback the bot could not read.", code="bad_callback") from None
    if isinstance(payload, Mapping) and kling_paths.is_task(payload):
        external = payload.get("external_task_id")
        updated = payload.get("updated_at")
        return KlingUpdate(
            task_id=str(payload["id"]),
            external_task_id=str(external) if external is not None else None,
            updated_at=int(updated) if isinstance(updated, int | float) else 0,
            result=kling_paths.task_result(payload, VIDEO_UNIT_USD),
        )
    if not isinstance(payload, Mapping) or not isinstance(payload.get("task_id"), str | int):
        raise FinalError("Kling sent a callback without a task id.", code="bad_callback")
    info = payload.get("task_info")
    external = info.get("external_task_id") if isinstance(info, Mapping) else None
    updated = payload.get("updated_at")
    return KlingUpdate(
        task_id=str(payload["task_id"]),
        external_task_id=str(external) if external is not None else None,
        updated_at=int(updated) if isinstance(updated, int | float) else 0,
        result=task_result(payload, _unit_price_of(payload, None)),
    )


def task_result(task: Mapping[str, Any], unit_price: Money) -> PollResult:
    """A Kling task object (a query's `data`, or a callback body) as a PollResult."""
    status = str(task.get("task_status") or "").lower()
    units = _decimal(task.get("final_unit_deduction"))
    charged = unit_price * units if units is not None else None
    if status == "submitted":
        return PollResult(TaskStatus.QUEUED, progress=0.0)
    if status == "processing":
        return PollResult(TaskStatus.RUNNING)
    if status in ("succeed", "succeeded"):
        artifacts = _artifacts(task.get("task_result"))
        if not artifacts:
            error = FinalError(
                "Kling finished this shot but sent no result.", detail=_text(task.get("task_status_msg")), code="empty"
            )
            return PollResult(TaskStatus.FAILED, error=error, charged=charged)
        return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=artifacts, charged=charged)
    if status == "failed":
        reason = _text(task.get("task_status_msg"))
        risky = any(word in reason.lower() for word in _RISK_WORDS)
        error = FinalError(
            SAFETY_MESSAGE if risky else FAILED_MESSAGE,
            detail=reason,
            code="failed",
            charged=charged is not None and charged > Money.ZERO,
        )
        return PollResult(TaskStatus.FAILED, error=error, charged=charged)
    log.warning("kling task %s has an unknown status %r; treating it as running", task.get("task_id"), status)
    return PollResult(TaskStatus.RUNNING)


def _artifacts(result: object) -> tuple[Artifact, ...]:
    if not isinstance(result, Mapping):
        return ()
    found: list[Artifact] = []
    for video in result.get("videos") or ():
        if isinstance(video, Mapping) and isinstance(video.get("url"), str) and video["url"]:
            seconds = _decimal(video.get("duration"))
            found.append(Artifact(video["url"], "video/mp4", float(seconds) if seconds is not None else None))
    for image in result.get("images") or ():
        if isinstance(image, Mapping) and isinstance(image.get("url"), str) and image["url"]:
            path = urlsplit(image["url"]).path.lower()
            mime = "image/jpeg" if path.endswith((".jpg", ".jpeg")) else "image/png"
            found.append(Artifact(image["url"], mime))
    return tuple(found)


def _unit_price_of(task: Mapping[str, Any], endpoint: str | None) -> Money:
    if endpoint is not None:
        return IMAGE_UNIT_USD if endpoint.startswith("/v1/images/") else VIDEO_UNIT_USD
    result = task.get("task_result")
    return IMAGE_UNIT_USD if isinstance(result, Mapping) and result.get("images") else VIDEO_UNIT_USD


_decimal = kling_paths.decimal_of


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


class KlingProvider:
    """The Provider protocol over Kling's `/v1` routes; see the module docstring."""

    def __init__(
        self,
        *,
        base_url: str = "https://api-singapore.klingai.com",
        access_key: str | None = None,
        secret_key: str | None = None,
        api_key: str | None = None,
        model: str = "kling-v1-6",
        image_model: str = "kling-v1-5",
        mode: str = "std",
        max_concurrency: int = 5,
        timeout: float = 30.0,
        max_download_bytes: int = 200 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        external_id_prefix: str = "",
        owner: KeyOwner = BOT_KEYS,
        download_deadline: float = 600.0,
    ) -> None:
        """`external_id_prefix` is put before the job id in `external_task_id`: give each install its own, so a
        fresh database (job ids from 1 again) never finds an old install's tasks on the same account."""
        if not api_key and not (access_key and secret_key):
            raise ValueError("Kling needs an access key and a secret key, or an API key")
        if model not in ALL_VIDEO_UNITS:
            known = ", ".join(ALL_VIDEO_UNITS)
            raise ValueError(f"unknown Kling video model {model!r}; known: {known}")
        if model in kling_paths.ROUTES and not api_key:
            raise ValueError(
                f"{model} is on Kling's new API, which takes only an API key: set LIKENESS_KLING_API_KEY "
                "(or choose kling-v3 / kling-v3-omni, the same models on the routes the key pair opens)"
            )
        if image_model not in IMAGE_UNITS:
            raise ValueError(f"unknown Kling image model {image_model!r}; known: {', '.join(IMAGE_MODELS)}")
        if mode not in MODES:
            raise ValueError(f"Kling mode must be one of {', '.join(MODES)}, not {mode!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout <= 0 or max_download_bytes <= 0:
            raise ValueError("timeout and max_download_bytes must be positive")
        self._base_url = base_url.rstrip("/")
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self._api_key = api_key or None
        self._owner = owner
        self._mode = mode
        self._timeout = timeout
        self._max_download = max_download_bytes
        self._download_deadline = download_deadline  # a whole result download; each read has `timeout`
        self._clock = clock
        self._prefix = external_id_prefix
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._busy: dict[int, int] = {}  # job id -> busy answers (1302/1303) in a row, for its backoff
        self._elements: dict[str, int | str] = {}  # element external_task_id -> Kling element_id, once made
        self.capabilities = Capabilities(
            name=NAME,
            kinds=frozenset({WorkKind.ANIMATE, WorkKind.SHEET}),
            rows=ROWS + PATH_ROWS if api_key else ROWS,  # the new API opens to an API key only
            default_model=model,
            image_limits=KLING,
            max_concurrency=max_concurrency,
            needs_key=True,
            typical_seconds=90.0,
            display_name="Kling",
            cancel_stops_billing=False,  # no cancel endpoint: the task renders and is billed
            image_model=image_model,
            callbacks=True,
            findable=True,  # external_task_id: a submit whose answer was lost is looked up, never paid twice
        )

    # ----------------------------------------------------------------------------------------------------------
    # The Provider protocol

    async def submit(self, request: RenderRequest) -> Submission:
        if request.kind is WorkKind.ANIMATE and request.model in kling_paths.ROUTES:
            return await self._submit_on_paths(request)
        if request.kind is WorkKind.ANIMATE and request.model in OMNI_UNITS_PER_SECOND:
            endpoint, body = await self._omni(request)
        else:
            endpoint, body = await asyncio.to_thread(self._build, request)
        if len(self._busy) > 10_000:  # jobs that never came back; the counts are only a backoff hint
            self._busy.clear()
        try:
            data = await self._call("POST", endpoint, body, job_id=request.job_id)
        except FinalError as error:
            if error.code == "1201" and "external" in error.detail.lower():
                # Already created for this job (a retry raced a lost answer): that task, not a second one.
                found = await self._lookup(endpoint, self.external_id(request.job_id))
                if found is not None:
                    return found
            raise
        self._busy.pop(request.job_id, None)
        task_id = data.get("task_id")
        if not isinstance(task_id, str | int) or not str(task_id):
            # The task may exist: retrying goes through find(), which looks it up by the job's id.
            raise RetryableError("Kling accepted the shot but sent no task id.", code="malformed")
        log.info("kling task %s created for job %s at %s", task_id, request.job_id, endpoint)
        return Submission(task_id=str(task_id), status_url=f"{endpoint}/{task_id}")

    async def find(self, job_id: int) -> Submission | None:
        """The task Kling has under this job's `external_task_id`, on any endpoint this provider submits to.

        None only when every endpoint says it has none; when one cannot be asked, a RetryableError (never a
        guess that would submit a second, paid task)."""
        external = self.external_id(job_id)
        lookups = [self._lookup(endpoint, external) for endpoint in ENDPOINTS]
        if self._api_key:
            lookups.append(self._lookup_on_paths(external))
        answers = await asyncio.gather(*lookups, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, Submission):
                return answer
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return None

    async def poll(self, submission: Submission) -> PollResult:
        if kling_paths.is_status_path(submission.status_url):
            return await self._poll_on_paths(submission)
        endpoint, path = self._status_path(submission)
        if path is None:
            return await self._poll_anywhere(submission.task_id)
        try:
            data = await self._call("GET", path)
        except _NotFound as error:
            raise FinalError(
                "Kling no longer knows this task.", detail=error.detail or submission.task_id, code="not_found"
            ) from None
        return task_result(data, _unit_price_of(data, endpoint))

    async def cancel(self, submission: Submission) -> None:
        """Kling has no cancel endpoint: the task runs to its end at Kling (and is billed); the bot drops it."""
        log.info("kling has no cancel: task %s is left to finish at Kling", submission.task_id)

    async def fetch(self, artifact: Artifact) -> bytes:
        """Download a result now (Kling clears results after 30 days), streaming, within the size cap."""
        if urlsplit(artifact.url).scheme not in ("http", "https"):
            raise FinalError("This result is not a Kling download link.", detail=artifact.url, code="bad_url")
        limit_mb = f"{self._max_download / 1048576:g} MB"
        too_large = FinalError(f"Kling's result is larger than the bot accepts ({limit_mb}).", code="too_large")
        try:
            # No Authorization header: result links are public CDN URLs, and the token stays with the API host.
            async with (
                transport_errors(
                    "Kling's download did not answer in time; the bot will try again.",
                    "The bot could not download the result from Kling; it will try again.",
                    coded=False,
                ),
                asyncio.timeout(self._download_deadline),
                self._http().stream("GET", artifact.url, follow_redirects=True) as response,
            ):
                status = response.status_code
                if status in (403, 404, 410):
                    raise FinalError(EXPIRED_MESSAGE, detail=f"HTTP {status}", code="expired")
                if status == 429 or status >= 500:
                    raise RetryableError(
                        "Kling's download server is busy; the bot will try again.",
                        detail=f"HTTP {status}",
                        code=f"http-{status}",
                    )
                if status != 200:
                    raise FinalError("Kling's result could not be downloaded.", detail=f"HTTP {status}", code="http")
                try:
                    data = await read_capped(response, self._max_download)
                except TooLargeError:
                    raise too_large from None
        except TimeoutError:
            raise RetryableError(
                f"Kling's download took longer than {self._download_deadline:g} s; the bot will try again.",
                code="download_deadline",
            ) from None
        return data

    def estimate_cost(self, request: RenderRequest) -> Money:
        if request.kind is WorkKind.SHEET:
            return IMAGE_UNIT_USD * IMAGE_UNITS.get(request.model, Decimal(0))
        row = self.capabilities.find_row(request.model)
        if row is None:
            return Money.ZERO
        return row.clip_cost(self._mode_of(row, request.mode), request.duration, audio=request.audio)

    def _mode_of(self, row: ModelRow, asked: str | None) -> str:
        """The mode a request runs in on this model: the one asked for, else the bot's setting, else the model's
        own (kling-v2-6 image-to-video is pro only, whatever the bot's default)."""
        return row.mode_or_default(asked if asked in row.modes else self._mode)

    async def close(self) -> None:
        """Close the connection pool. A later call opens a new one (the bot registers providers again on start)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # ----------------------------------------------------------------------------------------------------------
    # Helpers other code may use

    def external_id(self, job_id: int) -> str:
        return f"{self._prefix}{job_id}"

    async def verify_key(self) -> None:
        """Check the keys with Kling's free account query (`GET /account/costs`, at most once a second), before a
        server's own key is kept: FinalError when Kling refuses them, RetryableError when it cannot tell now."""
        await self._call("GET", self._costs_path())

    async def ping(self) -> float:
        """The time to first byte (seconds) of the free account query, for `likeness doctor`. FinalError with
        code KEY_REFUSED when Kling refuses the keys, RetryableError (`timeout`, `network`) when it cannot be
        reached, another ProviderError for any other answer."""
        headers = {"Authorization": self._authorization()}
        with transport_errors("Kling did not answer in time.", "The bot could not reach Kling."):
            response, first_byte = await timed_request(self._http(), "GET", self._costs_path(), headers=headers)
        envelope = _json(response)
        code = envelope.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        if response.status_code == 200 and code == 0:
            return first_byte
        error = self._error(response.status_code, code, self._scrub(_text(envelope.get("message"))), response, None)
        if response.status_code == 401 or code in AUTH_CODES:
            raise FinalError(error.message, detail=error.detail, code=KEY_REFUSED)
        raise error

    def _costs_path(self) -> str:
        now = int(self._clock() * 1000)
        return f"{ACCOUNT_COSTS}?start_time={now - 86_400_000}&end_time={now}"

    # ----------------------------------------------------------------------------------------------------------
    # Requests

    def _build(self, request: RenderRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body for a request (blocking: images are re-encoded; run in a thread)."""
        if request.kind is WorkKind.SHEET:
            return self._sheet_body(request)
        if request.kind is not WorkKind.ANIMATE:
            raise FinalError(f"Kling on this bot does not do {request.kind.value} jobs.", code="unsupported")
        row = self.capabilities.find_row(request.model)
        if row is None:
            raise FinalError(
                f"Kling can't take this shot: unknown video model {request.model!r} "
                f"(known: {', '.join(self.capabilities.models)}).",
                code="invalid",
            )
        mode = self._mode_of(row, request.mode)
        images: list[ReferenceImage] = list(request.images)
        if request.model not in MULTI_IMAGE_MODELS and images:
            # image2video takes one image, the lead view as the first frame; another character stays, to be refused
            lead = images[0]
            images = [lead, *(image for image in images if image.role == "view" and image.subject != lead.subject)]
        problems = request_problems(row, replace(request, images=tuple(images), mode=request.mode or mode))
        if not images and request.start_frame is None:
            problems.append("at least one reference image is needed")
        if problems:
            raise FinalError("Kling can't take this shot: " + "; ".join(problems) + ".", code="invalid")

        body: dict[str, Any] = {"model_name": request.model}
        _prompts(body, request, row)
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt[:PROMPT_MAX]
        if row.modes:
            body["mode"] = mode
        body["duration"] = str(request.duration)  # a string: Kling answers 400 to a number
        if row.audio:
            body["sound"] = "on" if request.audio else "off"
        if len(images) >= 2 and request.model in MULTI_IMAGE_MODELS and request.end_frame is None:
            endpoint = MULTI_IMAGE2VIDEO
            body["image_list"] = [{"image": _base64(image)} for image in images]
            body["aspect_ratio"] = request.aspect_ratio
        else:
            endpoint = IMAGE2VIDEO
            body["image"] = _base64(_first_frame(_start_image(request), request.aspect_ratio))
            if request.end_frame is not None:
                body["image_tail"] = _base64(_first_frame(_frame_image(request.end_frame), request.aspect_ratio))
            if request.model in CFG_SCALE_MODELS:
                body["cfg_scale"] = 0.5
            camera = CAMERA_CONFIG.get(request.camera)
            supported = (request.model, mode, request.duration) in CAMERA_CONTROL_SUPPORT
            if camera is not None and supported and "image_tail" not in body:  # the two exclude each other
                body["camera_control"] = {"type": "simple", "config": {axis: camera.get(axis, 0) for axis in _AXES}}
        return endpoint, self._common(body, request)

    async def _omni(self, request: RenderRequest) -> tuple[str, dict[str, Any]]:
        """The omni-video endpoint and body; first makes sure each character's element exists (see the module doc)."""
        row = self.capabilities.row(request.model)
        mode = self._mode_of(row, request.mode)
        subjects, extras = _omni_inputs(request, row, mode)
        element_ids = [await self._character_element(views, request.job_id) for views in subjects]
        body = await asyncio.to_thread(self._omni_body, request, row, mode, element_ids, extras)
        return OMNI_VIDEO, body

    def _omni_body(
        self,
        request: RenderRequest,
        row: ModelRow,
        mode: str,
        element_ids: list[int | str],
        extras: list[ReferenceImage],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model_name": request.model}
        _prompts(body, request, row)
        if "prompt" in body:
            body["prompt"] = body["prompt"][:PROMPT_MAX]  # the compiled prompt already fits; the tokens stay whole
        body["element_list"] = [{"element_id": element_id} for element_id in element_ids]
        image_list: list[dict[str, str]] = [{"image_url": _base64(image)} for image in extras]
        if request.start_frame is not None:
            frame = _first_frame(_frame_image(request.start_frame), request.aspect_ratio)
            image_list.append({"image_url": _base64(frame), "type": "first_frame"})
        if request.end_frame is not None:
            frame = _first_frame(_frame_image(request.end_frame), request.aspect_ratio)
            image_list.append({"image_url": _base64(frame), "type": "end_frame"})
        if image_list:
            body["image_list"] = image_list
        body["mode"] = mode
        if request.start_frame is None:
            body["aspect_ratio"] = request.aspect_ratio  # required when no first frame is given
        body["duration"] = str(request.duration)
        if row.audio:
            body["sound"] = "on" if request.audio else "off"
        return self._common(body, request)

    def element_external_id(self, views: tuple[ReferenceImage, ...] | list[ReferenceImage]) -> str:
        """The element's `external_task_id`: the install's prefix and a hash of the views' bytes, in order."""
        digest = hashlib.sha256()
        for view in views:
            digest.update(len(view.data).to_bytes(8, "big"))
            digest.update(view.data)
        return f"{self._prefix}el-{digest.hexdigest()[:16]}"

    async def _character_element(self, views: list[ReferenceImage], job_id: int) -> int | str:
        """The element id of these views; creates the element when Kling has none (then: pending)."""
        external = self.element_external_id(views)
        known = self._elements.get(external)
        if known is not None:
            return known
        path = f"{ELEMENTS}/{quote(external, safe='')}"
        try:
            data: dict[str, Any] | None = await self._call("GET", path, job_id=job_id)
        except _NotFound:
            data = None
        if data is None:
            body = await asyncio.to_thread(_element_body, views, external)
            try:
                await self._call("POST", ELEMENTS, body, job_id=job_id)
            except FinalError as error:
                if not (error.code == "1201" and "external" in error.detail.lower()):
                    raise _element_error(error) from None
                # made by a racing shot of the same character: wait for it like our own
            log.info("kling element %s requested for job %s", external, job_id)
            raise _element_pending()
        element_id = _element_id(data)
        self._elements[external] = element_id
        if len(self._elements) > 10_000:
            self._elements.clear()
        return element_id

    async def _submit_on_paths(self, request: RenderRequest) -> Submission:
        """A new-API model (bot.providers.kling_paths): model in the path, `contents[]`, found by external id."""
        row = self.capabilities.row(request.model)
        mode = self._mode_of(row, request.mode)
        route = kling_paths.ROUTES[request.model]
        external = self.external_id(request.job_id)
        if request.model in kling_paths.OMNI_MODELS:
            subjects, extras = _omni_inputs(request, row, mode)
            element_ids = [await self._character_element(views, request.job_id) for views in subjects]
        else:
            # one image, the lead view as the first frame; another character's views stay, to be refused
            lead = request.images[:1]
            others = tuple(i for i in request.images[1:] if i.role == "view" and lead and i.subject != lead[0].subject)
            problems = request_problems(row, replace(request, images=lead + others, mode=request.mode or mode))
            if not request.images and request.start_frame is None:
                problems.append("at least one reference image is needed")
            if problems:
                raise FinalError("Kling can't take this shot: " + "; ".join(problems) + ".", code="invalid")
            element_ids, extras = [], []
        inputs = await asyncio.to_thread(self._path_inputs, request, element_ids, extras)
        body = kling_paths.body(request, row, mode, inputs, external)
        try:
            data = await self._call("POST", route, body, job_id=request.job_id)
        except FinalError as error:
            if error.code == "1201" and "external" in error.detail.lower():
                found = await self._lookup_on_paths(external)
                if found is not None:
                    return found
            raise
        self._busy.pop(request.job_id, None)
        task_id = data.get("id")
        if not isinstance(task_id, str | int) or not str(task_id):
            raise RetryableError("Kling accepted the shot but sent no task id.", code="malformed")
        log.info("kling task %s created for job %s at %s", task_id, request.job_id, route)
        return Submission(task_id=str(task_id), status_url=kling_paths.status_path(str(task_id)))

    def _path_inputs(
        self, request: RenderRequest, element_ids: list[int | str], extras: list[ReferenceImage]
    ) -> kling_paths.Inputs:
        """The shot's images encoded for the new API (blocking: re-encodes; run in a thread)."""
        omni = request.model in kling_paths.OMNI_MODELS
        first = None
        if request.start_frame is not None or not omni:
            first = _base64(_first_frame(_start_image(request), request.aspect_ratio))
        last = None
        if request.end_frame is not None:
            last = _base64(_first_frame(_frame_image(request.end_frame), request.aspect_ratio))
        return kling_paths.Inputs(first, last, element_ids, [_base64(image) for image in extras])

    async def _lookup_on_paths(self, external: str) -> Submission | None:
        data = await self._call("GET", kling_paths.lookup_path(external))
        for task in kling_paths.tasks_of(data):
            if str(task.get("external_task_id")) == external and isinstance(task.get("id"), str | int):
                return Submission(task_id=str(task["id"]), status_url=kling_paths.status_path(str(task["id"])))
        return None

    async def _poll_on_paths(self, submission: Submission) -> PollResult:
        data = await self._call("GET", kling_paths.status_path(submission.task_id))
        for task in kling_paths.tasks_of(data):
            if str(task.get("id")) == submission.task_id:
                return kling_paths.task_result(task, VIDEO_UNIT_USD)
        raise FinalError("Kling no longer knows this task.", detail=submission.task_id, code="not_found")

    def _sheet_body(self, request: RenderRequest) -> tuple[str, dict[str, Any]]:
        if request.model not in IMAGE_UNITS:
            raise FinalError(
                f"Kling can't draw a sheet with the model {request.model!r} (known: {', '.join(IMAGE_MODELS)}).",
                code="invalid",
            )
        if not request.images:
            raise FinalError("Kling needs the character's front view to draw a sheet.", code="invalid")
        front = next((image for image in request.images if image.label == "front"), request.images[0])
        body: dict[str, Any] = {
            "model_name": request.model,
            "prompt": request.prompt[:PROMPT_MAX],
            "image": _base64(front),
            "image_reference": "subject",  # keep the character's features (kling-v1-5 only)
            "n": 1,
            "aspect_ratio": "16:9",
        }
        return IMAGE_GENERATIONS, self._common(body, request)

    def _common(self, body: dict[str, Any], request: RenderRequest) -> dict[str, Any]:
        body["external_task_id"] = self.external_id(request.job_id)
        if request.callback_url:
            body["callback_url"] = request.callback_url
        return body

    async def _lookup(self, endpoint: str, external: str) -> Submission | None:
        try:
            data = await self._call("GET", f"{endpoint}/{quote(external, safe='')}")
        except _NotFound:
            return None
        task_id = data.get("task_id")
        if not isinstance(task_id, str | int) or not str(task_id):
            raise RetryableError("Kling answered a task lookup without a task id.", code="malformed")
        info = data.get("task_info")
        stored = info.get("external_task_id") if isinstance(info, Mapping) else None
        if stored is not None and str(stored) != external:
            log.warning("kling returned task %s for external id %s, which is not its own", task_id, external)
            return None
        return Submission(task_id=str(task_id), status_url=f"{endpoint}/{task_id}")

    def _status_path(self, submission: Submission) -> tuple[str | None, str | None]:
        """(endpoint, query path) of a submission; (None, None) when it does not say which endpoint."""
        if submission.status_url:
            path = urlsplit(submission.status_url).path
            for endpoint in ENDPOINTS:
                if path.startswith(endpoint + "/"):
                    return endpoint, path
        return None, None

    async def _poll_anywhere(self, task_id: str) -> PollResult:
        for endpoint in ENDPOINTS:
            try:
                data = await self._call("GET", f"{endpoint}/{quote(task_id, safe='')}")
            except _NotFound:
                continue
            return task_result(data, _unit_price_of(data, endpoint))
        raise FinalError("Kling no longer knows this task.", detail=task_id, code="not_found")

    # ----------------------------------------------------------------------------------------------------------
    # The wire

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=httpx.Timeout(self._timeout),
                headers={"User-Agent": "Likeness (self-hosted Discord bot)"},
            )
        return self._client

    def _authorization(self) -> str:
        if self._api_key:
            return f"Bearer {self._api_key}"
        now = self._clock()
        if self._token is None or now >= self._token_expires - TOKEN_MARGIN:
            assert self._access_key is not None and self._secret_key is not None
            expires = now + TOKEN_LIFETIME
            payload = {"iss": self._access_key, "exp": int(expires), "nbf": int(now - NOT_BEFORE_SKEW)}
            import jwt  # here, not at the top: the catalog imports this module with the settings, PyJWT is slow

            with warnings.catch_warnings():  # PyJWT warns on keys under 32 bytes; the key is Kling's, not ours
                warnings.simplefilter("ignore")
                self._token = jwt.encode(payload, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
            self._token_expires = int(expires)
        return f"Bearer {self._token}"

    def _scrub(self, text: str) -> str:
        """Kling's words with any of our secrets taken out (they are never expected there; never shown if so)."""
        for value in (self._token, self._secret_key, self._api_key):
            if value:
                text = text.replace(value, "[redacted]")
        return text

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, job_id: int | None = None
    ) -> dict[str, Any]:
        """One API call: the `data` of a code-0 answer, else a typed error. A 401 is re-signed and sent once more."""
        for attempt in (1, 2):
            response = await self._send(method, path, body)
            status = response.status_code
            envelope = _json(response)
            code = envelope.get("code")
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            message = self._scrub(_text(envelope.get("message")))
            if status == 200 and code == 0:
                data = envelope.get("data")
                if not isinstance(data, dict):
                    raise RetryableError("Kling sent an answer the bot could not read.", code="malformed")
                return data
            if (status == 401 or code in AUTH_CODES) and attempt == 1:
                log.info("kling %s %s: HTTP %s, code %s; signing a new token", method, path, status, code)
                self._token = None  # sign a fresh token, once
                continue
            if status == 200 and code is None:  # not Kling's envelope; a create may have gone through: find() tells
                raise RetryableError(
                    "Kling sent an answer the bot could not read.", detail=f"HTTP {status}", code="malformed"
                )
            error = self._error(status, code, message, response, job_id)
            level = logging.DEBUG if isinstance(error, _NotFound) else logging.WARNING
            log.log(
                level,
                "kling %s %s: HTTP %s, code %s, %r (request %s)",
                method,
                path,
                status,
                code,
                message,
                _text(envelope.get("request_id")),
            )
            raise error
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        headers = {"Authorization": self._authorization()}
        # A create that got no answer stays plain RetryableError: Kling can be asked (find() by external id).
        with transport_errors(
            "Kling did not answer in time; the bot will try again.", "The bot could not reach Kling; it will try again."
        ):
            return await self._http().request(method, path, json=body, headers=headers)

    def _error(
        self, status: int, code: int | None, message: str, response: httpx.Response, job_id: int | None
    ) -> ProviderError:
        said = message or f"HTTP {status}"
        tag = str(code) if code is not None else f"http-{status}"
        if status == 401 or code in AUTH_CODES:
            owner = self._owner
            which = "LIKENESS_KLING_API_KEY" if self._api_key else "LIKENESS_KLING_ACCESS_KEY/SECRET_KEY"
            hint = ""
            if code in (1003, 1004):
                hint = " (Kling says the token is not valid yet or has expired: check this machine's clock)"
            where = f"check {which}" if owner is BOT_KEYS else f"set them again {owner.fix}"
            return FinalError(f"Kling refused {owner.whose} keys; an admin must {where}{hint}.", detail=said, code=tag)
        if code in BALANCE_CODES:
            return FinalError(balance_message(self._owner), detail=said, code=tag)
        if code == 1100:
            return FinalError(
                f"{self._owner.Whose} Kling account has a problem (Kling reports an account exception): "
                "an admin needs to check it in the Kling console.",
                detail=said,
                code=tag,
            )
        if code == 1103:
            return FinalError(
                f"{self._owner.Whose} Kling account may not use this model or feature: an admin needs to check its "
                "plan.",
                detail=said,
                code=tag,
            )
        if code == 1304:
            return FinalError(
                "Kling refused the bot's address (IP allowlist): an admin needs to check the account's settings.",
                detail=said,
                code=tag,
            )
        if code in SAFETY_CODES:
            return FinalError(SAFETY_MESSAGE, detail=said, code=tag)
        if code in BUSY_CODES or (code is None and status in (429, 503)):
            return self._busy_error(code, said, tag, response, job_id)
        if code in SERVER_CODES or status >= 500:
            return RetryableError(
                f"Kling is having trouble right now ({tag}); the bot will try again.",
                detail=said,
                code=tag,
                retry_after=_retry_after(response),
                rate_limited=code in UNAVAILABLE_CODES,  # maintenance or a backlog: waited for, like a full account
            )
        if status == 404 or code == 1203 or any(word in said.lower() for word in _NOT_FOUND_WORDS):
            return _NotFound(VALIDATION_MESSAGE, detail=said, code=tag)
        if code in VALIDATION_CODES or 400 <= status < 500:
            return FinalError(VALIDATION_MESSAGE, detail=said, code=tag)
        return FinalError("Kling refused the request.", detail=said, code=tag)

    def _busy_error(
        self, code: int | None, said: str, tag: str, response: httpx.Response, job_id: int | None
    ) -> RetryableError:
        """1302 (too fast) / 1303 (over the account's concurrency): back off, 2 s doubling per busy answer in a
        row for this job (at least 1 s, as Kling advises), or what Retry-After says."""
        streak = 1
        if job_id is not None:
            streak = self._busy[job_id] = self._busy.get(job_id, 0) + 1
        delay = _retry_after(response) or min(_MAX_BUSY_DELAY, 2.0**streak)
        if code == 1302:
            message = "Kling asked the bot to slow down; this shot will be sent again shortly."
        else:
            message = "Kling is at the account's limit of shots rendering at once; this one will be sent again shortly."
        return RetryableError(message, detail=said, code=tag, retry_after=max(1.0, delay), rate_limited=True)


def _omni_inputs(
    request: RenderRequest, row: ModelRow, mode: str
) -> tuple[list[list[ReferenceImage]], list[ReferenceImage]]:
    """(each character's views, element images) of an omni shot, or a FinalError naming what Kling would refuse."""
    problems = request_problems(row, replace(request, mode=request.mode or mode))
    subjects: dict[int, list[ReferenceImage]] = {}
    for image in request.images:
        if image.role == "view":
            subjects.setdefault(image.subject, []).append(image)
    extras = [image for image in request.images if image.role != "view"]
    frames = (request.start_frame is not None) + (request.end_frame is not None)
    if not subjects:
        problems.append("at least one view of the character is needed")
    if len(subjects) + len(extras) + frames > OMNI_MAX_INPUTS:
        problems.append(f"at most {OMNI_MAX_INPUTS} characters, outfit or prop images and frames in all")
    if request.end_frame is not None and len(extras) + frames > 2:
        problems.append("an end frame is not taken with more than 2 images")
    if problems:
        raise FinalError("Kling can't take this shot: " + "; ".join(problems) + ".", code="invalid")
    return list(subjects.values()), extras


def _prompts(body: dict[str, Any], request: RenderRequest, row: ModelRow) -> None:
    """`prompt`, or a storyboard (`multi_shot`, `shot_type: customize`, `multi_prompt`) with no `prompt`."""
    if not request.shots:
        body["prompt"] = request.prompt  # too long is Kling's to refuse, in its own words
        return
    assert row.multi_shot is not None  # request_problems refused it otherwise
    body["multi_shot"] = True
    body["shot_type"] = "customize"
    body["multi_prompt"] = [
        {"index": number, "prompt": shot.prompt, "duration": str(shot.duration)}
        for number, shot in enumerate(request.shots, start=1)
    ]


def _start_image(request: RenderRequest) -> ReferenceImage:
    """The first frame: the request's start frame, else its first view (the character's lead view)."""
    if request.start_frame is not None:
        return _frame_image(request.start_frame)
    return request.images[0]


def _frame_image(frame: Frame) -> ReferenceImage:
    return ReferenceImage(label="frame", role="view", data=frame.data, mime=frame.mime)


def _element_body(views: list[ReferenceImage], external: str) -> dict[str, Any]:
    """The advanced-custom-elements create body: the first view frontal, the next 1-3 as refer_images (the
    frontal again when there is only one view, since Kling asks for at least one). No callback_url: the bot
    polls elements, and an element callback is not a clip's (parse_callback would read it as an empty result)."""
    frontal = _base64(views[0])
    refer = [_base64(view) for view in views[1 : 1 + ELEMENT_REFER_MAX]] or [frontal]
    body: dict[str, Any] = {
        "element_name": _element_name(ELEMENT_LABEL),
        "element_description": f"Character from a Likeness reference sheet ({len(views)} views)"[
            :ELEMENT_DESCRIPTION_MAX
        ],
        "reference_type": "image_refer",
        "element_image_list": {"frontal_image": frontal, "refer_images": [{"image_url": url} for url in refer]},
        "tag_list": [{"tag_id": ELEMENT_TAG}],
        "external_task_id": external,
    }
    return body


def _element_name(label: str) -> str:
    name = re.sub(r"[^A-Za-z0-9 _-]+", "", label).strip()
    return (name or ELEMENT_LABEL)[:ELEMENT_NAME_MAX]


def _element_pending() -> RetryableError:
    return RetryableError(
        ELEMENT_PENDING_MESSAGE, code="element_pending", retry_after=ELEMENT_RETRY_SECONDS, rate_limited=True
    )


def _element_error(error: FinalError) -> FinalError:
    return FinalError(
        "Kling could not make the character's element: " + (error.detail or error.message),
        detail=error.detail,
        code=error.code,
    )


def _element_id(task: Mapping[str, Any]) -> int | str:
    """The element id of a finished element task; raises the pending RetryableError while it is being made."""
    status = str(task.get("task_status") or "").lower()
    if status in ("submitted", "processing", ""):
        raise _element_pending()
    if status == "failed":
        reason = _text(task.get("task_status_msg")) or "no reason given"
        raise FinalError(f"Kling could not make the character's element: {reason}", detail=reason, code="element")
    result = task.get("task_result")
    elements = result.get("elements") if isinstance(result, Mapping) else None
    first = elements[0] if isinstance(elements, list) and elements else None
    if isinstance(first, Mapping) and str(first.get("status") or "").lower() == "failed":
        raise FinalError("Kling could not make the character's element.", detail="element failed", code="element")
    element_id = first.get("element_id") if isinstance(first, Mapping) else None
    if isinstance(element_id, bool) or not (
        isinstance(element_id, int) or (isinstance(element_id, str) and element_id.isdigit())
    ):
        raise FinalError("Kling made the character's element but sent no element id.", code="element")
    return element_id


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(1.0, min(seconds, 600.0)) if math.isfinite(seconds) else None


def _base64(image: ReferenceImage) -> str:
    """Base64 without a `data:` prefix (Kling rejects the prefix), of a JPEG or PNG."""
    return base64.b64encode(_within_limits(image.data, None)[0]).decode("ascii")


def _first_frame(image: ReferenceImage, aspect_ratio: str) -> ReferenceImage:
    """The image padded with white to the clip's aspect ratio: image2video takes the first frame's shape."""
    data, mime = _within_limits(image.data, ASPECT_RATIOS[aspect_ratio])
    return replace(image, data=data, mime=mime)


def _within_limits(data: bytes, aspect: float | None) -> tuple[bytes, str]:
    """The bytes as they are when they already fit Kling (and the aspect ratio, if given), else re-encoded."""
    limits = KLING if aspect is None else replace(KLING, min_aspect=aspect * 0.995, max_aspect=aspect * 1.005)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            fits = (
                opened.format in limits.formats
                and len(data) <= limits.max_bytes
                and min(width, height) >= limits.min_side
                and limits.min_aspect <= width / height <= limits.max_aspect
            )
            if fits:
                return data, "image/jpeg" if opened.format == "JPEG" else "image/png"
            opened.load()
            return prepare_for_provider(opened, limits)
    except UserFacingError as error:
        raise FinalError(str(error), code="image") from error
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise FinalError(
            "A reference image of this shot could not be read.", detail=str(error), code="image"
        ) from error


# --------------------------------------------------------------------------------------------------------------
# The plug-in: settings, keys, factory (bot.providers.spec)


class KlingSettings(BaseModel):
    access_key: SecretStr | None = Field(default=None, description="Kling API access key (with the secret key).")
    secret_key: SecretStr | None = Field(default=None, description="Kling API secret key. Never logged.")
    api_key: SecretStr | None = Field(default=None, description="A single Kling API key, instead of the pair.")
    base_url: str = Field(
        default="https://api-singapore.klingai.com", description="Kling API host (api-beijing for Chinese accounts)."
    )
    model: str = Field(default="kling-v1-6", description="Kling video model.")
    concurrency: int = Field(default=5, ge=1, le=100, description="Kling tasks your resource pack runs at once.")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The signing secret of Kling's callbacks (whsec_...); when set, unsigned callbacks are refused.",
    )


def _bot_key(own: KlingSettings) -> Keys | None:
    """The pair, or the single API key."""
    keys = {"access_key": secret(own.access_key), "secret_key": secret(own.secret_key), "api_key": secret(own.api_key)}
    return keys if (keys["access_key"] and keys["secret_key"]) or keys["api_key"] else None


def _key_settings(keys: Keys) -> str:
    return (
        "LIKENESS_KLING_API_KEY" if keys.get("api_key") else "LIKENESS_KLING_ACCESS_KEY and LIKENESS_KLING_SECRET_KEY"
    )


def _half_key(own: KlingSettings) -> tuple[str, str] | None:
    if _bot_key(own) is None and (secret(own.access_key) or secret(own.secret_key)):
        return (
            "only one of LIKENESS_KLING_ACCESS_KEY and LIKENESS_KLING_SECRET_KEY is set, so Kling is off.",
            "Set both (from the Kling developer console), or LIKENESS_KLING_API_KEY instead.",
        )
    return None


def _build(context: BuildContext[KlingSettings]) -> KlingProvider:
    own, keys = context.settings, context.keys
    return KlingProvider(
        base_url=own.base_url,
        access_key=keys.get("access_key"),
        secret_key=keys.get("secret_key"),
        api_key=keys.get("api_key"),
        model=own.model,
        max_concurrency=own.concurrency,
        external_id_prefix=context.install_id(),
        owner=context.owner,
        download_deadline=context.download_deadline,
    )


SPEC = ProviderSpec(
    name=NAME,
    label="Kling",
    settings=KlingSettings,
    build=_build,
    key_fields=(
        KeyField("access_key", "Access key", "access key", "Kling console > API keys: Access Key"),
        KeyField("secret_key", "Secret key", "secret key", "Kling console > API keys: Secret Key"),
    ),
    read_bot_key=_bot_key,
    key_settings=_key_settings,
    key_source="the Kling developer console (API keys)",
    key_warning=_half_key,
    checked_setting="model",
    dialects=(IMAGES_DIALECT, ELEMENTS_DIALECT),
    calls_back=True,
    callback_status=lambda payload: parse_callback(payload).result.status,
    rows=ROWS + PATH_ROWS,
    webhook_secret=lambda own: secret(own.webhook_secret),
)
