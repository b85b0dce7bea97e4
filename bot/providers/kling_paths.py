"""Kling's new-standard API (late 2026), for the models that live only there (Kling 3.0-Turbo) or are reached
there with a single API key (3.0, 3.0-Omni). bot.providers.kling sends these models here; the legacy `/v1` routes
serve every other model and stay in service.

What differs from `/v1` (reference/providers-2026.md K2; reference/providers.md §1.7.11, third-party shapes that
Kling has not documented in English yet, so the fake Kling holds exactly these and nothing more):
- the model is in the path: `POST /image-to-video/kling-3.0`, `/image-to-video/kling-3.0-turbo`,
  `/omni-video/kling-3.0-omni`; the API takes a bearer API key only (no access/secret key pair);
- the body is `contents[]` (`{type: "prompt", text}`, `{type: "first_frame" | "last_frame" | "image", url}`,
  `{type: "element", element_id, id}`), `settings{resolution, duration: int, audio: "native" | "off", aspect_ratio,
  multi_shot, shots[]}` and `options{callback_url, external_task_id}`;
- the answer's `data.id` is the task; every task is read at `GET /tasks?task_ids=<id>` (or
  `external_task_ids=<our id>`, which is how a submit whose answer was lost is found), `data.tasks[]`;
- a task is `{id, status: submitted | processing | succeeded | failed, outputs[{type, url, duration}],
  billing[{resource, units}], error{code, message}, external_task_id}`, and a callback posts the same object.

Images travel as bare Base64 in `url`, as on `/v1` (which takes a URL or Base64 in the same fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from bot.domain import Money
from bot.providers.base import Artifact, FinalError, ModelRow, PollResult, RenderRequest, TaskStatus

TASKS = "/tasks"
IMAGE_TO_VIDEO = "/image-to-video"
OMNI_VIDEO = "/omni-video"
ROUTES: dict[str, str] = {
    "kling-3.0": f"{IMAGE_TO_VIDEO}/kling-3.0",
    "kling-3.0-turbo": f"{IMAGE_TO_VIDEO}/kling-3.0-turbo",
    "kling-3.0-omni": f"{OMNI_VIDEO}/kling-3.0-omni",
}
OMNI_MODELS = frozenset({"kling-3.0-omni"})
RESOLUTION = {"std": "720p", "pro": "1080p"}
_FAILED = "Kling could not render this shot."
_SAFETY_WORDS = ("risk", "safety", "sensitive", "inappropriate", "violat", "moderat", "nsfw", "policy")


@dataclass(frozen=True)
class Inputs:
    """A shot's images, already encoded for Kling (bare Base64), and its characters' element ids."""

    first_frame: str | None
    last_frame: str | None
    element_ids: Sequence[int | str]  # omni: one per character, in cast order
    images: Sequence[str]  # omni: bound outfits and props, `<<<image_N>>>` in the prompt


def body(request: RenderRequest, row: ModelRow, mode: str, inputs: Inputs, external_id: str) -> dict[str, Any]:
    """The create body of a new-API task."""
    contents: list[dict[str, Any]] = []
    if not request.shots:
        contents.append({"type": "prompt", "text": request.prompt})
    if request.negative_prompt and row.negative_prompt:
        contents.append({"type": "negative_prompt", "text": request.negative_prompt})
    contents += [
        {"type": "element", "element_id": str(element_id), "id": f"element_{number}"}
        for number, element_id in enumerate(inputs.element_ids, start=1)
    ]
    contents += [{"type": "image", "url": image, "id": f"image_{n}"} for n, image in enumerate(inputs.images, 1)]
    if inputs.first_frame is not None:
        contents.append({"type": "first_frame", "url": inputs.first_frame})
    if inputs.last_frame is not None:
        contents.append({"type": "last_frame", "url": inputs.last_frame})
    settings: dict[str, Any] = {
        "resolution": RESOLUTION.get(mode, "720p"),
        "duration": request.duration,  # an integer here, unlike `/v1`
        "audio": "native" if request.audio else "off",
        "multi_shot": bool(request.shots),
    }
    if inputs.first_frame is None:
        settings["aspect_ratio"] = request.aspect_ratio
    if request.shots:
        settings["shot_type"] = "customize"
        settings["shots"] = [
            {"index": number, "prompt": shot.prompt, "duration": shot.duration}
            for number, shot in enumerate(request.shots, start=1)
        ]
    options: dict[str, Any] = {"external_task_id": external_id}
    if request.callback_url:
        options["callback_url"] = request.callback_url
    return {"contents": contents, "settings": settings, "options": options}


def status_path(task_id: str) -> str:
    return f"{TASKS}?task_ids={quote(task_id, safe='')}"


def lookup_path(external_id: str) -> str:
    return f"{TASKS}?external_task_ids={quote(external_id, safe='')}"


def is_status_path(path: str | None) -> bool:
    return bool(path) and str(path).startswith(TASKS + "?")


def tasks_of(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tasks of a `GET /tasks` answer's data."""
    tasks = data.get("tasks")
    return [task for task in tasks if isinstance(task, Mapping)] if isinstance(tasks, list) else []


def is_task(payload: Mapping[str, Any]) -> bool:
    """A new-API task object (a callback body), not a `/v1` one (which has `task_id`)."""
    return "task_id" not in payload and isinstance(payload.get("id"), str | int) and "status" in payload


def task_result(task: Mapping[str, Any], unit_price: Money) -> PollResult:
    """A new-API task object as a PollResult; `billing[].units` are prepaid units at `unit_price`."""
    status = str(task.get("status") or "").lower()
    charged = _charged(task.get("billing"), unit_price)
    if status in ("submitted", "queued", "pending"):
        return PollResult(TaskStatus.QUEUED, progress=0.0)
    if status in ("processing", "running"):
        return PollResult(TaskStatus.RUNNING)
    if status in ("succeeded", "succeed"):
        artifacts = _outputs(task.get("outputs"))
        if not artifacts:
            error = FinalError("Kling finished this shot but sent no result.", code="empty")
            return PollResult(TaskStatus.FAILED, error=error, charged=charged)
        return PollResult(TaskStatus.SUCCEEDED, progress=1.0, artifacts=artifacts, charged=charged)
    if status == "failed":
        error = task.get("error")
        said = str(error.get("message") or "") if isinstance(error, Mapping) else str(error or "")
        risky = any(word in said.lower() for word in _SAFETY_WORDS)
        message = "Kling's content safety system refused this shot." if risky else _FAILED
        failed = FinalError(message, detail=said, code="failed", charged=bool(charged))
        return PollResult(TaskStatus.FAILED, error=failed, charged=charged)
    return PollResult(TaskStatus.RUNNING)  # an unknown status: keep polling


def _outputs(outputs: object) -> tuple[Artifact, ...]:
    found: list[Artifact] = []
    for output in outputs if isinstance(outputs, list) else ():
        if isinstance(output, Mapping) and isinstance(output.get("url"), str) and output["url"]:
            seconds = decimal_of(output.get("duration"))
            kind = "image/png" if output.get("type") == "image" else "video/mp4"
            found.append(Artifact(output["url"], kind, float(seconds) if seconds is not None else None))
    return tuple(found)


def _charged(billing: object, unit_price: Money) -> Money | None:
    if not isinstance(billing, list):
        return None
    units = [decimal_of(item.get("units")) for item in billing if isinstance(item, Mapping)]
    known = [u for u in units if u is not None]
    return unit_price * sum(known, Decimal(0)) if known else None


def decimal_of(value: object) -> Decimal | None:
    """A number Kling sent (as text or a number), or None when it is not one."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
