"""The prompt spine for a cast: each member introduced with its own references, traits and elements, the
action in the member's words, and a clause that keeps them apart; in each provider's dialect."""

from __future__ import annotations

from bot.domain import ElementKind, View
from bot.generation.casting import CastMember, bind_cast
from bot.generation.prompts import DEFAULT_NEGATIVE_PRESETS, CompiledPrompt, compile_prompt
from bot.providers import catalog
from tests.support.prompt_parts import AVA, element, view

DIALECTS = {dialect.name: dialect for spec in catalog.SPECS for dialect in spec.dialects}
KAI = AVA.model_copy(update={"id": 2, "name": "Kai", "description": "short man, grey beard, round glasses"})


def cast_prompt(syntax: str, *, max_images: int = 7) -> CompiledPrompt:
    ava = CastMember(
        "Ava",
        [view(View.FRONT), view(View.SIDE)],
        [element("lantern", ElementKind.PROP)],
    )
    kai = CastMember("Kai", [view(View.FRONT).model_copy(update={"cleaned_blob": "kai-front"})], [])
    binding = bind_cast([ava, kai], max_images).binding
    return compile_prompt(
        character=AVA,
        with_characters=[KAI],
        action="Ava hands the lantern to Kai",
        camera="static",
        setting="a night market",
        binding=binding,
        syntax=DIALECTS[syntax],
        negative_supported=True,
        max_chars=2500,
        negative_presets=DEFAULT_NEGATIVE_PRESETS,
        extra_negative=None,
        provider_label="Kling",
    )


def test_kling_elements_name_each_character_by_its_own_element() -> None:
    prompt = cast_prompt("kling_elements").prompt
    assert prompt.startswith(
        "<<<element_1>>> (front and side views) shows Ava: tall woman, red bob, green eyes. "
        "Ava is holding <<<image_1>>> (prop: lantern). "
        "<<<element_2>>> (front view) shows Kai: short man, grey beard, round glasses."
    ), prompt
    assert "Ava hands the lantern to Kai." in prompt
    assert "Ava and Kai are different people: each keeps their own face, hair and clothes." in prompt


def test_fal_gives_each_character_its_own_element_token() -> None:
    prompt = cast_prompt("fal").prompt
    assert "@Element1 (front and side views) shows Ava:" in prompt
    assert "Ava is holding @Element2 (prop: lantern)." in prompt  # numbered by first appearance
    assert "@Element3 (front view) shows Kai:" in prompt


def test_a_plain_dialect_says_whose_images_are_whose_in_words() -> None:
    prompt = cast_prompt("plain").prompt
    assert prompt.startswith("Ava, in the reference images (front and side views): tall woman, red bob, green eyes.")
    assert "Kai, in the reference images (front view): short man, grey beard, round glasses." in prompt
    assert "Ava is holding the lantern (prop), as in the reference images." in prompt


def test_a_member_left_without_images_is_still_described_by_its_traits() -> None:
    prompt = cast_prompt("kling_elements", max_images=1).prompt
    assert "shows Ava:" in prompt and "Kai: short man, grey beard, round glasses." in prompt
