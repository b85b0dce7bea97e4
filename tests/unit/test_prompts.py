"""The prompt spine: negative presets, Element Binding order, the four dialects, length fitting, injection."""

from __future__ import annotations

import re

import pytest

from bot.domain import Character, ElementKind, View
from bot.domain.errors import InvalidInputError
from bot.generation.prompts import (
    CAMERA_MOVES,
    CONSISTENCY_CLAUSE,
    DEFAULT_NEGATIVE_PRESETS,
    NEGATIVE_PRESETS,
    Binding,
    CompiledPrompt,
    choose_references,
    clean_member_text,
    compile_prompt,
    negative_prompt,
    reference_tokens,
)
from bot.providers import catalog
from bot.providers.base import ReferenceImage
from bot.providers.runway import runway_tag
from tests.support.prompt_parts import AVA, TRAITS, element, view

DEFAULT_NEGATIVE = ", ".join(term for key in DEFAULT_NEGATIVE_PRESETS for term in NEGATIVE_PRESETS[key].terms)


DIALECTS = {dialect.name: dialect for spec in catalog.SPECS for dialect in spec.dialects}


def labels(refs: Binding) -> list[str]:
    return [ref.label for ref in refs.chosen]


def compile_shot(
    binding: Binding,
    syntax: str,
    *,
    action: str = "waves at the camera",
    setting: str | None = "a rainy street",
    negative_supported: bool = True,
    max_chars: int = 2500,
    presets: tuple[str, ...] = DEFAULT_NEGATIVE_PRESETS,
    extra: str | None = None,
    provider_label: str = "Kling",
    character: Character = AVA,
    camera: str = "push_in",
) -> CompiledPrompt:
    return compile_prompt(
        character=character,
        action=action,
        camera=camera,
        setting=setting,
        binding=binding,
        syntax=DIALECTS[syntax],
        negative_supported=negative_supported,
        max_chars=max_chars,
        negative_presets=presets,
        extra_negative=extra,
        provider_label=provider_label,
    )


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


FRONT_34_JACKET = choose_references(
    [view(View.THREE_QUARTER), view(View.FRONT)], [element("jacket", ElementKind.OUTFIT)], max_images=4
)
TAIL = "Waves at the camera. Slow camera push-in. Setting: a rainy street. " + CONSISTENCY_CLAUSE


# --- Negative presets -------------------------------------------------------------------------------------------


def test_presets_exist_with_labels_and_defaults() -> None:
    assert DEFAULT_NEGATIVE_PRESETS == ("face", "hands", "background")
    assert {"face", "hands", "background", "identity", "quality"} <= NEGATIVE_PRESETS.keys()
    assert NEGATIVE_PRESETS["face"].label == "Face melting"
    assert NEGATIVE_PRESETS["background"].label == "Background bleed"
    assert {"morphed face", "asymmetric eyes", "melting features", "distorted face"} <= set(
        NEGATIVE_PRESETS["face"].terms
    )
    assert {"extra fingers", "missing fingers", "broken hands", "fused fingers"} <= set(NEGATIVE_PRESETS["hands"].terms)
    assert "background bleeding into subject" in NEGATIVE_PRESETS["background"].terms


def test_negative_prompt_joins_dedupes_and_appends_extra() -> None:
    hands = NEGATIVE_PRESETS["hands"].terms
    result = negative_prompt(["hands", "hands"], " blurry,  Extra Fingers ,, watermark; text. ")
    assert result == ", ".join((*hands, "blurry", "watermark", "text"))
    assert negative_prompt(DEFAULT_NEGATIVE_PRESETS, None) == DEFAULT_NEGATIVE
    assert negative_prompt([], "  ") == ""


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown negative preset 'feet'; valid presets: face, hands, background"):
        negative_prompt(["face", "feet"], None)


# --- Binding ----------------------------------------------------------------------------------------------------


