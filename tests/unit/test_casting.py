"""Binding a cast within a model's image limit: fair rounds, grouped by member, and who could not be seated."""

from __future__ import annotations

import pytest

from bot.domain import ElementKind, View
from bot.generation.casting import CastMember, bind_cast
from bot.generation.prompts import Binding, choose_references
from tests.support.prompt_parts import element, view

ALL_VIEWS = [view(v) for v in (View.FRONT, View.THREE_QUARTER, View.SIDE, View.BACK, View.FACE)]


def member(name: str, views: list[View], elements: tuple[str, ...] = ()) -> CastMember:
    return CastMember(
        name,
        [view(v).model_copy(update={"cleaned_blob": f"{name}-{v.value}"}) for v in views],
        [element(e, ElementKind.OUTFIT).model_copy(update={"cleaned_blob": f"{name}-{e}"}) for e in elements],
    )


def labels(binding: Binding) -> list[str]:
    return [ref.blob for ref in binding.chosen]


def test_one_member_is_bound_exactly_as_a_single_character_shot() -> None:
    mira = member("Mira", [View.FRONT, View.SIDE, View.FACE], ("coat",))
    casting = bind_cast([mira], 3)
    assert casting.binding == choose_references(mira.views, mira.elements, 3) and casting.unseated == ()


def test_everyone_gets_a_lead_before_anyone_gets_a_second_view() -> None:
    mira = member("Mira", [View.FRONT, View.THREE_QUARTER, View.SIDE, View.FACE], ("coat",))
    kai = member("Kai", [View.FRONT, View.THREE_QUARTER])
    casting = bind_cast([mira, kai], 3)
    # rounds: both fronts, then three-quarters (Mira's first); grouped by member in the result
    assert labels(casting.binding) == ["Mira-front", "Mira-three_quarter", "Kai-front"]
    assert [ref.subject for ref in casting.binding.chosen] == [0, 0, 1]
    assert [ref.blob for ref in casting.binding.left_out] == [
        "Kai-three_quarter",
        "Mira-face",
        "Mira-side",
        "Mira-coat",
    ]
    assert casting.unseated == ()


def test_the_rounds_go_three_quarter_face_side_back_then_elements() -> None:
    mira = member("Mira", [View.FRONT, View.SIDE, View.BACK, View.FACE, View.THREE_QUARTER], ("coat",))
    kai = member("Kai", [View.FRONT, View.FACE], ("lantern",))
    casting = bind_cast([mira, kai], 20)
    order = [*casting.binding.chosen]
    assert [r.blob for r in order if r.subject == 0] == [
        "Mira-front",
        "Mira-three_quarter",
        "Mira-face",
        "Mira-side",
        "Mira-back",
        "Mira-coat",
    ]
    assert [r.blob for r in order if r.subject == 1] == ["Kai-front", "Kai-face", "Kai-lantern"]
    assert casting.binding.left_out == ()


def test_a_member_without_a_front_leads_with_its_best_view_and_is_named() -> None:
    mira = member("Mira", [View.FRONT])
    kai = member("Kai", [View.SIDE, View.THREE_QUARTER])
    casting = bind_cast([mira, kai], 2)
    assert labels(casting.binding) == ["Mira-front", "Kai-three_quarter"]
    assert casting.binding.lead_note == "No front view: Kai's three-quarter view is used instead."


@pytest.mark.parametrize("limit", [1, 2])
def test_members_past_the_limit_are_unseated_in_cast_order(limit: int) -> None:
    cast = [member(name, [View.FRONT]) for name in ("Mira", "Kai", "Lio")]
    casting = bind_cast(cast, limit)
    assert casting.unseated == ("Mira", "Kai", "Lio")[limit:]


def test_a_member_with_no_view_is_unseated_whatever_the_limit() -> None:
    casting = bind_cast([member("Mira", [View.FRONT]), member("Kai", [], ("lantern",))], 7)
    assert casting.unseated == ("Kai",)
    assert bind_cast([member("Kai", [])], 7).unseated == ("Kai",)
    with pytest.raises(ValueError):
        bind_cast([], 3)
