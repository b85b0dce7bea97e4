"""Custom ids live in Discord's messages: each family builds the very text older versions posted, and the
DynamicItem (or form handler) answering it parses that text back."""

from __future__ import annotations

import pytest

from bot.discord_io import components
from bot.discord_io.components import CustomId
from bot.discord_io.queued import ConfirmShot
from cogs.animate import JobButton, UnsureButton
from cogs.characters import DeleteButton, KeepButton, PageButton
from cogs.sheets import SheetKeep, SheetPick, SheetRetry

# (family, parts, the text posted before issue 13, the DynamicItem answering it or None for a form)
POSTED = [
    (components.CHARACTER_PAGE, {"n": 3}, "likeness:characters:page:3", PageButton),
    (components.CHARACTER_DELETE, {"id": 41}, "likeness:characters:delete:41", DeleteButton),
    (components.CHARACTER_KEEP, {}, "likeness:characters:keep", KeepButton),
    (components.CONFIRM, {"answer": "yes", "id": 7}, "likeness:confirm:yes:7", ConfirmShot),
    (components.CONFIRM, {"answer": "no", "id": 7}, "likeness:confirm:no:7", ConfirmShot),
    (components.JOB, {"action": "reroll", "id": 12}, "likeness:job:reroll:12", JobButton),
    (components.JOB, {"action": "delete", "id": 12}, "likeness:job:delete:12", JobButton),
    (components.UNSURE, {"action": "resend", "id": 5}, "likeness:unsure:resend:5", UnsureButton),
    (components.UNSURE, {"action": "release", "id": 5}, "likeness:unsure:release:5", UnsureButton),
    (components.SHEET_KEEP, {"id": 9}, "likeness:sheetgen:keep:9", SheetKeep),
    (components.SHEET_PICK, {"id": 9}, "likeness:sheetgen:pick:9", SheetPick),
    (components.SHEET_RETRY, {"id": 9}, "likeness:sheetgen:retry:9", SheetRetry),
    (components.SHOT_FORM, {"kind": "next", "id": 3}, "likeness:shot:next:3", None),
    (components.PROVIDER_KEY_FORM, {"provider": "kling"}, "likeness:provider-key:kling", None),
]


@pytest.mark.parametrize(("family", "parts", "posted", "item"), POSTED, ids=[p[2] for p in POSTED])
def test_each_family_builds_and_parses_the_ids_already_posted(
    family: CustomId, parts: dict[str, object], posted: str, item: type | None
) -> None:
    assert family.build(**parts) == posted
    match = family.match(posted)
    assert match is not None and match.groupdict() == {k: str(v) for k, v in parts.items()}
    if item is not None:  # the DynamicItem discord.py dispatches this id to uses the family's own pattern
        assert item.__discord_ui_compiled_template__ is family.pattern  # type: ignore[attr-defined]


def test_an_id_that_would_not_parse_back_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="does not match"):
        components.JOB.build(action="explode", id=1)
    assert components.JOB.match("likeness:job:reroll:12x") is None
