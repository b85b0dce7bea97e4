"""The fake Kling's new-standard API (reference/providers-2026.md K2, providers.md §1.7.11): the rules of its
create bodies and the shape of its task objects. FakeKling serves the routes; this module knows the contract, on
its own (it imports nothing from the bot).

- `POST /image-to-video/{kling-3.0, kling-3.0-turbo}`, `POST /omni-video/kling-3.0-omni`, API key only;
- body `{contents[], settings{}, options{}}`: `contents` items typed `prompt` (text, <= 2500; required unless a
  storyboard), `negative_prompt`, `first_frame` / `last_frame` / `image` (url: Base64 or a URL), `element`
  (`element_id` a string naming an existing element, `id`); image-to-video needs a first frame and takes no
  element; omni takes at most 7 elements, images and frames, and no last frame with more than 2 images;
  `settings.duration` an integer 3..15, `resolution` 720p/1080p/4k, `audio` native/off (not on turbo),
  `aspect_ratio` required without a first frame, `multi_shot` with `shot_type` customize and `shots` of 1-6
  `{index, prompt <= 512, duration >= 1}` adding up to `duration`; `options.external_task_id` unique per account,
  `options.callback_url` http(s);
- `GET /tasks?task_ids=a,b` or `?external_task_ids=x`: `data.tasks[]`, each `{id, status, external_task_id,
  created_at, updated_at, outputs[], billing[], error}`; a callback posts the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ROUTES = {
    "/image-to-video/kling-3.0": "kling-3.0",
    "/image-to-video/kling-3.0-turbo": "kling-3.0-turbo",
    "/omni-video/kling-3.0-omni": "kling-3.0-omni",
}
TASKS = "/tasks"
RATES: dict[str, tuple[float, float]] = {  # units per second, std (720p) / pro (1080p)
    "kling-3.0": (0.6, 0.8),
    "kling-3.0-turbo": (0.3, 0.5),
    "kling-3.0-omni": (0.6, 0.8),
}
AUDIO_RATES: dict[str, tuple[float, float]] = {"kling-3.0": (0.9, 1.2), "kling-3.0-omni": (0.9, 1.2)}
RESOLUTIONS = frozenset({"720p", "1080p", "4k"})
ASPECTS = frozenset({"16:9", "9:16", "1:1"})
MAX_INPUTS, MAX_SHOTS, SHOT_PROMPT_MAX, PROMPT_MAX = 7, 6, 512, 2500


class PathRefusal(Exception):
    """Kling's 400 / 1201 (or 1203 for an unknown element), with its words."""

    def __init__(self, message: str, code: int = 1201) -> None:
        super().__init__(message)
        self.code = code


def validate(
    route: str,
    body: object,
    *,
    image: Callable[[object, str], list[tuple[int, int]]],
    element_exists: Callable[[str], bool],
    external_taken: Callable[[str], bool],
) -> list[tuple[int, int]]:
    """The decoded image sizes of a valid create body; PathRefusal otherwise."""
    model = ROUTES[route]
    omni = route.startswith("/omni-video/")
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
        raise PathRefusal("contents must be a list")
    settings, options = body.get("settings", {}), body.get("options", {})
    if not isinstance(settings, dict) or not isinstance(options, dict):
        raise PathRefusal("settings and options must be objects")
    kinds: dict[str, int] = {}
    sizes: list[tuple[int, int]] = []
    for item in body["contents"]:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise PathRefusal("each contents item needs a type")
        kind = item["type"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind in ("prompt", "negative_prompt"):
            text = item.get("text")
            if not isinstance(text, str) or not text or len(text) > PROMPT_MAX:
                raise PathRefusal(f"{kind}.text must be 1-{PROMPT_MAX} characters")
        elif kind in ("first_frame", "last_frame", "image"):
            sizes += image(item.get("url"), f"contents[{kind}].url")
        elif kind == "element":
            element_id = item.get("element_id")
            if not isinstance(element_id, str) or not element_id:
                raise PathRefusal("element.element_id must be a string")
            if not element_exists(element_id):
                raise PathRefusal(f"element {element_id} does not exist", code=1203)
        else:
            raise PathRefusal(f"unknown contents type {kind!r}")
    if any(kinds.get(kind, 0) > 1 for kind in ("prompt", "negative_prompt", "first_frame", "last_frame")):
        raise PathRefusal("a prompt, a first frame and a last frame at most once each")
    if omni:
        inputs = kinds.get("element", 0) + kinds.get("image", 0) + kinds.get("first_frame", 0)
        if inputs + kinds.get("last_frame", 0) > MAX_INPUTS:
            raise PathRefusal(f"at most {MAX_INPUTS} elements, images and frames")
        if kinds.get("last_frame") and kinds.get("image", 0) + kinds.get("first_frame", 0) + 1 > 2:
            raise PathRefusal("a last frame is not taken with more than 2 images")
        if not kinds.get("element") and not kinds.get("image"):
            raise PathRefusal("omni-video needs an element or an image")
    else:
        if kinds.get("element") or kinds.get("image"):
            raise PathRefusal("image-to-video takes no element or image, only frames")
        if not kinds.get("first_frame"):
            raise PathRefusal("image-to-video needs a first_frame")
    duration = settings.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int) or not 3 <= duration <= 15:
        raise PathRefusal("settings.duration must be an integer from 3 to 15")
    if settings.get("resolution", "720p") not in RESOLUTIONS:
        raise PathRefusal("settings.resolution must be 720p, 1080p or 4k")
    audio = settings.get("audio", "off")
    if audio not in ("native", "off") or (audio == "native" and model not in AUDIO_RATES):
        raise PathRefusal(f"settings.audio {audio!r} is not supported by {model}")
    if not kinds.get("first_frame") and settings.get("aspect_ratio") not in ASPECTS:
        raise PathRefusal("settings.aspect_ratio is required without a first frame (16:9, 9:16, 1:1)")
    storyboard = _storyboard(settings, duration)
    if storyboard and kinds.get("prompt"):
        raise PathRefusal("no prompt beside a storyboard's shots")
    if not storyboard and not kinds.get("prompt"):
        raise PathRefusal("a prompt is required")
    external = options.get("external_task_id")
    if external is not None and (not isinstance(external, str) or not external):
        raise PathRefusal("options.external_task_id must be a non-empty string")
    if isinstance(external, str) and external_taken(external):
        raise PathRefusal(f"external_task_id {external} already exists")
    callback = options.get("callback_url")
    if callback is not None and (not isinstance(callback, str) or not callback.startswith(("http://", "https://"))):
        raise PathRefusal("options.callback_url must be an http(s) URL")
    return sizes


