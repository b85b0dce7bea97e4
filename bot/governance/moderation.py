"""Moderation of what members type: the server's block lists, and the NSFW gate.

The screen matches what the provider reads. Every text goes through the prompt's own normalisation
(`bot.domain.text.clean_member_text`: NFKC, no control, format or invisible characters, no `<`, `>` or reference `@`),
then is case folded without accents, so full-width `NSFW`, `Nsfw`, `n\u200bsfw` and `n<s>fw` all match `nsfw`.
Each rule also runs on the text's look-alike fold (Unicode's confusables prototypes, TR39), so `nud\u0435` with a
Cyrillic `\u0435` matches `nude`. Words match whole words (a blocked `ass` does not refuse `class`); patterns are
regular expressions run by RE2, whose time is linear in the text, so no pattern an admin adds can stall the bot.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import re2

from bot.domain import Actor, ServerRules
from bot.domain.errors import InvalidInputError
from bot.domain.text import load_confusables, lookalike_fold, match_form, words
from storage import Storage

log = logging.getLogger(__name__)

PATTERN_MAX = 200
WORD_MAX = 60
LIST_MAX = 200  # entries per list

# Prompts with these words are NSFW-looking: allowed only in age-restricted channels (Discord's rules).
NSFW_TERMS = frozenset(
    (
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
)


@dataclass(frozen=True)
class _Forms:
    """A text as the screen reads it: as normalised, and its look-alike fold, each also as ` word word `."""

    plain: str
    lookalike: str

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.plain,) if self.lookalike == self.plain else (self.plain, self.lookalike)

    @property
    def word_runs(self) -> tuple[str, ...]:
        return tuple(f" {' '.join(words(text))} " for text in self.texts)


def _forms(text: str) -> _Forms:
    plain = match_form(text)
    return _Forms(plain, lookalike_fold(plain))


@lru_cache(maxsize=4096)
def _word_runs(word: str) -> tuple[str, ...]:
    """A blocked word or phrase as ` word word ` runs, to find as whole words in a text's runs ("" if no words)."""
    return tuple(f" {' '.join(found)} " if (found := words(text)) else "" for text in _forms(word).texts)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re2._Regexp[str]:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    return re2.compile(pattern, options)


@dataclass(frozen=True)
class Match:
    term: str  # the blocked word or pattern, as the admin wrote it
    kind: str  # "word", "pattern" or "nsfw"


def _has_word(runs: tuple[str, ...], word: str) -> bool:
    return any(run and run in text for run in _word_runs(word) for text in runs)


def _matches(pattern: str, texts: tuple[str, ...]) -> bool:
    try:
        compiled = _compiled(pattern)
    except re2.error as error:
        # stored before patterns ran on RE2 (a lookaround, a backreference): `checked_pattern` refuses it now
        _warn_unusable(pattern, _re2_reason(error))
        return False
    return any(compiled.search(text) is not None for text in texts)


@lru_cache(maxsize=256)
def _warn_unusable(pattern: str, reason: str) -> None:
    """Once per pattern: an old block-list pattern RE2 cannot run is skipped; its admins should replace it."""
    log.warning("blocked pattern %r is skipped: RE2 cannot run it (%s); remove it and add an RE2 one", pattern, reason)


def find_blocked(text: str, rules: ServerRules) -> Match | None:
    """The first block-list entry the text matches."""
    return _blocked(_forms(text), rules)


def _blocked(forms: _Forms, rules: ServerRules) -> Match | None:
    runs = forms.word_runs if rules.blocked_words else ()
    for word in rules.blocked_words:
        if _has_word(runs, word):
            return Match(word, "word")
    for pattern in rules.blocked_patterns:
        if _matches(pattern, forms.texts):
            return Match(pattern, "pattern")
    return None


def beyond_own_words(rules: ServerRules, own_text: str) -> ServerRules:
    """The rules less the block-list entries that the bot's own wording matches (`own_text`: a compiled prompt
    with the member's pieces taken out), so a blocked "camera" refuses no shot for the bot's "slow camera
    push-in"; the member's pieces are screened by the whole list on their own."""
    forms = _forms(own_text)
    runs = forms.word_runs if rules.blocked_words else ()
    return rules.model_copy(
        update={
            "blocked_words": [word for word in rules.blocked_words if not _has_word(runs, word)],
            "blocked_patterns": [pattern for pattern in rules.blocked_patterns if not _matches(pattern, forms.texts)],
        }
    )


def looks_nsfw(text: str) -> bool:
    return _nsfw(_forms(text))


def _nsfw(forms: _Forms) -> bool:
    return any(not NSFW_TERMS.isdisjoint(words(form)) for form in forms.texts)


def checked_word(raw: str) -> str:
    word = " ".join(raw.split())
    if not word:
        raise InvalidInputError("Give the word or phrase to block.")
    if len(word) > WORD_MAX:
        raise InvalidInputError(f"A blocked word or phrase can be at most {WORD_MAX} characters.")
    if not words(match_form(word)):
        raise InvalidInputError("A blocked word needs letters or digits; to block signs, add a pattern.")
    return word


