"""Moderation of what members type: the server's block lists, and the NSFW gate.

Text is normalised before matching (NFKC, case folded, accents and zero-width characters removed), so
full-width `NSFW`, `Nsfw` and `n\u200bsfw` all match `nsfw`. Words match whole words (a blocked `ass` does not
refuse `class`); patterns are regular expressions that run with a timeout, so a catastrophic pattern an
admin adds cannot stall the bot.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import regex

from bot.domain import ServerRules
from bot.errors import InvalidInputError
from bot.library import Actor
from storage import Storage

PATTERN_MAX = 200
WORD_MAX = 60
LIST_MAX = 200  # entries per list
MATCH_TIMEOUT = 0.05  # seconds per pattern and text

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))

# Prompts with these words are NSFW-looking: allowed only in age-restricted channels (Discord's rules).
NSFW_TERMS = (
    "nsfw",
    "nude",
    "nudes",
    "nudity",
    "naked",
    "topless",
    "bottomless",
    "porn",
    "porno",
    "pornographic",
    "hentai",
    "explicit",
    "erotic",
    "erotica",
    "sex",
    "sexual",
    "sexy",
    "lewd",
    "fetish",
    "genitals",
    "nipples",
    "undressing",
    "striptease",
    "lingerie",
)


def normalise(text: str) -> str:
    """What matching sees: NFKC, case folded, without accents or zero-width characters, spaces collapsed."""
    folded = unicodedata.normalize("NFKD", text.translate(_ZERO_WIDTH)).casefold()
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(unicodedata.normalize("NFKC", plain).split())


def _word_pattern(word: str) -> regex.Pattern[str]:
    return regex.compile(r"(?<!\w)" + regex.escape(normalise(word)) + r"(?!\w)")


@dataclass(frozen=True)
class Match:
    term: str  # the blocked word or pattern, as the admin wrote it
    kind: str  # "word", "pattern" or "nsfw"


def find_blocked(text: str, rules: ServerRules) -> Match | None:
    """The first block-list entry the text matches."""
    plain = normalise(text)
    for word in rules.blocked_words:
        if _word_pattern(word).search(plain):
            return Match(word, "word")
    for pattern in rules.blocked_patterns:
        try:
            if regex.search(pattern, plain, flags=regex.IGNORECASE, timeout=MATCH_TIMEOUT):
                return Match(pattern, "pattern")
        except TimeoutError:
            # too slow to decide: refusing is the safe answer, and the admin sees which pattern did it
            return Match(pattern, "pattern")
    return None


_NSFW = regex.compile(r"(?<!\w)(?:" + "|".join(map(regex.escape, NSFW_TERMS)) + r")(?!\w)")


def looks_nsfw(text: str) -> bool:
    return _NSFW.search(normalise(text)) is not None


def checked_word(raw: str) -> str:
    word = " ".join(raw.split())
    if not word:
        raise InvalidInputError("Give the word or phrase to block.")
    if len(word) > WORD_MAX:
        raise InvalidInputError(f"A blocked word or phrase can be at most {WORD_MAX} characters.")
    return word


def checked_pattern(raw: str) -> str:
    """An admin's pattern, refused with the reason when it does not compile or is too slow on hard input."""
    pattern = raw.strip()
    if not pattern:
        raise InvalidInputError("Give the regular expression to block.")
    if len(pattern) > PATTERN_MAX:
        raise InvalidInputError(f"A blocked pattern can be at most {PATTERN_MAX} characters.")
    try:
        compiled = regex.compile(pattern, flags=regex.IGNORECASE)
    except regex.error as error:
        raise InvalidInputError(f"That is not a valid regular expression: {error}.") from None
    if compiled.search(""):
        raise InvalidInputError("That pattern matches empty text, so it would block every prompt.")
    for probe in ("a" * 2000 + "!", "ab" * 1000 + "!", " " * 2000 + "!"):
        try:
            compiled.search(probe, timeout=MATCH_TIMEOUT * 4)
        except TimeoutError:
            raise InvalidInputError(
                "That pattern takes too long on long text (catastrophic backtracking); simplify it."
            ) from None
    return pattern


class Refused(InvalidInputError):
    """Text a server's rules refuse; `match` says which rule, for the audit log."""

    def __init__(self, message: str, match: Match, what: str) -> None:
        super().__init__(message)
        self.match = match
        self.what = what


def screen(texts: dict[str, str | None], rules: ServerRules, *, nsfw_allowed: bool | None) -> None:
    """Refuse the first text (named by its key: "prompt", "name", ...) that the server's rules block.

    `nsfw_allowed` is whether the channel is age-restricted; None skips the NSFW gate (names and
    descriptions are screened by the block lists only)."""
    for what, text in texts.items():
        if not text:
            continue
        match = find_blocked(text, rules)
        if match is not None:
            raise Refused(
                f"This server's block list does not allow the {what} you wrote. Change the wording and try again.",
                match,
                what,
            )
        if nsfw_allowed is False and looks_nsfw(text):
            raise Refused(
                f"That {what} looks NSFW. NSFW shots are allowed only in age-restricted channels.",
                Match("nsfw", "nsfw"),
                what,
            )


class Moderator:
    """Screens members' text against their server's rules, and writes each refusal to the audit log."""

    def __init__(self, storage: Storage, rules_of: Callable[[int], ServerRules] | None = None) -> None:
        self._storage = storage
        self._rules_of = rules_of  # the rules kept in memory (bot.server_settings), when there are

    async def screen(
        self,
        guild_id: int,
        user_id: int,
        texts: dict[str, str | None],
        *,
        nsfw_allowed: bool | None,
        rules: ServerRules | None = None,
    ) -> None:
        """Refuse (and audit) the first text the server's rules block; `rules` when the caller has them."""
        if rules is None:
            rules = self._rules_of(guild_id) if self._rules_of else (await self._storage.guilds.get(guild_id)).rules
        try:
            screen(texts, rules, nsfw_allowed=nsfw_allowed)
        except Refused as refused:
            await self._storage.audit.record(
                guild_id=guild_id,
                user_id=user_id,
                action=f"refused.{refused.match.kind}",
                detail=f"{refused.what} matched {refused.match.term!r}: {texts.get(refused.what) or ''}"[:300],
            )
            raise

    async def screen_member_text(self, actor: Actor, texts: dict[str, str | None]) -> None:
        """Names and descriptions: the block lists apply; they are not prompts, so the NSFW gate does not."""
        await self.screen(actor.guild_id, actor.user_id, texts, nsfw_allowed=None)
