"""The subject library: the rules for characters (names, ownership, permissions, locking, versions).

Who may do what:
- who sees (and so uses) a character depends on its visibility (`can_see`): every member of the server, its
  owner only, or its owner and members holding one of its chosen roles; members with Manage Server see every
  character so they can moderate it. A character the actor cannot see behaves exactly like one that does not
  exist: same not-found message, absent from lists and suggestions;
- a listing that names characters through jobs (the queue) names a job's character only to the job's author and to
  those who can see the character (`job_names`); the others read "a private character";
- the owner of a character, and members with Manage Server, may change or delete it;
- a locked character can be changed only by its owner; Manage Server can still unlock it, so a
  server is never stuck with a character nobody can manage.
A character of another server is never found: every lookup is scoped by the actor's guild.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.domain import Actor, Character, Element, Job, Page, ReferenceView, View, Visibility
from bot.domain.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError
from storage import Storage
from storage.characters import NameTakenError

NAME_MAX = 32
DESCRIPTION_MAX = 1000
AUTOCOMPLETE_MAX = 25
MAX_VISIBLE_ROLES = 3
_VIEW_ORDER = tuple(View)  # every card asks for the missing views, and iterating an enum is slow
_NAME_PATTERN = re.compile(r"^[\w][\w '\-.]*$")
HIDDEN_CHARACTER = "a private character"  # how a listing names a character the reader cannot see


class ScreenHook(Protocol):
    """Checks member-written texts (a name, a description) against the server's rules, with the NSFW gate when
    `nsfw_allowed` is False (outside age-restricted channels); raises a UserFacingError to refuse."""

    def __call__(
        self, actor: Actor, texts: dict[str, str | None], *, nsfw_allowed: bool | None = None
    ) -> Awaitable[None]: ...


def can_see(actor: Actor, character: Character) -> bool:
    """The one visibility rule: may this actor see (and so use) this character?"""
    if character.guild_id != actor.guild_id:
        return False
    if actor.is_manager or actor.user_id == character.owner_id or character.visibility is Visibility.SERVER:
        return True
    return character.visibility is Visibility.ROLES and not actor.role_ids.isdisjoint(character.visible_role_ids)


def not_found(name: str) -> NotFoundError:
    """What a missing character, and one the actor cannot see, both read as."""
    return NotFoundError(f"There is no character called **{name}** in this server. `/character list` shows them all.")


@dataclass(frozen=True)
class NewCharacter:
    """A character `Library.vet_new` let through: its cleaned name and description, not written yet."""

    name: str
    description: str


@dataclass(frozen=True)
class CharacterDetails:
    character: Character
    views: list[ReferenceView]
    elements: list[Element]

    @property
    def missing_views(self) -> list[View]:
        present = {view.view for view in self.views}
        return [view for view in _VIEW_ORDER if view not in present]


def checked_name(raw: str, *, max_length: int, empty: str, too_long: str, bad_characters: str) -> str:
    """NFC, whitespace collapsed, 1..max_length characters of letters, digits, spaces and - _ ' . (first a letter
    or digit). `too_long` may use {max_length} and {length}."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise InvalidInputError(empty)
    if len(name) > max_length:
        raise InvalidInputError(too_long.format(max_length=max_length, length=len(name)))
    if not _NAME_PATTERN.match(name):
        raise InvalidInputError(bad_characters)
    return name


def clean_name(raw: str) -> str:
    """Normalise and check a character name: 1-32 characters, letters, digits, spaces, - _ ' ."""
    return checked_name(
        raw,
        max_length=NAME_MAX,
        empty="A character needs a name.",
        too_long="Character names can be at most {max_length} characters (that one has {length}).",
        bad_characters="Character names may use letters, digits, spaces and - _ ' . and must start with a letter "
        "or digit.",
    )


def clean_description(raw: str) -> str:
    description = raw.strip()
    if not description:
        raise InvalidInputError(
            "Describe the character's locked traits (age, build, face, hair, outfit): the description is empty."
        )
    if len(description) > DESCRIPTION_MAX:
        raise InvalidInputError(
            f"The description can be at most {DESCRIPTION_MAX} characters (that one has {len(description)})."
        )
    return description


DETAILS_CACHE_SIZE = 2048