def _storyboard(settings: dict[str, Any], duration: int) -> bool:
    if not settings.get("multi_shot"):
        if "shots" in settings:
            raise PathRefusal("settings.shots needs multi_shot")
        return False
    if settings.get("shot_type") != "customize":
        raise PathRefusal("settings.shot_type must be customize with shots")
    shots = settings.get("shots")
    if not isinstance(shots, list) or not 1 <= len(shots) <= MAX_SHOTS:
        raise PathRefusal(f"settings.shots must hold 1-{MAX_SHOTS} shots")
    total = 0
    for number, shot in enumerate(shots, start=1):
        if not isinstance(shot, dict) or shot.get("index") != number:
            raise PathRefusal("shots need index 1, 2, ... in order")
        text, seconds = shot.get("prompt"), shot.get("duration")
        if not isinstance(text, str) or not text or len(text) > SHOT_PROMPT_MAX:
            raise PathRefusal(f"each shot's prompt must be 1-{SHOT_PROMPT_MAX} characters")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise PathRefusal("each shot's duration must be an integer of at least 1")
        total += seconds
    if total != duration:
        raise PathRefusal("the shots' durations must add up to settings.duration")
    return True


def units(route: str, body: dict[str, Any]) -> str:
    """What the task bills, in units."""
    model = ROUTES[route]
    settings = body.get("settings", {})
    rates = AUDIO_RATES if settings.get("audio") == "native" else RATES
    std, pro = rates.get(model, RATES[model])
    rate = std if settings.get("resolution", "720p") == "720p" else pro
    return f"{rate * int(settings.get('duration', 5)):g}"


def external_id_of(body: dict[str, Any]) -> str | None:
    options = body.get("options")
    value = options.get("external_task_id") if isinstance(options, dict) else None
    return value if isinstance(value, str) else None


def callback_of(body: dict[str, Any]) -> str | None:
    options = body.get("options")
    value = options.get("callback_url") if isinstance(options, dict) else None
    return value if isinstance(value, str) else None


STATUS = {"succeed": "succeeded", "success": "succeeded"}  # the new API says `succeeded`


def task_object(
    *,
    task_id: str,
    status: str,
    status_msg: str,
    external: str | None,
    created_at: int,
    updated_at: int,
    units_billed: str | None,
    result_url: str | None,
    seconds: int,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": task_id,
        "status": STATUS.get(status, status),
        "created_at": created_at,
        "updated_at": updated_at,
        "outputs": [],
        "billing": [],
    }
    if external is not None:
        data["external_task_id"] = external
    if status == "failed":
        data["error"] = {"code": "task_failed", "message": status_msg}
    if units_billed is not None:
        data["billing"] = [{"resource": "video", "units": units_billed}]
    if result_url is not None:
        data["outputs"] = [{"type": "video", "url": result_url, "duration": f"{float(seconds):.1f}"}]
    return data
