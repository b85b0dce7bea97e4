"""Every custom id the bot puts on a button, select or form, built and parsed in one place.

A family of ids (`CustomId`) is one format: `build` makes an id and `pattern` parses it back, and the same
pattern is the `template=` of the DynamicItem (or the form handler) that answers it. The ids are stored in
Discord's messages, so their text never changes: buttons posted by an older Likeness still work.

The views and forms posted with these ids are built here too; their presses are handled by persistent
DynamicItems in the cogs (and `bot.discord_io.queued.ConfirmShot`), which take their templates from here.
"""

from __future__ import annotations

import re
import string

import discord

from bot.domain import Job, WorkKind
from bot.generation.orders import ACTION_MAX
from bot.library.sheets.split import Figure
from bot.providers.accounts import KeySpec

ID = r"\d+"


class CustomId:
    """One family of custom ids, e.g. `likeness:job:{action}:{id}`, with a regex for each part."""

    def __init__(self, format_: str, **parts: str) -> None:
        self.format = format_
        pieces: list[str] = []
        for literal, field, _spec, _conversion in string.Formatter().parse(format_):
            pieces.append(re.escape(literal))
            if field is not None:
                pieces.append(f"(?P<{field}>{parts[field]})")
        self.pattern = re.compile("".join(pieces))

    def build(self, **values: object) -> str:
        """The custom id for these parts; refused if it would not parse back (a press would go unanswered)."""
        custom_id = self.format.format(**values)
        if self.pattern.fullmatch(custom_id) is None:
            raise ValueError(f"{custom_id!r} does not match {self.pattern.pattern!r}")
        return custom_id

    def match(self, custom_id: str) -> re.Match[str] | None:
        return self.pattern.fullmatch(custom_id)


# /character list and /character delete
CHARACTER_PAGE = CustomId("likeness:characters:page:{n}", n=ID)
CHARACTER_DELETE = CustomId("likeness:characters:delete:{id}", id=ID)
CHARACTER_KEEP = CustomId("likeness:characters:keep")
# the estimate of a costly shot or sheet
CONFIRM = CustomId("likeness:confirm:{answer}:{id}", answer="yes|no", id=ID)
# under a result, and the forms its Edit prompt / Next shot buttons open
JOB = CustomId("likeness:job:{action}:{id}", action="reroll|edit|next|delete", id=ID)
SHOT_FORM = CustomId("likeness:shot:{kind}:{id}", kind="edit|next", id=ID)
SHOT_FIELD = "action"  # the form's text input
# a manager's choice for a submit the provider may have (JobState.UNSURE)
UNSURE = CustomId("likeness:unsure:{action}:{id}", action="resend|release", id=ID)
# under a generated sheet
SHEET_KEEP = CustomId("likeness:sheetgen:keep:{id}", id=ID)
SHEET_PICK = CustomId("likeness:sheetgen:pick:{id}", id=ID)
SHEET_RETRY = CustomId("likeness:sheetgen:retry:{id}", id=ID)
# /settings key set: the form names the provider
PROVIDER_KEY_FORM = CustomId("likeness:provider-key:{provider}", provider="[a-z]+")


def result_marker(job: Job) -> str:
    """A custom id only this job's result carries: how the result is recognised in the channel."""
    return SHEET_RETRY.build(id=job.id) if job.kind is WorkKind.SHEET else JOB.build(action="reroll", id=job.id)


def sheet_view(job_id: int, figures: list[Figure]) -> discord.ui.View:
    """Keep all, keep some (a select of the views found), or retry; handled by persistent DynamicItems."""
    view = discord.ui.View(timeout=None)
    if figures:
        view.add_item(
            discord.ui.Button(
                label=f"Keep all {len(figures)} views",
                style=discord.ButtonStyle.success,
                custom_id=SHEET_KEEP.build(id=job_id),
            )
        )
    view.add_item(
        discord.ui.Button(label="Retry", style=discord.ButtonStyle.secondary, custom_id=SHEET_RETRY.build(id=job_id))
    )
    if len(figures) > 1:
        view.add_item(
            discord.ui.Select(
                custom_id=SHEET_PICK.build(id=job_id),
                placeholder="Keep only some views…",
                min_values=1,
                max_values=len(figures),
                options=[discord.SelectOption(label=f.view.label, value=f.view.value) for f in figures],
                row=1,
            )
        )
    return view


def unsure_view(job_id: int) -> discord.ui.View:
    """Send again / Release under the status of a job the provider may have; handled by a persistent DynamicItem
    (cogs.animate.UnsureButton) that checks manager rights on every press."""
    view = discord.ui.View(timeout=None)
    for action, label, style in (
        ("resend", "Send again", discord.ButtonStyle.danger),
        ("release", "Release", discord.ButtonStyle.secondary),
    ):
        view.add_item(discord.ui.Button(label=label, style=style, custom_id=UNSURE.build(action=action, id=job_id)))
    return view


def result_view(job_id: int) -> discord.ui.View:
    """The buttons under a result; their custom ids carry the job id, handled by persistent DynamicItems."""
    view = discord.ui.View(timeout=None)
    for action, label, style in (
        ("reroll", "Re-roll", discord.ButtonStyle.secondary),
        ("edit", "Edit prompt", discord.ButtonStyle.secondary),
        ("next", "Next shot", discord.ButtonStyle.primary),
        ("delete", "Delete", discord.ButtonStyle.danger),
    ):
        view.add_item(discord.ui.Button(label=label, style=style, custom_id=JOB.build(action=action, id=job_id)))
    return view


def shot_modal(job: Job, *, same_shot: bool) -> discord.ui.Modal:
    """Edit prompt / Next shot: a form for the words of the new take. Its custom id carries the job, and its submit
    is handled from the raw interaction (cogs.animate), so a form opened before a restart still works."""
    kind = "edit" if same_shot else "next"
    modal = discord.ui.Modal(
        title=f"{'Edit the prompt of' if same_shot else 'Next shot of'} {job.character_name}"[:45],
        custom_id=SHOT_FORM.build(kind=kind, id=job.id),
    )
    modal.add_item(
        discord.ui.TextInput(
            label="What happens in the shot",
            custom_id=SHOT_FIELD,
            style=discord.TextStyle.paragraph,
            default=job.action if same_shot else None,
            max_length=ACTION_MAX,
        )
    )
    return modal


def provider_key_modal(spec: KeySpec) -> discord.ui.Modal:
    """The fields of a provider's key: required and never prefilled. Its custom id names the provider."""
    modal = discord.ui.Modal(
        title=f"This server's {spec.label} key"[:45], custom_id=PROVIDER_KEY_FORM.build(provider=spec.provider)
    )
    for field in spec.fields:
        modal.add_item(
            discord.ui.TextInput(
                label=field.label, custom_id=field.name, placeholder=field.placeholder, max_length=field.max_length
            )
        )
    return modal