class Library:
    def __init__(self, storage: Storage, screen: ScreenHook | None = None) -> None:
        self._storage = storage
        self._screen = screen
        # Views and elements of a (character id, version). Every change to either bumps the version in
        # the same transaction and ids are never reused, so an entry can never be stale.
        self._references: OrderedDict[tuple[int, int], tuple[list[ReferenceView], list[Element]]] = OrderedDict()

    async def screen_text(
        self, actor: Actor, texts: dict[str, str | None], *, nsfw_allowed: bool | None = None
    ) -> None:
        """Let the server's screening (its block lists, and the NSFW gate when `nsfw_allowed` is False) refuse
        member-written texts, named by what they are ("name", "description"); raises a UserFacingError."""
        if self._screen is not None and texts:
            await self._screen(actor, texts, nsfw_allowed=nsfw_allowed)

    async def create(self, actor: Actor, name: str, description: str, *, nsfw_allowed: bool | None = None) -> Character:
        """A new character; `nsfw_allowed` is whether the channel asked from is age-restricted (None: unknown)."""
        return await self.add(actor, await self.vet_new(actor, name, description, nsfw_allowed=nsfw_allowed))

    async def vet_new(
        self, actor: Actor, name: str, description: str, *, nsfw_allowed: bool | None = None
    ) -> NewCharacter:
        """Everything `create` refuses, without writing: the cleaned texts, the server's screening and a name the
        server has (from memory). /character create asks before it defers, so a refusal is its private answer."""
        name, description = clean_name(name), clean_description(description)
        await self.screen_text(actor, {"name": name, "description": description}, nsfw_allowed=nsfw_allowed)
        if await self._storage.characters.is_taken(actor.guild_id, name):
            raise await self.name_taken(actor, name)
        return NewCharacter(name, description)

    async def add(self, actor: Actor, new: NewCharacter) -> Character:
        """Write a vetted character (the database refuses a name taken meanwhile, as `create` says)."""
        try:
            character = await self._storage.characters.create(actor.guild_id, new.name, new.description, actor.user_id)
        except NameTakenError:
            raise await self.name_taken(actor, new.name) from None
        self._remember(character, [], [])  # a new character has no views or elements yet
        return character

    async def name_taken(
        self,
        actor: Actor,
        name: str,
        hint: str = "Pick another name.",
        *,
        as_asked: bool = False,
        renamed: int | None = None,
    ) -> ConflictError:
        """The refusal of a name the server already has in another case (named as it is, or `as_asked`), or in
        look-alike letters (both named). `renamed`: the character being renamed, which is not the clash."""
        existing = await self._storage.characters.clashing(actor.guild_id, name, other_than=renamed)
        if existing is None or existing.name.casefold() == name.casefold():
            shown = name if as_asked or existing is None else existing.name
            return ConflictError(f"This server already has a character called **{shown}**. {hint}")
        return ConflictError(
            f"This server already has a character called **{existing.name}**, which looks the same as "
            f"**{name}**. {hint}"
        )

    def _carry(self, before: Character, after: Character, *, bumped: bool) -> Character:
        """A change to the character itself (not its views or elements) keeps what it refers to: the references
        remembered at its old version stand for its new one, unless another change came in between."""
        cached = self._references.get((before.id, before.version))
        if cached is not None and after.version == before.version + int(bumped):
            self._remember(after, *cached)
        return after

    def _remember(self, character: Character, views: list[ReferenceView], elements: list[Element]) -> None:
        key = (character.id, character.version)
        self._references[key] = (views, elements)
        self._references.move_to_end(key)
        while len(self._references) > DETAILS_CACHE_SIZE:
            self._references.popitem(last=False)

    async def get(self, actor: Actor, name: str) -> Character:
        character = await self._storage.characters.get_by_name(actor.guild_id, name.strip())
        if character is None or not can_see(actor, character):
            raise not_found(name.strip())
        return character

    async def details(self, actor: Actor, character: Character) -> CharacterDetails:
        if not can_see(actor, character):
            raise not_found(character.name)
        cached = self._references.get((character.id, character.version))
        if cached is None:
            views, elements = await self._storage.references.current(actor.guild_id, character.id)
            # Only remember what was read at the version asked for: a change racing this read has a new one
            # (the character itself is read from memory, see storage.characters).
            fresh = await self._storage.characters.get(actor.guild_id, character.id)
            if fresh is not None and fresh.version == character.version:
                self._remember(character, views, elements)
            cached = (views, elements)
        views, elements = cached
        return CharacterDetails(character, list(views), list(elements))

    async def visible(self, actor: Actor) -> list[Character]:
        """The characters of the actor's server that they can see, by name."""
        return [c for c in await self._storage.characters.all(actor.guild_id) if can_see(actor, c)]

    async def job_names(self, actor: Actor, jobs: Sequence[Job]) -> dict[int, str | None]:
        """Job id -> the name of its character as this actor may read it in a listing, or None when hidden: its
        author knows what they queued; anyone else needs to see the character (deleted ones stay hidden)."""
        seen = {c.id for c in await self.visible(actor)}
        return {j.id: j.character_name if j.user_id == actor.user_id or j.character_id in seen else None for j in jobs}

    async def page(self, actor: Actor, number: int, per_page: int = 10) -> Page[Character]:
        characters = await self.visible(actor)
        total = len(characters)
        total_pages = max(1, -(-total // per_page))
        number = min(max(1, number), total_pages)
        items = characters[(number - 1) * per_page : number * per_page]
        return Page(items=items, number=number, total_pages=total_pages, total_items=total)

    async def edit(
        self,
        actor: Actor,
        character: Character,
        *,
        new_name: str | None = None,
        description: str | None = None,
        nsfw_allowed: bool | None = None,
    ) -> Character:
        self.ensure_can_change(actor, character)
        if new_name is None and description is None:
            raise InvalidInputError("Tell me what to change: a new name, a new description, or both.")
        cleaned_name = clean_name(new_name) if new_name is not None else None
        cleaned_description = clean_description(description) if description is not None else None
        await self.screen_text(
            actor, {"name": cleaned_name, "description": cleaned_description}, nsfw_allowed=nsfw_allowed
        )
        # the traits are what shots bind to: a new description is a new version
        bump = cleaned_description is not None and cleaned_description != character.description
        try:
            updated = await self._storage.characters.update(
                actor.guild_id, character.id, name=cleaned_name, description=cleaned_description, bump_version=bump
            )
        except NameTakenError:
            raise await self.name_taken(
                actor, cleaned_name or character.name, as_asked=True, renamed=character.id
            ) from None
        if updated is None:
            raise NotFoundError(f"**{character.name}** was deleted meanwhile.")
        return self._carry(character, updated, bumped=bump)

    async def delete_by_id(self, actor: Actor, character_id: int) -> str:
        """Delete a character of the actor's server (the id comes from a button); returns its name."""
        character = await self._storage.characters.get(actor.guild_id, character_id)
        if character is None or not can_see(actor, character):
            raise NotFoundError("That character no longer exists in this server.")
        self.ensure_can_change(actor, character)
        if not await self._storage.characters.delete(actor.guild_id, character.id):
            raise NotFoundError(f"**{character.name}** was already deleted.")
        return character.name

    async def set_locked(self, actor: Actor, character: Character, locked: bool) -> Character:
        if not (actor.user_id == character.owner_id or actor.is_manager):
            raise NotAllowedError(
                f"Only the owner of **{character.name}** or a member with Manage Server can lock or unlock it."
            )
        updated = await self._storage.characters.update(actor.guild_id, character.id, locked=locked)
        if updated is None:
            raise NotFoundError(f"**{character.name}** was deleted meanwhile.")
        return self._carry(character, updated, bumped=False)

    async def set_visibility(
        self, actor: Actor, character: Character, visibility: Visibility, role_ids: Sequence[int] = ()
    ) -> Character:
        """Who sees the character. `role_ids` (1-3) only for Visibility.ROLES; a real change bumps the version."""
        self.ensure_can_change(actor, character)
        roles = tuple(sorted(set(role_ids))) if visibility is Visibility.ROLES else ()
        if visibility is Visibility.ROLES and not roles:
            raise InvalidInputError(
                "Pick at least one role with the `role` option: members holding it will see "
                f"**{character.name}** (besides you and members with Manage Server)."
            )
        if len(roles) > MAX_VISIBLE_ROLES:
            raise InvalidInputError(f"A character can be shared with at most {MAX_VISIBLE_ROLES} roles.")
        if visibility is character.visibility and roles == character.visible_role_ids:
            return character
        updated = await self._storage.characters.update(
            actor.guild_id, character.id, visibility=visibility, visible_role_ids=roles, bump_version=True
        )
        if updated is None:
            raise NotFoundError(f"**{character.name}** was deleted meanwhile.")
        return self._carry(character, updated, bumped=True)

    def ensure_can_change(self, actor: Actor, character: Character) -> None:
        """Refuse a change to someone else's character, or to a locked one by anyone but its owner."""
        is_owner = actor.user_id == character.owner_id
        if character.locked and not is_owner:
            hint = " Unlock it first with `/character lock`." if actor.is_manager else ""
            raise NotAllowedError(f"**{character.name}** is locked: only its owner can change it.{hint}")
        if not (is_owner or actor.is_manager):
            raise NotAllowedError(
                f"**{character.name}** belongs to <@{character.owner_id}>: only they or a member with "
                "Manage Server can change it."
            )

    async def suggest(self, actor: Actor, typed: str) -> list[str]:
        """Names the actor can see, for autocomplete: prefix matches, then substring, then fuzzy; at most 25."""
        names = [character.name for character in await self.visible(actor)]
        query = typed.strip().casefold()
        if not query:
            return names[:AUTOCOMPLETE_MAX]
        prefix = [n for n in names if n.casefold().startswith(query)]
        contains = [n for n in names if query in n.casefold() and n not in prefix]
        picked = prefix + contains
        if len(picked) < AUTOCOMPLETE_MAX:
            folded = {n.casefold(): n for n in names if n not in picked}
            close = difflib.get_close_matches(query, list(folded), n=AUTOCOMPLETE_MAX, cutoff=0.5)
            picked += [folded[c] for c in close]
        return picked[:AUTOCOMPLETE_MAX]