def test_binding_order_views_then_elements_by_kind_and_name_then_face_and_back() -> None:
    views = [view(v) for v in (View.BACK, View.FACE, View.SIDE, View.THREE_QUARTER, View.FRONT)]
    elements = [
        element("zebra", ElementKind.OTHER),
        element("market", ElementKind.SCENE),
        element("Necklace", ElementKind.ACCESSORY),
        element("sword", ElementKind.PROP),
        element("boots", ElementKind.OUTFIT),
        element("Axe", ElementKind.PROP),
        element("jacket", ElementKind.OUTFIT),
    ]
    binding = choose_references(views, elements, max_images=20)
    assert labels(binding) == [
        "front",
        "three_quarter",
        "side",
        "boots",
        "jacket",
        "Axe",
        "sword",
        "Necklace",
        "market",
        "zebra",
        "face",
        "back",
    ]
    assert binding.left_out == () and binding.left_out_note is None and binding.notes == ()
    front, axe = binding.chosen[0], binding.chosen[5]
    assert (front.role, front.view, front.element_kind, front.blob) == ("view", View.FRONT, None, "clean-front")
    assert (axe.role, axe.view, axe.element_kind, axe.blob) == ("element", None, ElementKind.PROP, "clean-Axe")


def test_unbound_elements_and_uncleaned_images_are_not_candidates() -> None:
    binding = choose_references(
        [view(View.FRONT), view(View.SIDE, cleaned=False)],
        [
            element("cape", ElementKind.OUTFIT, bound=False),
            element("sword", ElementKind.PROP),
            element("shield", ElementKind.PROP, cleaned=False),
        ],
        max_images=7,
    )
    assert labels(binding) == ["front", "sword"]


def test_shot_overrides_binding_either_way_by_casefolded_name() -> None:
    elements = [element("Cape", ElementKind.OUTFIT, bound=False), element("Sword", ElementKind.PROP)]
    binding = choose_references([view(View.FRONT)], elements, max_images=7, overrides={"cape": True, "SWORD": False})
    assert labels(binding) == ["front", "Cape"]
    assert labels(choose_references([view(View.FRONT)], elements, max_images=7, overrides={})) == ["front", "Sword"]


def test_max_images_cut_and_left_out_note() -> None:
    views = [view(v) for v in View]
    binding = choose_references(views, [element("sword", ElementKind.PROP)], max_images=4)
    assert labels(binding) == ["front", "three_quarter", "side", "sword"]
    assert [ref.label for ref in binding.left_out] == ["face", "back"]
    assert binding.left_out_note == "Left out (this provider takes 4 images): face close-up, back view"
    one = choose_references(views, [element("sword", ElementKind.PROP)], max_images=1)
    assert (
        one.left_out_note
        == "Left out (this provider takes 1 image): three-quarter view, side view, sword, face close-up, back view"
    )
    assert choose_references(views, [], max_images=0).left_out_note == (
        "Left out (this provider takes no reference images): front view, three-quarter view, side view, "
        "face close-up, back view"
    )
    assert Binding(chosen=(), left_out=one.chosen).left_out_note == "Left out: front view"
    with pytest.raises(ValueError, match="max_images"):
        choose_references(views, [], max_images=-1)


def test_without_front_view_the_first_available_view_leads_with_a_note() -> None:
    binding = choose_references([view(View.SIDE), view(View.THREE_QUARTER)], [], max_images=4)
    assert labels(binding) == ["three_quarter", "side"]
    assert binding.notes == ("No front view: the three-quarter view is used as the main reference.",)

    close_up = choose_references([view(View.BACK), view(View.FACE)], [element("hat", ElementKind.ACCESSORY)], 2)
    assert labels(close_up) == ["face", "hat"]
    assert close_up.notes == (
        "No front view: the face close-up is used as the main reference.",
        "Left out (this provider takes 2 images): back view",
    )
    assert choose_references([], [element("hat", ElementKind.ACCESSORY)], 2).notes == ()


# --- Dialects ---------------------------------------------------------------------------------------------------


def test_kling_dialect_numbers_images_in_binding_order() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "kling")
    assert compiled.prompt == (
        f"<<<image_1>>> (front view) and <<<image_2>>> (three-quarter view) show Ava: {TRAITS}. "
        f"Wearing <<<image_3>>> (outfit: jacket). {TAIL}"
    )
    assert compiled.negative_prompt == DEFAULT_NEGATIVE
    assert compiled.notes == ()


