"""Binding a cast (several characters in one shot) within the model's limits.

Providers count every image of a shot, views and elements of every cast member alike (Kling omni 7, fal O3 7,
Runway 3). A greedy fill would spend the whole budget on the first character, so the fill is fair, in rounds:
one lead view (the front, else the best view there is) for everyone first, then each member's three-quarter,
then face, side and back, then the bound elements (outfit, prop, ... by kind, by name), one member at a time in
cast order within each round. A cast member left without a lead view is not in the shot at all: `Casting.
unseated` says who, and the order refuses it before any money is held.

The chosen references come out grouped by member, in cast order (each member's lead first): every provider's
dialect numbers a member's element by its first appearance, and the lead of the first member is the first frame
where a model takes one. Each reference carries its member's index (`subject`), so a model that takes distinct
subjects (Kling omni elements, fal `@ElementN`) makes each character its own.

Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from bot.domain import Element, ReferenceView, View
from bot.generation.prompts import Binding, BoundReference, choose_references

# After every member's lead: the rounds of further views, then elements (the order for casts).
_CAST_VIEW_ROUNDS = (View.THREE_QUARTER, View.FACE, View.SIDE, View.BACK)


@dataclass(frozen=True)
class CastMember:
    """One character of the shot, with what may be bound of it."""

    name: str
    views: Sequence[ReferenceView]
    elements: Sequence[Element]
    overrides: Mapping[str, bool] | None = None  # the shot's own element binding for this member


@dataclass(frozen=True)
class Casting:
    binding: Binding
    unseated: tuple[str, ...]  # members with no view at all within the limit (or none uploaded)


def bind_cast(cast: Sequence[CastMember], max_images: int) -> Casting:
    """The references of a cast within `max_images`, filled fairly (see the module docstring). One member is bound
    exactly as a single-character shot is (prompts.choose_references)."""
    if not cast:
        raise ValueError("a cast has at least one member")
    if len(cast) == 1:
        only = cast[0]
        binding = choose_references(only.views, only.elements, max_images, only.overrides)
        return Casting(binding, () if any(r.role == "view" for r in binding.chosen) else (only.name,))
    # Each member's candidates, in the single-character order, with their subject.
    pools = [
        [replace(ref, subject=index) for ref in choose_references(m.views, m.elements, 1_000, m.overrides).chosen]
        for index, m in enumerate(cast)
    ]
    rounds: list[list[BoundReference]] = [[] for _ in range(len(_CAST_VIEW_ROUNDS) + 2)]
    for pool in pools:
        views = [ref for ref in pool if ref.role == "view"]
        if views:
            rounds[0].append(views[0])  # the lead: the front, else the best view (choose_references' order)
        for ref in views[1:]:  # the front is always a lead when there is one
            assert ref.view in _CAST_VIEW_ROUNDS
            rounds[1 + _CAST_VIEW_ROUNDS.index(ref.view)].append(ref)
        rounds[-1].extend(ref for ref in pool if ref.role == "element")
    ordered = [ref for group in rounds for ref in group]
    chosen, left_out = ordered[:max_images], ordered[max_images:]
    seated = {ref.subject for ref in chosen if ref.role == "view"}
    unseated = tuple(member.name for index, member in enumerate(cast) if index not in seated)
    by_member = sorted(chosen, key=lambda ref: (ref.subject, ordered.index(ref)))
    notes_lead = _lead_notes(cast, pools)
    binding = Binding(chosen=tuple(by_member), left_out=tuple(left_out), max_images=max_images, lead_note=notes_lead)
    return Casting(binding, unseated)


def _lead_notes(cast: Sequence[CastMember], pools: Sequence[Sequence[BoundReference]]) -> str | None:
    """Which members lead with another view than the front, in one note."""
    others = [
        f"{member.name}'s {views[0].display_name}"
        for member, pool in zip(cast, pools, strict=True)
        if (views := [ref for ref in pool if ref.role == "view"]) and views[0].view is not View.FRONT
    ]
    if not others:
        return None
    return "No front view: " + ", ".join(others) + (" is" if len(others) == 1 else " are") + " used instead."
