"""The prompt spine: a character's locked traits + bound references + the shot, in each provider's dialect.

Identity drift is the first thing members complain about: faces, hair and clothing change unless every prompt
repeats the character's details and points at the same reference images. So every compiled prompt starts with
the locked traits (never cut while anything else can be), names each bound image in the provider's own syntax,
and ends with a consistency clause. Negative presets follow the Kling community workflow; where a provider has
no negative prompt they are dropped with a visible note and asked for positively instead.

Pure functions: no I/O, no Discord, no provider calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.domain import Character, Element, ElementKind, ReferenceView, View
from bot.domain.errors import InvalidInputError
from bot.domain.text import clean_member_text
from bot.providers.base import Dialect, Referable

Role = Literal["view", "element"]


class PromptError(InvalidInputError, ValueError):
    """A shot option the prompt spine does not know (a camera move, a negative preset): shown to the member."""


# --- Negative presets -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegativePreset:
    key: str
    label: str
    terms: tuple[str, ...]
    positive: str = ""  # asked for in the prompt instead, when the provider takes no negative prompt


NEGATIVE_PRESETS: dict[str, NegativePreset] = {
    preset.key: preset
    for preset in (
        NegativePreset(
            "face",
            "Face melting",
            (
                "morphed face",
                "melting face",
                "melting features",
                "distorted face",
                "asymmetric eyes",
                "deformed eyes",
                "face warping",
                "extra eyes",
            ),
            positive="a stable, symmetrical face",
        ),
        NegativePreset(
            "hands",
            "Hands",
            (
                "extra fingers",
                "missing fingers",
                "fused fingers",
                "broken hands",
                "deformed hands",
                "mutated hands",
                "extra hands",
            ),
            positive="natural hands with five fingers",
        ),
        NegativePreset(
            "background",
            "Background bleed",
            (
                "double exposure",
                "color bleeding",
                "ghostly",
                "ghosting",
                "background bleeding into subject",
                "transparent body",
                "merging with background",
            ),
            positive="a subject clearly separated from the background",
        ),
        NegativePreset(
            "identity",
            "Identity drift",
            (
                "different person",
                "changing face",
                "changing outfit",
                "inconsistent hair colour",
                "inconsistent clothing",
                "age change",
            ),
            positive="the same person throughout",
        ),
        NegativePreset(
            "body",
            "Body horror",
            ("extra limbs", "missing limbs", "extra arms", "extra legs", "twisted torso", "deformed body"),
            positive="natural anatomy",
        ),
        NegativePreset(
            "motion",
            "Jitter",
            ("flickering", "jittery motion", "warping", "morphing", "frame stutter", "sudden cuts"),
            positive="smooth, steady motion",
        ),
        NegativePreset(
            "quality",
            "Low quality",
            ("blurry", "low quality", "low resolution", "jpeg artifacts", "watermark", "text", "logo"),
            positive="sharp, high-quality detail",
        ),
    )
}

DEFAULT_NEGATIVE_PRESETS: tuple[str, ...] = ("face", "hands", "background")


def resolve_presets(keys: Sequence[str]) -> tuple[NegativePreset, ...]:
    """The presets for these keys, in order; an unknown key is refused with the list of valid ones."""
    unknown = [key for key in keys if key not in NEGATIVE_PRESETS]
    if unknown:
        valid = ", ".join(NEGATIVE_PRESETS)
        raise PromptError(f"Unknown negative preset {', '.join(map(repr, unknown))}; valid presets: {valid}.")
    return tuple(NEGATIVE_PRESETS[key] for key in dict.fromkeys(keys))


def negative_prompt(presets: Sequence[str], extra: str | None) -> str:
    """The presets' terms then the member's extra terms (split on commas), deduplicated, comma-separated."""
    terms = [term for preset in resolve_presets(presets) for term in preset.terms]
    if extra:
        terms += [term.strip(" .") for term in re.split(r"[,;]", clean_member_text(extra))]
    unique: dict[str, str] = {}
    for term in terms:
        if term:
            unique.setdefault(term.casefold(), term)  # the first spelling wins
    return ", ".join(unique.values())


# --- Member text: bot.domain.text.clean_member_text, the one normalisation the prompt and the screen share -------------


# --- Binding ----------------------------------------------------------------------------------------------------

_VIEW_ORDER = (View.FRONT, View.THREE_QUARTER, View.SIDE)  # then elements, then _LATE_VIEWS
_LATE_VIEWS = (View.FACE, View.BACK)
_KIND_ORDER = (ElementKind.OUTFIT, ElementKind.PROP, ElementKind.ACCESSORY, ElementKind.SCENE, ElementKind.OTHER)
_VIEW_NOUN = {View.FACE: "face close-up"}  # the others are "<label> view"


def view_noun(view: View) -> str:
    """How a member reads the view: "front view", "three-quarter view", "face close-up"."""
    return _VIEW_NOUN.get(view, f"{view.label.lower()} view")


@dataclass(frozen=True)
class BoundReference:
    """One cleaned image sent to the provider: a character view or a bound element."""

    label: str  # the view's value ("front", "three_quarter") or the element's name
    role: Role
    view: View | None
    element_kind: ElementKind | None
    blob: str  # digest of the cleaned image in the blob store
    subject: int = 0  # which cast member it belongs to (0: the shot's first character)

    @property
    def display_name(self) -> str:
        return view_noun(self.view) if self.view is not None else self.label


@dataclass(frozen=True)
class Binding:
    """The references chosen for one shot, in the order the provider receives them, and what did not fit."""

    chosen: tuple[BoundReference, ...]
    left_out: tuple[BoundReference, ...] = ()
    max_images: int | None = None  # the provider's limit that caused `left_out`
    lead_note: str | None = None  # set when a view other than the front leads

    @property
    def left_out_note(self) -> str | None:
        if not self.left_out:
            return None
        names = ", ".join(ref.display_name for ref in self.left_out)
        if self.max_images is None:
            return f"Left out: {names}"
        takes = "no reference images" if self.max_images == 0 else _plural(self.max_images, "image")
        return f"Left out (this provider takes {takes}): {names}"

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(note for note in (self.lead_note, self.left_out_note) if note)


def choose_references(
    views: Sequence[ReferenceView],
    elements: Sequence[Element],
    max_images: int,
    overrides: Mapping[str, bool] | None = None,
) -> Binding:
    """Pick the references for a shot, most useful first, and cut at the provider's `max_images`.

    Order: front, three-quarter, side, the bound elements (outfit, prop, accessory, scene, other; by name within
    a kind), face, back. `overrides` (element name casefolded -> bound?) is the shot's own Element Binding and
    wins over the element's `bound` toggle either way. Items without a cleaned image are skipped.
    """
    if max_images < 0:
        raise ValueError(f"max_images must be >= 0, not {max_images}")
    by_view: dict[View, BoundReference] = {}
    for view in views:
        if view.cleaned_blob is not None and view.view not in by_view:
            by_view[view.view] = BoundReference(view.view.value, "view", view.view, None, view.cleaned_blob)
    early = [by_view[view] for view in _VIEW_ORDER if view in by_view]
    late = [by_view[view] for view in _LATE_VIEWS if view in by_view]
    lead_note = None
    if View.FRONT not in by_view and by_view:
        lead = (early or late)[0]
        early, late = [lead, *(ref for ref in early if ref is not lead)], [ref for ref in late if ref is not lead]
        lead_note = f"No front view: the {lead.display_name} is used as the main reference."
    folded = {name.casefold(): bound for name, bound in (overrides or {}).items()}
    candidates = [*early, *_bound_elements(elements, folded), *late]
    return Binding(
        chosen=tuple(candidates[:max_images]),
        left_out=tuple(candidates[max_images:]),
        max_images=max_images,
        lead_note=lead_note,
    )


def _bound_elements(elements: Sequence[Element], overrides: Mapping[str, bool]) -> list[BoundReference]:
    picked = [
        element
        for element in elements
        if element.cleaned_blob is not None and overrides.get(element.name.casefold(), element.bound)
    ]
    picked.sort(key=lambda element: (_KIND_ORDER.index(element.kind), element.name.casefold()))
    return [
        BoundReference(element.name, "element", None, element.kind, element.cleaned_blob or "") for element in picked
    ]


# --- Reference tokens per dialect -------------------------------------------------------------------------------


def reference_tokens(references: Sequence[Referable], syntax: Dialect) -> tuple[str, ...]:
    """How the prompt names each reference, in order, in the provider's dialect (its module defines it, and
    builds its request from the same tokens); "" for each in a dialect that names no image (plain)."""
    return syntax.tokens_for(references)


# --- Compilation ------------------------------------------------------------------------------------------------

CAMERA_MOVES: dict[str, str] = {
    "static": "static camera",
    "push_in": "slow camera push-in",
    "pull_out": "slow camera pull-out",
    "pan_left": "slow camera pan to the left",
    "pan_right": "slow camera pan to the right",
    "orbit": "slow camera orbit around the character",
}

CONSISTENCY_CLAUSE = "Keep the same face, hair and outfit in every frame."

_ELEMENT_VERBS = {  # kind -> how the character relates to it; kinds sharing a verb share a phrase
    ElementKind.OUTFIT: "wearing",
    ElementKind.ACCESSORY: "wearing",
    ElementKind.PROP: "holding",
    ElementKind.SCENE: "in",
    ElementKind.OTHER: "with",
}
_MIN_PART = 12  # a shortened part with less room than this is dropped rather than left as a stub
_SHRINK_ORDER = ("action", "setting", "consistency", "traits")
_PART_NAMES = {
    "action": "your action",
    "setting": "the setting",
    "consistency": "the consistency clause",
    "traits": "the character's traits",
    "references": "the references",
}


@dataclass(frozen=True)
class CompiledPrompt:
    prompt: str
    negative_prompt: str | None
    notes: tuple[str, ...]  # shown to the member with the job


def camera_phrase(camera: str) -> str:
    try:
        return CAMERA_MOVES[camera]
    except KeyError:
        raise PromptError(f"Unknown camera move {camera!r}; use one of: {', '.join(CAMERA_MOVES)}.") from None


def compile_prompt(
    *,
    character: Character,
    action: str,
    camera: str,
    setting: str | None,
    binding: Binding,
    syntax: Dialect,
    negative_supported: bool,
    max_chars: int,
    negative_presets: Sequence[str],
    extra_negative: str | None,
    provider_label: str,
    with_characters: Sequence[Character] = (),
) -> CompiledPrompt:
    """The prompt and negative prompt for one shot, within `max_chars` (UTF-16 code units, Runway's measure).

    `with_characters`: the rest of the cast (bot.generation.casting bound their references, `subject` 1, 2, ...):
    each member is introduced in turn with its own references and locked traits, and its own elements, then the
    action (who does what, in the member's words) and a clause that keeps them apart."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, not {max_chars}")
    camera_text = camera_phrase(camera)
    presets = resolve_presets(negative_presets)
    negative = negative_prompt(negative_presets, extra_negative)
    notes = list(binding.notes)

    tokens = reference_tokens(binding.chosen, syntax)
    name = clean_member_text(character.name) or "the character"
    traits = clean_member_text(character.description)
    clean_action, clean_setting = clean_member_text(action), clean_member_text(setting or "")
    consistency = CONSISTENCY_CLAUSE
    if not negative_supported:
        consistency = _with_positives(consistency, presets)
    if with_characters:
        cast = (character, *with_characters)
        names = [clean_member_text(member.name) or f"character {n}" for n, member in enumerate(cast, start=1)]
        parts = {
            "lead": _cast_lead(cast, names, binding.chosen, tokens, syntax),
            "traits": "",
            "elements": "",
            "action": _sentence(_capitalized(clean_action)),
            "camera": _sentence(_capitalized(camera_text)),
            "setting": _sentence(f"Setting: {clean_setting}") if clean_setting else "",
            "consistency": _distinct_clause(names) + " " + consistency,
        }
        return _finish(parts, notes, max_chars, provider_label, negative, negative_supported, presets, extra_negative)
    parts = {
        "lead": _lead(name, binding.chosen, tokens, syntax, has_traits=bool(traits)),
        "traits": _sentence(traits),
        "elements": _elements_sentence(binding.chosen, tokens, syntax),
        "action": _sentence(_capitalized(clean_action)),
        "camera": _sentence(_capitalized(camera_text)),
        "setting": _sentence(f"Setting: {clean_setting}") if clean_setting else "",
        "consistency": consistency,
    }
    return _finish(parts, notes, max_chars, provider_label, negative, negative_supported, presets, extra_negative)


def _finish(
    parts: dict[str, str],
    notes: list[str],
    max_chars: int,
    provider_label: str,
    negative: str,
    negative_supported: bool,
    presets: Sequence[NegativePreset],
    extra_negative: str | None,
) -> CompiledPrompt:
    """Fit the parts within `max_chars`, and the negative prompt (or its note where the provider has none)."""
    fitted, shortened = _fit(parts, max_chars)
    if parts["traits"] and not fitted["traits"]:  # no traits left to introduce: end the lead there
        fitted["lead"] = fitted["lead"].removesuffix(":") + "."
    prompt = _join(fitted.values())
    if _units(prompt) > max_chars:  # even the references and the camera do not fit: cut hard, on a word
        prompt = _ellipsize(prompt, max_chars, min_keep=1)
        shortened.append("references")
    if shortened:
        notes.append(_shortened_note(shortened, provider_label, max_chars))

    if negative_supported:
        negative, cut = _fit_terms(negative, max_chars)
        if cut:
            notes.append(f"The negative prompt was shortened to fit {provider_label}'s {max_chars}-character limit.")
        final_negative = negative or None
    else:
        final_negative = None
        intact = fitted["consistency"] == parts["consistency"]
        note = _dropped_negative_note(presets, bool(extra_negative and extra_negative.strip()), provider_label, intact)
        if note:
            notes.append(note)
    return CompiledPrompt(prompt=prompt, negative_prompt=final_negative, notes=tuple(notes))


def _lead(
    name: str, chosen: Sequence[BoundReference], tokens: Sequence[str], syntax: Dialect, *, has_traits: bool
) -> str:
    """ "<<<image_1>>> (front view) and <<<image_2>>> (side view) show Ava:" / "Ava, the character in..." """
    colon = ":" if has_traits else "."
    views = [(ref, token) for ref, token in zip(chosen, tokens, strict=True) if ref.role == "view"]
    if not views:
        return f"{name}{colon}"
    if syntax.plain:
        nouns = _group_noun([ref for ref, _ in views])
        return f"{name}, the character in the reference images ({nouns}){colon}"
    groups = _group_by_token(views)
    named = [f"{token} ({_group_noun(refs)})" for token, refs in groups]
    verb = "shows" if len(named) == 1 else "show"
    return f"{_join_and(named)} {verb} {name}{colon}"


def _cast_lead(
    cast: Sequence[Character],
    names: Sequence[str],
    chosen: Sequence[BoundReference],
    tokens: Sequence[str],
    syntax: Dialect,
) -> str:
    """Each member in turn: "<<<element_1>>> (front view) shows Mira: tall, red coat. Wearing ... ." Plain dialects
    say which reference images are whose in words, in the order the provider receives them."""
    sentences: list[str] = []
    for subject, (member, name) in enumerate(zip(cast, names, strict=True)):
        mine = [(ref, token) for ref, token in zip(chosen, tokens, strict=True) if ref.subject == subject]
        refs, own_tokens = [ref for ref, _ in mine], [token for _, token in mine]
        traits = clean_member_text(member.description)
        if syntax.plain:
            views = [ref for ref in refs if ref.role == "view"]
            where = f", in the reference images ({_group_noun(views)})" if views else ""
            lead = f"{name}{where}" + (":" if traits else ".")
        else:
            lead = _lead(name, refs, own_tokens, syntax, has_traits=bool(traits))
        elements = _elements_sentence(refs, own_tokens, syntax)
        if elements:
            elements = f"{name} is {elements[0].lower()}{elements[1:]}"
        sentences.append(_join((lead, _sentence(traits), elements)))
    return _join(sentences)


def _distinct_clause(names: Sequence[str]) -> str:
    """Keeps similar characters from bleeding into each other (providers-2026.md §2)."""
    return f"{_join_and(list(names))} are different people: each keeps their own face, hair and clothes."


def _elements_sentence(chosen: Sequence[BoundReference], tokens: Sequence[str], syntax: Dialect) -> str:
    """ "Wearing <<<image_3>>> (outfit: jacket), holding <<<image_4>>> (prop: sword)." """
    by_verb: dict[str, list[str]] = {}
    for ref, token in zip(chosen, tokens, strict=True):
        if ref.role != "element" or ref.element_kind is None:
            continue
        name = clean_member_text(ref.label)
        kind = ref.element_kind.value
        phrase = f"the {name} ({kind})" if syntax.plain else f"{token} ({kind}: {name})"
        by_verb.setdefault(_ELEMENT_VERBS[ref.element_kind], []).append(phrase)
    if not by_verb:
        return ""
    text = ", ".join(f"{verb} {_join_and(phrases)}" for verb, phrases in by_verb.items())
    if syntax.plain:
        text += ", as in the reference images"
    return _sentence(_capitalized(text))


def _group_by_token(pairs: Iterable[tuple[BoundReference, str]]) -> list[tuple[str, list[BoundReference]]]:
    groups: dict[str, list[BoundReference]] = {}
    for ref, token in pairs:
        groups.setdefault(token, []).append(ref)
    return list(groups.items())


def _group_noun(views: Sequence[BoundReference]) -> str:
    """ "front view" for one; "front, three-quarter and face close-up views" for several."""
    if len(views) == 1:
        return views[0].display_name
    short = [view_noun(ref.view).removesuffix(" view") if ref.view else ref.label for ref in views]
    return f"{_join_and(short)} views"


def _with_positives(clause: str, presets: Sequence[NegativePreset]) -> str:
    positives = [preset.positive for preset in presets if preset.positive]
    if not positives:
        return clause
    return f"{clause.removesuffix('.')}; {_join_and(positives)}."


def _dropped_negative_note(
    presets: Sequence[NegativePreset], has_extra: bool, provider_label: str, positives_sent: bool
) -> str | None:
    what = []
    if presets:
        what.append(f"the presets ({', '.join(preset.label.lower() for preset in presets)})")
    if has_extra:
        what.append("your extra negative terms")
    if not what:
        return None
    note = f"{provider_label} has no negative prompt: {' and '.join(what)} were not sent"
    if positives_sent and any(preset.positive for preset in presets):
        note += "; the prompt asks for the opposite instead"
    return note + "."


# --- Length fitting ---------------------------------------------------------------------------------------------


def _units(text: str) -> int:
    """Length in UTF-16 code units: Runway's measure, and never less than the character count others use."""
    return len(text.encode("utf-16-le")) // 2


def _join(parts: Iterable[str]) -> str:
    return " ".join(part for part in parts if part)


def _fit(parts: dict[str, str], max_chars: int) -> tuple[dict[str, str], list[str]]:
    """Shorten the action, then the setting, then the consistency clause, then the traits, until all fit."""
    fitted = dict(parts)
    shortened: list[str] = []
    for key in _SHRINK_ORDER:
        excess = _units(_join(fitted.values())) - max_chars
        if excess <= 0 or not fitted[key]:
            continue
        budget = _units(fitted[key]) - excess
        fitted[key] = _ellipsize(fitted[key], budget, min_keep=_MIN_PART)
        shortened.append(key)
    return fitted, shortened


def _ellipsize(text: str, budget: int, *, min_keep: int) -> str:
    """`text` cut to `budget` units on a word boundary, with an ellipsis; "" when less than `min_keep` would stay."""
    if _units(text) <= budget:
        return text
    if budget < max(min_keep, 2):
        return ""
    room, cut = budget - 1, []  # one unit for the ellipsis
    for char in text:
        room -= _units(char)
        if room < 0:
            break
        cut.append(char)
    kept = "".join(cut)
    if " " in kept and not text[len(kept)].isspace():
        kept = kept.rsplit(" ", 1)[0]
    return kept.rstrip(" ,;:.-") + "…"


def _fit_terms(terms: str, max_chars: int) -> tuple[str, bool]:
    """Drop whole terms from the end until the comma-separated list fits."""
    items = terms.split(", ") if terms else []
    cut = False
    while items and _units(", ".join(items)) > max_chars:
        items.pop()
        cut = True
    return ", ".join(items), cut


def _shortened_note(keys: Sequence[str], provider_label: str, max_chars: int) -> str:
    names = [_PART_NAMES[key] for key in keys]
    verb = "was" if len(names) == 1 else "were"
    note = (
        f"The prompt was shortened to fit {provider_label}'s {max_chars}-character limit: {_join_and(names)} {verb} cut"
    )
    if "traits" in keys:
        note += " (shorten the description or bind fewer images)"
    return note + "."


# --- Small words ------------------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = text.strip()
    if not text or text[-1] in ".!?…":
        return text
    return text + "."


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