def test_kling_dialect_groups_elements_by_verb_and_lists_late_views_with_their_numbers() -> None:
    binding = choose_references(
        [view(View.FRONT), view(View.FACE)],
        [
            element("sword", ElementKind.PROP),
            element("necklace", ElementKind.ACCESSORY),
            element("jacket", ElementKind.OUTFIT),
            element("market", ElementKind.SCENE),
        ],
        max_images=7,
    )
    compiled = compile_shot(binding, "kling", setting=None)
    assert compiled.prompt == (
        f"<<<image_1>>> (front view) and <<<image_6>>> (face close-up) show Ava: {TRAITS}. "
        "Wearing <<<image_2>>> (outfit: jacket) and <<<image_4>>> (accessory: necklace), "
        "holding <<<image_3>>> (prop: sword), in <<<image_5>>> (scene: market). "
        f"Waves at the camera. Slow camera push-in. {CONSISTENCY_CLAUSE}"
    )


def test_fal_dialect_views_form_element_1_and_elements_follow() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "fal", provider_label="fal.ai")
    assert compiled.prompt == (
        f"@Element1 (front and three-quarter views) shows Ava: {TRAITS}. Wearing @Element2 (outfit: jacket). {TAIL}"
    )


def test_fal_dialect_fifth_view_spills_into_image_urls() -> None:
    binding = choose_references([view(v) for v in View], [element("sword", ElementKind.PROP)], max_images=7)
    assert reference_tokens(binding.chosen, DIALECTS["fal"]) == (
        "@Element1",
        "@Element1",
        "@Element1",
        "@Element2",
        "@Element1",
        "@Image1",
    )
    compiled = compile_shot(binding, "fal", action="", setting=None)
    assert compiled.prompt == (
        "@Element1 (front, three-quarter, side and face close-up views) and @Image1 (back view) show Ava: "
        f"{TRAITS}. Holding @Element2 (prop: sword). Slow camera push-in. {CONSISTENCY_CLAUSE}"
    )


def test_kling_elements_dialect_views_are_element_1_and_element_images_count_from_1() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "kling_elements")
    assert compiled.prompt == (
        f"<<<element_1>>> (front and three-quarter views) shows Ava: {TRAITS}. "
        f"Wearing <<<image_1>>> (outfit: jacket). {TAIL}"
    )
    assert compiled.negative_prompt == DEFAULT_NEGATIVE


def test_kling_elements_dialect_numbers_element_images_in_binding_order() -> None:
    binding = choose_references(
        [view(View.FRONT), view(View.FACE)],
        [
            element("sword", ElementKind.PROP),
            element("necklace", ElementKind.ACCESSORY),
            element("jacket", ElementKind.OUTFIT),
            element("market", ElementKind.SCENE),
        ],
        max_images=7,
    )
    assert reference_tokens(binding.chosen, DIALECTS["kling_elements"]) == (
        "<<<element_1>>>",
        "<<<image_1>>>",
        "<<<image_2>>>",
        "<<<image_3>>>",
        "<<<image_4>>>",
        "<<<element_1>>>",
    )
    compiled = compile_shot(binding, "kling_elements", setting=None, negative_supported=False)
    assert compiled.prompt.startswith(
        f"<<<element_1>>> (front and face close-up views) shows Ava: {TRAITS}. "
        "Wearing <<<image_1>>> (outfit: jacket) and <<<image_3>>> (accessory: necklace), "
        "holding <<<image_2>>> (prop: sword), in <<<image_4>>> (scene: market). "
        "Waves at the camera. Slow camera push-in. "
    )
    assert compiled.negative_prompt is None


