"""Ways to hide a word from a screen that the prompt would still read whole (the moderation tests try each)."""

from __future__ import annotations

from collections.abc import Callable

CYRILLIC = str.maketrans("aeopcxy", "\u0430\u0435\u043e\u0440\u0441\u0445\u0443")


# Each evasion splits a word with characters the prompt drops (or writes it in look-alike letters).
EVASIONS: dict[str, Callable[[str], str]] = {
    "bidi RLO/LRO": lambda word: f"\u202e{word[:1]}\u202d{word[1:]}\u202c",
    "U+2061 function application": lambda word: f"{word[:1]}\u2061{word[1:]}",
    "U+180E Mongolian vowel separator": lambda word: f"{word[:2]}\u180e{word[2:]}",
    "tag characters": lambda word: f"{word[:1]}\U000e0041\U000e0020{word[1:]}\U000e007f",
    "DEL": lambda word: f"{word[:2]}\x7f{word[2:]}",
    "angle brackets": lambda word: f"{word[:1]}<{word[1:2]}>{word[2:]}",
    "invisible letters (Hangul filler, grapheme joiner)": lambda word: f"{word[:1]}\u3164{word[1:2]}\u034f{word[2:]}",
    "Cyrillic look-alikes": lambda word: word.translate(CYRILLIC),
}
