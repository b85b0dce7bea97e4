"""How Discord echoes what a bot sent: embeds and components as they come back in message objects.

Discord does not store request bodies verbatim: components get numeric ``id``s and their
defaults, ``attachment://`` references become CDN URLs with an unfurled media object, and
nulls are left out. The fake does the same so the messages it returns match the spec's
response schemas (checked with ``FakeDiscord(validate_responses=True)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .world import StoredFile

# Fields Discord always returns, even when null, per component type.
_KEEP_NULL = {"accent_color", "description", "name", "size"}
# Defaults Discord fills in per component type.
_DEFAULTS: dict[int, dict[str, Any]] = {
    2: {"style": 2},
    3: {"min_values": 1, "max_values": 1, "options": []},
    5: {"min_values": 1, "max_values": 1},
    6: {"min_values": 1, "max_values": 1},
    7: {"min_values": 1, "max_values": 1},
    8: {"min_values": 1, "max_values": 1},
    11: {"description": None, "spoiler": False},
    13: {"spoiler": False},
    14: {"spacing": 1, "divider": True},
    17: {"accent_color": None, "spoiler": False},
}


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def command_name(data: dict[str, Any]) -> str:
    """ "character create" from an interaction's nested subcommand options."""
    parts = [data["name"]]
    options = data.get("options") or []
    while options and options[0].get("type") in (1, 2):
        parts.append(options[0]["name"])
        options = options[0].get("options") or []
    return " ".join(parts)


def _attachment_for(url: str, files: list[StoredFile]) -> StoredFile | None:
    if not url.startswith("attachment://"):
        return None
    name = url.removeprefix("attachment://")
    return next((f for f in files if f.filename == name), None)


def normalize_embeds(embeds: list[dict[str, Any]], files: list[StoredFile]) -> list[dict[str, Any]]:
    """Embeds with ``type`` set and ``attachment://`` images pointing at the fake CDN."""
    result: list[dict[str, Any]] = []
    for sent in embeds:
        embed: dict[str, Any] = drop_nulls(sent)
        embed.setdefault("type", "rich")
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if isinstance(media, dict) and isinstance(media.get("url"), str):
                stored = _attachment_for(media["url"], files)
                url = stored.url if stored is not None else media["url"]
                embed[key] = {**media, "url": url, "proxy_url": url, "width": 0, "height": 0}
        result.append(embed)
    return result


def normalize_components(
    components: list[dict[str, Any]], files: list[StoredFile], new_id: Callable[[], int]
) -> list[dict[str, Any]]:
    """Components with Discord's defaults, numeric ids (depth first from 1) and unfurled media."""
    taken: set[int] = set()

    def collect(items: list[dict[str, Any]]) -> None:
        for item in items:
            if isinstance(item.get("id"), int):
                taken.add(item["id"])
            collect(item.get("components") or [])
            if isinstance(item.get("accessory"), dict):
                collect([item["accessory"]])

    counter = 0

    def next_id() -> int:
        nonlocal counter
        counter += 1
        while counter in taken:
            counter += 1
        return counter

    def media(value: dict[str, Any]) -> dict[str, Any]:
        url = str(value.get("url", ""))
        stored = _attachment_for(url, files)
        if stored is None:
            return {"id": str(new_id()), "url": url, "proxy_url": url, "width": None, "height": None}
        return {
            "id": str(stored.id),
            "url": stored.url,
            "proxy_url": stored.url,
            "width": None,
            "height": None,
            "content_type": stored.content_type,
            "attachment_id": str(stored.id),
        }

    def one(item: dict[str, Any]) -> dict[str, Any]:
        kind = item.get("type", 0)
        out: dict[str, Any] = {k: v for k, v in item.items() if v is not None or k in _KEEP_NULL}
        for key, default in _DEFAULTS.get(kind, {}).items():
            out.setdefault(key, default)
        if not isinstance(out.get("id"), int):
            out["id"] = next_id()
        if "components" in out:
            out["components"] = [one(c) for c in out["components"] or []]
        if isinstance(out.get("accessory"), dict):
            out["accessory"] = one(out["accessory"])
        if isinstance(out.get("emoji"), dict):
            out["emoji"] = drop_nulls(out["emoji"])
        if kind == 3:
            out["options"] = [drop_nulls(o) for o in out["options"]]
        if kind == 11 and isinstance(out.get("media"), dict):
            out["media"] = media(out["media"])
        if kind == 12:
            out["items"] = [
                {"description": None, "spoiler": False, **drop_nulls(i), "media": media(i.get("media") or {})}
                for i in out.get("items") or []
            ]
        if kind == 13 and isinstance(out.get("file"), dict):
            out["file"] = media(out["file"])
            stored = _attachment_for(str(item["file"].get("url", "")), files)
            out.setdefault("name", stored.filename if stored else None)
            out.setdefault("size", len(stored.data) if stored else None)
        return out

    collect(components)
    return [one(c) for c in components]
