"""The screen sees what the provider reads: every evasion the prompt would read whole is caught, on a blocked
word and on the NSFW gate; look-alike letters are folded; admins' patterns run in linear time."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.domain import ElementKind, ServerRules, View
from bot.domain import text as text_module
from bot.domain.errors import InvalidInputError
from bot.generation.prompts import CompiledPrompt, choose_references, compile_prompt
from bot.governance.moderation import Refused, checked_pattern, checked_word, find_blocked, looks_nsfw, screen
from bot.providers.kling import IMAGES_DIALECT
from tests.support.evasions import CYRILLIC, EVASIONS
from tests.support.prompt_parts import AVA, element, view

RULES = ServerRules(blocked_words=["gore"])


def shot_prompt(action: str) -> CompiledPrompt:
    binding = choose_references([view(View.FRONT)], [element("cape", ElementKind.OUTFIT)], max_images=4)
    return compile_prompt(
        character=AVA,
        action=action,
        camera="push_in",
        setting=None,
        binding=binding,
        syntax=IMAGES_DIALECT,
        negative_supported=True,
        max_chars=2500,
        negative_presets=(),
        extra_negative=None,
        provider_label="Kling",
    )


def read_by_provider(prompt: str) -> str:
    """The word between "Walks past the" and "statue" as the provider receives it."""
    found = re.search(r"Walks past the (.*) statue", prompt)
    assert found is not None, prompt
    return found.group(1)


@pytest.mark.parametrize("evasion", EVASIONS, ids=list(EVASIONS))
@pytest.mark.parametrize("word", ["gore", "nude"])
def test_every_evasion_the_prompt_reads_whole_is_screened(evasion: str, word: str) -> None:
    action = f"walks past the {EVASIONS[evasion](word)} statue"
    compiled = shot_prompt(action)
    # what the provider reads: the word whole (in look-alike letters for the Cyrillic one), nothing in between
    expected = word.translate(CYRILLIC) if evasion == "Cyrillic look-alikes" else word
    assert read_by_provider(compiled.prompt) == expected

    if word == "gore":  # the block list
        for text in (action, compiled.prompt):
            match = find_blocked(text, RULES)
            assert match is not None and (match.term, match.kind) == ("gore", "word"), text
        with pytest.raises(Refused) as refused:
            screen({"prompt": action}, RULES, nsfw_allowed=True)
        assert str(refused.value).startswith("This server's block list does not allow the prompt you wrote.")
    else:  # the NSFW gate
        assert find_blocked(action, RULES) is None
        assert looks_nsfw(action) and looks_nsfw(compiled.prompt)
        with pytest.raises(Refused, match="That prompt looks NSFW"):
            screen({"prompt": action}, RULES, nsfw_allowed=False)
        screen({"prompt": action}, RULES, nsfw_allowed=True)  # an age-restricted channel takes it


def test_whole_look_alike_words_are_folded_and_ascii_is_read_as_written() -> None:
    assert looks_nsfw("\u0455\u0435\u0445y pose")  # "sexy" with a Cyrillic dze, ie and ha
    assert find_blocked("a bl\u043e\u043ed b\u0430th", ServerRules(blocked_words=["blood bath"])) is not None
    assert find_blocked("nu\u0301de", ServerRules(blocked_words=["nude"])) is not None  # accents go
    # whole words only
    ass = ServerRules(blocked_words=["ass"])
    for fine in ("a class of assassins", "mass", "passing by"):
        assert find_blocked(fine, ass) is None, fine
    assert find_blocked("my \u0430ss", ass) is not None  # a Cyrillic a
    # ASCII is read as written: the skeleton's own m -> rn would make a blocked "bum" refuse "burn"
    assert find_blocked("the house burns, burn it", ServerRules(blocked_words=["bum"])) is None
    assert find_blocked("a bum on a bench", ServerRules(blocked_words=["burn"])) is None
    assert find_blocked("a b\u057dm on a bench", ServerRules(blocked_words=["bum"])) is not None  # an Armenian u


def test_a_catastrophic_pattern_cannot_stall_the_screen() -> None:
    pattern = checked_pattern("(x|xx)+y")  # RE2: linear time, so nothing to refuse
    rules = ServerRules(blocked_patterns=[pattern])
    assert find_blocked("x" * 50_000, rules) is None
    match = find_blocked("x" * 50_000 + "y", rules)
    assert match is not None and match.kind == "pattern"
    assert find_blocked("x" * 50_000, ServerRules(blocked_patterns=["(a+)+$", "(x+x+)+z"])) is None


def test_patterns_are_case_insensitive_and_see_look_alikes() -> None:
    rules = ServerRules(blocked_patterns=[checked_pattern(r"blood\s*bath")])
    assert find_blocked("A BLOODBATH", rules) is not None
    assert find_blocked("a bl\u043e\u043ed<>bath", rules) is not None  # Cyrillic o, and what the prompt drops


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=gore)", r"(?<!blood)bath", r"(?!x)y"])
def test_patterns_re2_cannot_run_are_refused_clearly(pattern: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        checked_pattern(pattern)
    message = str(refused.value)
    assert message.startswith("That pattern uses something this bot's patterns cannot do (")
    assert "no backreferences" in message and "lookarounds" in message


def test_invalid_and_empty_patterns_and_words_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="That is not a valid regular expression: missing "):
        checked_pattern("(oops")
    with pytest.raises(InvalidInputError, match="matches empty text"):
        checked_pattern("a*")
    with pytest.raises(InvalidInputError, match="needs letters or digits"):
        checked_word("!!!")


def test_stored_texts_are_named_in_full() -> None:
    rules = ServerRules(blocked_words=["gore"])
    with pytest.raises(Refused) as refused:
        screen({}, rules, nsfw_allowed=False, stored={"the description of **Ava**": "covered in g\u2061ore"})
    assert (
        str(refused.value)
        == "This server's block list does not allow the description of **Ava**. Change it and try again."
    )
    with pytest.raises(Refused) as refused:
        screen({}, rules, nsfw_allowed=False, stored={"the element **cape** of **Ava**": "nud\u0435 cape"})
    assert str(refused.value) == (
        "The element **cape** of **Ava** looks NSFW. NSFW shots are allowed only in age-restricted channels."
    )
    screen({}, rules, nsfw_allowed=True, stored={"the description of **Ava**": "nude"})
    screen({}, ServerRules(nsfw_gate=False), nsfw_allowed=False, stored={"the description of **Ava**": "nude"})


# What a member could put between the letters: what the prompt drops or keeps, visible or not.
_NOISE = st.sampled_from(
    (
        *(" ", "<", ">", "@", "-", "_", ".", "\u200b", "\u200d", "\u2061", "\u180e", "\u202e", "\u2066"),
        *("\x7f", "\x00", "\U000e0041", "\u3164", "\u034f", "\ufe0f", "\u00ad", "\u0301", "\uff47", "\u043e"),
        *("x", "1"),
    )
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_NOISE, max_size=2), min_size=5, max_size=5))
@example([["\u043e", "\u0301"], [], [], [], []])  # a Cyrillic o, an accent, "gore": one word
def test_whenever_the_provider_reads_the_word_the_screen_does(noise: list[list[str]]) -> None:
    """Any mix of noise between the letters of a blocked word: if the compiled prompt reads the word whole, the
    screen of the member's text refuses it. A combining mark is read as part of the letter it follows (Python's
    `\\w` counts it as a sign, which would make the word before it end there)."""
    letters = ["", "g", "o", "r", "e"]
    action = "".join(letter + "".join(extra) for letter, extra in zip(letters, noise, strict=True)) + " at dawn"
    prompt = shot_prompt(action).prompt.casefold()
    prompt = "".join(char for char in prompt if unicodedata.category(char) not in ("Mn", "Me"))
    provider_reads = re.search(r"(?<![^\W_])g[o\u043e]r[e\u0435](?![^\W_])", prompt) is not None
    if provider_reads:
        assert find_blocked(action, RULES) is not None, (action, prompt)


def test_an_old_pattern_re2_cannot_run_is_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rules = ServerRules(blocked_patterns=[r"(?<!old )bath", "gore"])  # saved before patterns ran on RE2
    with caplog.at_level("WARNING", logger="bot.governance.moderation"):
        match = find_blocked("a gore bath", rules)
    assert match is not None and match.term == "gore"
    assert "blocked pattern '(?<!old )bath' is skipped: RE2 cannot run it" in caplog.text


def _general_clean_and_fold(text: str) -> str:
    """`match_form` by its general steps, which its ASCII shortcut skips (NFKC, dropping unprintables, folding)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if c.isspace() else c for c in text if c.isspace() or text_module.printable(c))
    text = text_module._ANGLE.sub("", text)  # pyright: ignore[reportPrivateUsage]
    text = " ".join(text_module._MENTION_AT.sub("", text).split())  # pyright: ignore[reportPrivateUsage]
    decomposed = unicodedata.normalize("NFKD", text).casefold()
    plain = unicodedata.normalize("NFKC", "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me")))
    return " ".join(plain.split())


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60))
@example("Ava <@123> says\thi\x00 @everyone")
def test_the_ascii_shortcut_reads_text_as_the_general_steps_do(text: str) -> None:
    assert text_module.match_form(text) == _general_clean_and_fold(text)