def test_runway_dialect_tags_from_labels_without_negative() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "runway", negative_supported=False, provider_label="Runway")
    positives = "a stable, symmetrical face, natural hands with five fingers and a subject clearly separated from the background"
    assert compiled.prompt == (
        f"@front (front view) and @three_quarter (three-quarter view) show Ava: {TRAITS}. "
        "Wearing @jacket (outfit: jacket). Waves at the camera. Slow camera push-in. Setting: a rainy street. "
        f"Keep the same face, hair and outfit in every frame; {positives}."
    )
    assert compiled.negative_prompt is None
    assert compiled.notes == (
        "Runway has no negative prompt: the presets (face melting, hands, background bleed) were not sent; "
        "the prompt asks for the opposite instead.",
    )


def test_plain_dialect_uses_words_only() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "plain", provider_label="Local")
    assert compiled.prompt == (
        f"Ava, the character in the reference images (front and three-quarter views): {TRAITS}. "
        f"Wearing the jacket (outfit), as in the reference images. {TAIL}"
    )
    assert "@" not in compiled.prompt and "<<<" not in compiled.prompt


@pytest.mark.parametrize("syntax", ["kling", "kling_elements", "fal", "runway", "plain"])
def test_no_references_just_the_name_and_traits(syntax: str) -> None:
    compiled = compile_shot(Binding(chosen=()), syntax)
    assert compiled.prompt == f"Ava: {TRAITS}. {TAIL}"


@pytest.mark.parametrize(
    ("label", "tag"),
    [
        ("front", "front"),
        ("three_quarter", "three_quarter"),
        ("ax", "ax_ref"),
        ("Grandpa's hat", "Grandpa_s_hat"),
        ("Épée de Zoë", "Epee_de_Zoe"),
        ("7 league boots", "ref_7_league_boo"),
        ("剣", "ref"),
        ("a very long element name", "a_very_long_elem"),
    ],
)
def test_runway_tags_follow_runway_rules(label: str, tag: str) -> None:
    made = runway_tag(label, set())
    assert made == tag
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{2,15}", made)


def test_runway_tags_are_unique_case_insensitively() -> None:
    refs = [
        ReferenceImage(label=label, role="element", data=b"", mime="image/png")
        for label in ("front", "Front", "front", "a very long element name", "a very long element name!")
    ]
    assert reference_tokens(refs, DIALECTS["runway"]) == (
        "@front",
        "@Front_2",
        "@front_3",
        "@a_very_long_elem",
        "@a_very_long_el_2",
    )


def test_reference_tokens_accept_provider_reference_images() -> None:
    refs = [
        ReferenceImage(label="front", role="view", data=b"", mime="image/png"),
        ReferenceImage(label="jacket", role="element", data=b"", mime="image/png"),
    ]
    assert reference_tokens(refs, DIALECTS["kling"]) == ("<<<image_1>>>", "<<<image_2>>>")
    assert reference_tokens(refs, DIALECTS["kling_elements"]) == ("<<<element_1>>>", "<<<image_1>>>")
    assert reference_tokens(refs, DIALECTS["fal"]) == ("@Element1", "@Element2")
    assert reference_tokens(refs, DIALECTS["plain"]) == ("", "")


# --- Length fitting ---------------------------------------------------------------------------------------------

LONG_ACTION = "turns slowly towards the camera, smiles, then raises the sword above her head as thunder rolls " * 3
LONG_SETTING = "a neon-lit night market in the rain, crowded stalls, steam rising from food carts, paper lanterns"


def test_action_is_shortened_first_on_a_word_boundary() -> None:
    full = compile_shot(FRONT_34_JACKET, "kling", action=LONG_ACTION, setting=LONG_SETTING)
    limit = units(full.prompt) - 60
    compiled = compile_shot(FRONT_34_JACKET, "kling", action=LONG_ACTION, setting=LONG_SETTING, max_chars=limit)
    assert units(compiled.prompt) <= limit
    assert f"Setting: {LONG_SETTING}. {CONSISTENCY_CLAUSE}" in compiled.prompt
    assert f"show Ava: {TRAITS}. Wearing <<<image_3>>> (outfit: jacket). Turns slowly" in compiled.prompt
    shortened_action = compiled.prompt.split("(outfit: jacket). ")[1].split(" Slow camera")[0]
    assert shortened_action.endswith("…")
    assert LONG_ACTION.capitalize().startswith(shortened_action.removesuffix("…"))
    assert not LONG_ACTION[len(shortened_action.removesuffix("…"))].isalnum()  # cut between words
    assert compiled.notes == (
        "The prompt was shortened to fit Kling's " + f"{limit}-character limit: your action was cut.",
    )


