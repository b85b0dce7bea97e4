"""Rules of the subject library, below Discord: names, ownership, locking, versions, suggestions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain import Actor, ElementKind, StoredImage, View, Visibility
from bot.domain.errors import ConflictError, InvalidInputError, NotAllowedError, NotFoundError
from bot.library.characters import Library, can_see, clean_name
from storage import Storage

OWNER = Actor(guild_id=1, user_id=10)
MEMBER = Actor(guild_id=1, user_id=11)
MANAGER = Actor(guild_id=1, user_id=12, is_manager=True)
STRANGER = Actor(guild_id=2, user_id=13, is_manager=True)


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    yield Library(storage)
    await storage.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Ava  ", "Ava"), ("Mira   the  Bold", "Mira the Bold"), ("Zoë-2", "Zoë-2"), ("O'Neil", "O'Neil")],
)
def test_names_are_normalised(raw: str, expected: str) -> None:
    assert clean_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("", "needs a name"), ("x" * 33, "at most 32"), ("@everyone", "letters, digits"), ("<@123>", "letters")],
)
def test_bad_names_are_refused(raw: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        clean_name(raw)


async def test_edit_rules_owner_manager_member_lock(library: Library) -> None:
    ava = await library.create(OWNER, "Ava", "tall, red hair")
    with pytest.raises(NotAllowedError, match="belongs to <@10>"):
        await library.edit(MEMBER, ava, description="short")
    edited = await library.edit(MANAGER, ava, description="short, red hair")
    assert edited.version == ava.version + 1
    renamed = await library.edit(OWNER, edited, new_name="Ava Prime")
    assert renamed.version == edited.version  # a rename is not a new look

    locked = await library.set_locked(OWNER, renamed, True)
    with pytest.raises(NotAllowedError, match="Unlock it first"):
        await library.edit(MANAGER, locked, description="changed")
    with pytest.raises(NotAllowedError):
        await library.set_locked(MEMBER, locked, False)
    unlocked = await library.set_locked(MANAGER, locked, False)
    assert not unlocked.locked
    assert (await library.edit(OWNER, locked, description="owner may")).description == "owner may"


async def test_other_servers_characters_are_invisible(library: Library) -> None:
    ava = await library.create(OWNER, "Ava", "tall")
    with pytest.raises(NotFoundError):
        await library.get(STRANGER, "Ava")
    with pytest.raises(NotFoundError):
        await library.delete_by_id(STRANGER, ava.id)
    assert (await library.get(MEMBER, "ava")).id == ava.id


async def test_rename_into_taken_name_is_refused(library: Library) -> None:
    await library.create(OWNER, "Ava", "tall")
    bea = await library.create(OWNER, "Bea", "short")
    with pytest.raises(ConflictError, match="already has a character called \\*\\*AVA\\*\\*"):
        await library.edit(OWNER, bea, new_name="AVA")


async def test_suggestions_prefix_then_substring_then_fuzzy(library: Library) -> None:
    for name in ["Marco", "Amara", "Mara", "Zed", "Maria"]:
        await library.create(OWNER, name, "traits")
    assert await library.suggest(OWNER, "mar") == ["Mara", "Marco", "Maria", "Amara"]
    assert "Maria" in await library.suggest(OWNER, "mria")  # a typo still finds it
    assert await library.suggest(STRANGER, "mar") == []
    for index in range(30):
        await library.create(OWNER, f"Extra {index}", "traits")
    assert len(await library.suggest(OWNER, "")) == 25


async def test_pages(library: Library) -> None:
    for index in range(23):
        await library.create(OWNER, f"C{index:02d}", "traits")
    page = await library.page(MEMBER, 3, per_page=10)
    assert [c.name for c in page.items] == ["C20", "C21", "C22"]
    assert (page.number, page.total_pages, page.total_items) == (3, 3, 23)
    assert (await library.page(MEMBER, 99, per_page=10)).number == 3


async def test_visibility_rules(library: Library) -> None:
    ava = await library.create(OWNER, "Ava", "traits")
    await library.create(OWNER, "Bea", "traits")
    private = await library.set_visibility(OWNER, ava, Visibility.PRIVATE)
    assert private.version == ava.version + 1
    assert can_see(OWNER, private) and can_see(MANAGER, private)
    assert not can_see(MEMBER, private) and not can_see(STRANGER, private)
    with pytest.raises(NotFoundError, match=r"There is no character called \*\*ava\*\*"):
        await library.get(MEMBER, "ava")
    with pytest.raises(NotFoundError, match=r"There is no character called \*\*Ava\*\*"):
        await library.details(MEMBER, private)
    assert await library.suggest(MEMBER, "") == ["Bea"]
    assert [c.name for c in (await library.page(MEMBER, 1)).items] == ["Bea"]
    assert (await library.page(MANAGER, 1)).total_items == 2
    with pytest.raises(NotAllowedError):
        await library.set_visibility(MEMBER, private, Visibility.SERVER)

    shared = await library.set_visibility(OWNER, private, Visibility.ROLES, [8, 7, 8])
    assert shared.visible_role_ids == (7, 8)
    assert can_see(Actor(guild_id=1, user_id=20, role_ids=frozenset({8, 99})), shared)
    assert not can_see(Actor(guild_id=1, user_id=21, role_ids=frozenset({9})), shared)
    same = await library.set_visibility(OWNER, shared, Visibility.ROLES, [7, 8])
    assert same.version == shared.version  # nothing changed, no new version
    with pytest.raises(InvalidInputError, match="at least one role"):
        await library.set_visibility(OWNER, shared, Visibility.ROLES, [])
    with pytest.raises(InvalidInputError, match="at most 3 roles"):
        await library.set_visibility(OWNER, shared, Visibility.ROLES, [1, 2, 3, 4])
    public = await library.set_visibility(OWNER, shared, Visibility.SERVER, [5])
    assert (public.visibility, public.visible_role_ids) == (Visibility.SERVER, ())


async def test_screening_hook_sees_names_and_descriptions(tmp_path: Path) -> None:
    screened: list[tuple[int, list[str]]] = []

    async def screen(actor: Actor, texts: dict[str, str | None], *, nsfw_allowed: bool | None = None) -> None:
        screened.append((actor.guild_id, [t for t in texts.values() if t is not None]))
        if "forbidden" in " ".join(t for t in texts.values() if t):
            raise InvalidInputError("blocked")

    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    try:
        library = Library(storage, screen=screen)
        ava = await library.create(OWNER, "  Ava ", "traits")
        assert screened == [(1, ["Ava", "traits"])]
        with pytest.raises(InvalidInputError, match="blocked"):
            await library.create(OWNER, "Bea", "forbidden traits")
        with pytest.raises(InvalidInputError, match="blocked"):
            await library.edit(OWNER, ava, description="forbidden")
        await library.edit(OWNER, ava, new_name="Ava Prime")
        assert screened[-1] == (1, ["Ava Prime"])
        assert [c.name for c in await library.visible(OWNER)] == ["Ava Prime"]
    finally:
        await storage.close()


async def test_details_follow_every_change_whatever_was_remembered(tmp_path: Path) -> None:
    """What `details` remembers of a character's views and elements is what a fresh read says, after changes to the
    character itself (carried over to its new version) and to its views (a new version, read again)."""
    storage = await Storage.open(tmp_path / "db.sqlite3", tmp_path / "blobs")
    library = Library(storage)
    image = StoredImage(original="a" * 64, cleaned="b" * 64, cutout="c" * 64)

    async def assert_as_fresh(character_name: str) -> None:
        character = await library.get(OWNER, character_name)
        remembered = await library.details(OWNER, character)
        fresh = await Library(storage).details(OWNER, character)  # nothing remembered: read from the database
        assert (remembered.views, remembered.elements) == (fresh.views, fresh.elements)

    try:
        ava = await library.create(OWNER, "Ava", "tall")
        await library.details(OWNER, ava)
        await storage.references.set_view(1, ava.id, View.FRONT, image, uploaded_by=10)
        await assert_as_fresh("Ava")
        await storage.references.add_element(1, ava.id, "jacket", ElementKind.OUTFIT, image)
        await assert_as_fresh("Ava")
        current = await library.get(OWNER, "Ava")
        edited = await library.edit(OWNER, current, new_name="Ava Prime", description="short")
        assert edited.version == current.version + 1
        await assert_as_fresh("Ava Prime")
        locked = await library.set_locked(OWNER, edited, True)
        await assert_as_fresh("Ava Prime")
        shared = await library.set_visibility(OWNER, locked, Visibility.PRIVATE)
        await assert_as_fresh("Ava Prime")
        await storage.references.remove_element(1, shared.id, "jacket")
        await assert_as_fresh("Ava Prime")
        assert [v.view for v in (await library.details(OWNER, await library.get(OWNER, "Ava Prime"))).views] == [
            View.FRONT
        ]
    finally:
        await storage.close()