def checked_pattern(raw: str) -> str:
    """An admin's pattern, refused with the reason when RE2 cannot run it or it would block everything."""
    pattern = raw.strip()
    if not pattern:
        raise InvalidInputError("Give the regular expression to block.")
    if len(pattern) > PATTERN_MAX:
        raise InvalidInputError(f"A blocked pattern can be at most {PATTERN_MAX} characters.")
    try:
        compiled = _compiled(pattern)
    except re2.error as error:
        reason = _re2_reason(error)
        if _valid_elsewhere(pattern):
            raise InvalidInputError(
                f"That pattern uses something this bot's patterns cannot do ({reason}). Patterns run on RE2, "
                "which has no backreferences (`\\1`) or lookarounds (`(?=`, `(?!`, `(?<=`, `(?<!`) so that no "
                "pattern can be slow; rewrite it without them."
            ) from None
        raise InvalidInputError(f"That is not a valid regular expression: {reason}.") from None
    if compiled.search("") is not None:
        raise InvalidInputError("That pattern matches empty text, so it would block every prompt.")
    return pattern


def _re2_reason(error: re2.error) -> str:
    reason = error.args[0] if error.args else error
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _valid_elsewhere(pattern: str) -> bool:
    """Whether Python's own engine takes the pattern: then RE2 refused a feature, not a typo."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


class Refused(InvalidInputError):
    """Text a server's rules refuse; `match` says which rule, for the audit log."""

    def __init__(self, message: str, match: Match, what: str) -> None:
        super().__init__(message)
        self.match = match
        self.what = what


def screen(
    texts: dict[str, str | None],
    rules: ServerRules,
    *,
    nsfw_allowed: bool | None,
    stored: dict[str, str | None] | None = None,
) -> None:
    """Refuse the first text that the server's rules block: first `texts`, what the member just wrote (named by
    its key: "prompt", "name", ...), then `stored`, what else goes into the prompt (named in full: "the
    description of **Ava**", "the prompt this shot would send").

    `nsfw_allowed` is whether the channel is age-restricted; None skips the NSFW gate."""
    gate = nsfw_allowed is False and rules.nsfw_gate
    for what, text in [*texts.items(), *(stored or {}).items()]:
        if not text:
            continue
        typed = what in texts
        forms = _forms(text)  # once per text, for the block lists and the gate
        match = _blocked(forms, rules)
        if match is not None:
            message = (
                f"This server's block list does not allow the {what} you wrote. Change the wording and try again."
                if typed
                else f"This server's block list does not allow {what}. Change it and try again."
            )
            raise Refused(message, match, what)
        if gate and _nsfw(forms):
            subject = f"That {what}" if typed else what[:1].upper() + what[1:]
            raise Refused(
                f"{subject} looks NSFW. NSFW shots are allowed only in age-restricted channels.",
                Match("nsfw", "nsfw"),
                what,
            )


class Moderator:
    """Screens members' text against their server's rules, and writes each refusal to the audit log."""

    def __init__(self, storage: Storage, rules_of: Callable[[int], ServerRules] | None = None) -> None:
        self._storage = storage
        self._rules_of = rules_of  # the rules kept in memory (bot.governance.server_settings), when there are

    async def warm(self) -> None:
        """Read the look-alike table before the first text: read on first use, it would stall the commands
        around it (names and descriptions are folded with it, and stored with their look-alike key)."""
        await asyncio.to_thread(load_confusables)

    async def screen(
        self,
        guild_id: int,
        user_id: int,
        texts: dict[str, str | None],
        *,
        nsfw_allowed: bool | None,
        rules: ServerRules | None = None,
        stored: dict[str, str | None] | None = None,
    ) -> None:
        """Refuse (and audit) the first text the server's rules block (see `screen`); `rules` when the caller
        has them."""
        if rules is None:
            rules = self._rules_of(guild_id) if self._rules_of else (await self._storage.guilds.get(guild_id)).rules
        try:
            screen(texts, rules, nsfw_allowed=nsfw_allowed, stored=stored)
        except Refused as refused:
            text = {**(stored or {}), **texts}.get(refused.what) or ""
            await self._storage.audit.record(
                guild_id=guild_id,
                user_id=user_id,
                action=f"refused.{refused.match.kind}",
                detail=f"{refused.what} matched {refused.match.term!r}: {text}"[:300],
            )
            raise

    async def screen_member_text(
        self, actor: Actor, texts: dict[str, str | None], *, nsfw_allowed: bool | None = None
    ) -> None:
        """Names, descriptions, element names: the block lists apply, and the NSFW gate where the channel is
        known (`nsfw_allowed`, False outside age-restricted channels), as they all go into prompts."""
        await self.screen(actor.guild_id, actor.user_id, texts, nsfw_allowed=nsfw_allowed)