def test_setting_then_consistency_go_before_traits() -> None:
    compiled = compile_shot(
        FRONT_34_JACKET, "kling", action=LONG_ACTION, setting=LONG_SETTING, max_chars=190, presets=()
    )
    assert units(compiled.prompt) <= 190
    assert compiled.prompt == (
        f"<<<image_1>>> (front view) and <<<image_2>>> (three-quarter view) show Ava: {TRAITS}. "
        "Wearing <<<image_3>>> (outfit: jacket). Slow camera push-in. Keep the same face…"
    )
    assert compiled.notes == (
        "The prompt was shortened to fit Kling's 190-character limit: your action, the setting and the "
        "consistency clause were cut.",
    )


def test_traits_are_cut_last_with_a_note() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "kling", max_chars=150, presets=())
    assert compiled.prompt == (
        "<<<image_1>>> (front view) and <<<image_2>>> (three-quarter view) show Ava: tall woman… "
        "Wearing <<<image_3>>> (outfit: jacket). Slow camera push-in."
    )
    assert units(compiled.prompt) <= 150
    assert compiled.notes == (
        "The prompt was shortened to fit Kling's 150-character limit: your action, the setting, the consistency "
        "clause and the character's traits were cut (shorten the description or bind fewer images).",
    )


@pytest.mark.parametrize("syntax", ["kling", "kling_elements", "fal", "runway", "plain"])
@pytest.mark.parametrize("max_chars", [1, 20, 60, 100, 140, 200, 260, 333, 500, 1000])
def test_never_over_the_limit(syntax: str, max_chars: int) -> None:
    binding = choose_references(
        [view(v) for v in View], [element("jacket", ElementKind.OUTFIT), element("sword", ElementKind.PROP)], 7
    )
    character = AVA.model_copy(update={"description": "freckled 🦊 woman, " * 20})
    compiled = compile_shot(
        binding, syntax, action="🗡️ " + LONG_ACTION, setting=LONG_SETTING, max_chars=max_chars, character=character
    )
    assert units(compiled.prompt) <= max_chars
    assert compiled.negative_prompt is None or units(compiled.negative_prompt) <= max_chars


def test_traits_kept_whole_when_they_fit() -> None:
    character = AVA.model_copy(update={"description": "x " * 400 + "scar over the left eye"})
    compiled = compile_shot(
        FRONT_34_JACKET, "runway", action=LONG_ACTION, setting=LONG_SETTING, max_chars=1000, character=character
    )
    assert "scar over the left eye." in compiled.prompt
    assert units(compiled.prompt) <= 1000


def test_emoji_count_as_two_units() -> None:
    compiled = compile_shot(Binding(chosen=()), "plain", action="🦊" * 100, setting=None, max_chars=120)
    assert units(compiled.prompt) <= 120
    assert len(compiled.prompt) < 120


# --- Negative on / off ------------------------------------------------------------------------------------------


def test_negative_sent_with_extra_terms() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "kling", extra="blurry, extra fingers", presets=("face",))
    assert compiled.negative_prompt == ", ".join((*NEGATIVE_PRESETS["face"].terms, "blurry", "extra fingers"))
    assert compile_shot(FRONT_34_JACKET, "kling", presets=()).negative_prompt is None


def test_negative_dropped_with_a_note_naming_presets_and_extras() -> None:
    compiled = compile_shot(
        FRONT_34_JACKET, "fal", negative_supported=False, extra="blurry", provider_label="Kling O1 on fal"
    )
    assert compiled.negative_prompt is None
    assert compiled.notes == (
        "Kling O1 on fal has no negative prompt: the presets (face melting, hands, background bleed) and your "
        "extra negative terms were not sent; the prompt asks for the opposite instead.",
    )
    only_extra = compile_shot(FRONT_34_JACKET, "runway", negative_supported=False, presets=(), extra="blurry")
    assert only_extra.notes == ("Kling has no negative prompt: your extra negative terms were not sent.",)
    assert only_extra.prompt.endswith(CONSISTENCY_CLAUSE)
    nothing = compile_shot(FRONT_34_JACKET, "runway", negative_supported=False, presets=())
    assert nothing.notes == ()


def test_negative_is_shortened_by_whole_terms() -> None:
    compiled = compile_shot(Binding(chosen=()), "kling", action="", setting=None, max_chars=120)
    assert compiled.negative_prompt is not None
    assert units(compiled.negative_prompt) <= 120
    assert DEFAULT_NEGATIVE.startswith(compiled.negative_prompt + ", ")
    assert "The negative prompt was shortened to fit Kling's 120-character limit." in compiled.notes


def test_binding_notes_are_carried_into_the_compiled_prompt() -> None:
    binding = choose_references([view(View.SIDE), view(View.BACK)], [], max_images=1)
    compiled = compile_shot(binding, "kling")
    assert compiled.notes == (
        "No front view: the side view is used as the main reference.",
        "Left out (this provider takes 1 image): back view",
    )
    assert compiled.prompt.startswith(f"<<<image_1>>> (side view) shows Ava: {TRAITS}.")


# --- Member text ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", ["kling", "kling_elements", "fal", "runway", "plain"])
def test_member_text_cannot_inject_references(syntax: str) -> None:
    action = "hugs <<<image_9>>> and <<< element_2 >>>, waves at @Image3 and ＠Element1 and @\u200bfront <@1234>"
    character = AVA.model_copy(update={"description": "tall <<<image_5>>> @Element7"})
    compiled = compile_shot(
        FRONT_34_JACKET,
        syntax,
        action=action,
        setting="@jacket <<<video_1>>>",
        character=character,
        extra="@Image2",
    )
    expected_tokens = set(reference_tokens(FRONT_34_JACKET.chosen, DIALECTS[syntax])) - {""}
    found = set(re.findall(r"<<<\w+>>>|@\w+", compiled.prompt))
    assert found == expected_tokens
    assert "Hugs image_9 and element_2 , waves at Image3 and Element1 and front 1234." in compiled.prompt
    assert "<" not in (compiled.negative_prompt or "") and "@" not in (compiled.negative_prompt or "")


def test_clean_member_text_strips_controls_and_collapses_space() -> None:
    assert clean_member_text("  waves\x00 \x1b\n\n\tslowly\u202e \u200b now ") == "waves slowly now"
    assert clean_member_text("ｆｕｌｌ　width") == "full width"


# --- Errors -----------------------------------------------------------------------------------------------------


def test_camera_moves_and_unknown_camera() -> None:
    assert set(CAMERA_MOVES) == {"static", "push_in", "pull_out", "pan_left", "pan_right", "orbit"}
    assert "Static camera." in compile_shot(FRONT_34_JACKET, "kling", camera="static").prompt
    with pytest.raises(ValueError, match=r"Unknown camera move 'zoom'; use one of: static, push_in"):
        compile_shot(FRONT_34_JACKET, "kling", camera="zoom")


def test_errors_are_shown_to_the_member() -> None:
    with pytest.raises(InvalidInputError):
        compile_shot(FRONT_34_JACKET, "kling", presets=("feet",))


def test_when_even_the_references_do_not_fit_the_prompt_is_cut_hard_with_a_note() -> None:
    compiled = compile_shot(FRONT_34_JACKET, "kling", max_chars=40, presets=())
    assert units(compiled.prompt) <= 40
    assert compiled.prompt.startswith("<<<image_1>>> (front view)") and compiled.prompt.endswith("…")
    assert compiled.notes == (
        "The prompt was shortened to fit Kling's 40-character limit: your action, the setting, the consistency "
        "clause, the character's traits and the references were cut (shorten the description or bind fewer images).",
    )
