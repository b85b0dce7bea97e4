"""ProviderKeys and the registry's per-server instances, without Discord: who may set keys, what shapes are
taken (refusals never echo a key), the audit entries, and when server instances are built, reused and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from bot.domain import BOT_ACCOUNT, Actor, JobState
from bot.domain.errors import InvalidInputError, NotAllowedError, NotFoundError
from bot.library.characters import Library
from bot.providers.accounts import KEY_SPECS, ProviderKeys, SealedKeys, ServerKeyError
from bot.providers.base import FinalError, Provider, RetryableError
from bot.providers.registry import AccountGoneError, ProviderRegistry
from bot.providers.secret_box import NoSecretKeyError, SecretBox, generate_key
from storage import Storage
from tests.support.factories import new_job, open_storage
from tests.support.scripted_provider import Backend, ScriptedProvider

ADMIN = Actor(guild_id=1, user_id=10, is_manager=True, manages_server=True)
MEMBER = Actor(guild_id=1, user_id=11)
OTHER_ADMIN = Actor(guild_id=2, user_id=20, is_manager=True, manages_server=True)
FAL_KEY = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc:9f8e7d6c5b4a39281706f5e4d3c2b1a0"


class KeyedProvider(ScriptedProvider):
    """A provider built with a key; it can be told to refuse the key when checked."""

    refuse: Exception | None = None

    def __init__(self, name: str, fields: Mapping[str, str]) -> None:
        super().__init__(Backend(), name=name)
        self.fields = dict(fields)
        self.closed = False

    async def verify_key(self) -> None:
        if KeyedProvider.refuse is not None:
            raise KeyedProvider.refuse

    async def close(self) -> None:
        self.closed = True


class RecordingAudit:
    """The audit log's test double (storage.audit.AuditRepository.record)."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, str, str]] = []

    async def record(self, *, guild_id: int, user_id: int, action: str, detail: str = "") -> None:
        self.entries.append((guild_id, user_id, action, detail))


class World:
    def __init__(self, storage: Storage, box: SecretBox | None) -> None:
        self.built: list[KeyedProvider] = []
        self.bots_kling = KeyedProvider("kling", {"access_key": "bot"})
        self.sealed = SealedKeys(storage.provider_keys, box)
        self.registry = ProviderRegistry(
            {"kling": self.bots_kling}, default="kling", factory=self.build, keyable=KEY_SPECS, server_keys=self.sealed
        )
        self.audit = RecordingAudit()
        self.keys = ProviderKeys(self.sealed, self.registry, audit=self.audit)

    def build(self, name: str, fields: Mapping[str, str]) -> Provider:
        provider = KeyedProvider(name, fields)
        self.built.append(provider)
        return provider


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async for storage in open_storage(tmp_path):
        yield storage


@pytest.fixture
def world(storage: Storage) -> World:
    KeyedProvider.refuse = None
    return World(storage, SecretBox.from_setting(generate_key()))


KLING = {"access_key": "ak-0123456789", "secret_key": "sk-0123456789abcdef"}


async def test_only_managers_set_or_remove_keys(world: World) -> None:
    with pytest.raises(NotAllowedError):
        await world.keys.set(MEMBER, "kling", KLING)
    await world.keys.set(ADMIN, "kling", KLING)
    with pytest.raises(NotAllowedError):
        await world.keys.remove(MEMBER, "kling")
    assert [s.provider for s in await world.keys.status(1)] == ["kling"]
    assert world.audit.entries == [(1, 10, "provider_key.set", "kling")]
    await world.keys.remove(ADMIN, "kling")
    assert world.audit.entries[-1] == (1, 10, "provider_key.remove", "kling")
    with pytest.raises(NotFoundError, match="no Kling key"):
        await world.keys.remove(ADMIN, "kling")


@pytest.mark.parametrize(
    ("provider", "fields", "message"),
    [
        ("kling", {"access_key": "", "secret_key": "sk-0123456789"}, "The Kling access key is empty."),
        ("kling", {"access_key": "ak-0123456789", "secret_key": "tiny"}, "should be 8-200 characters long"),
        ("kling", {"access_key": "ak 0123456789", "secret_key": "sk-0123456789"}, "should have no spaces"),
        ("fal", {"key": "no-colon-in-this-fal-key"}, "should look like `id:secret`"),
        ("fal", {"key": "a:b:c-too-many-colons"}, "should look like `id:secret`"),
        ("runway", {"api_key": "   "}, "The Runway API key is empty."),
        ("runway", {"api_key": "key_with a space"}, "should have no spaces"),
        ("midjourney", {"key": "whatever-123"}, "not for **midjourney**"),
        ("kling", {"api_key": "whatever-123"}, "no field api_key"),
    ],
)
async def test_malformed_keys_are_refused_without_echoing_them(
    world: World, provider: str, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await world.keys.set(ADMIN, provider, fields)
    assert message in str(caught.value)
    assert not any(len(v.strip()) > 3 and v.strip() in str(caught.value) for v in fields.values())
    assert await world.keys.status(1) == []


async def test_well_formed_keys_are_trimmed_and_kept(world: World) -> None:
    await world.keys.set(ADMIN, "fal", {"key": f"  {FAL_KEY}\n"})
    await world.keys.set(ADMIN, "runway", {"api_key": "key_0123456789abcdef"})
    fal = await world.registry.for_guild(1, "fal")
    assert isinstance(fal, KeyedProvider) and fal.fields == {"key": FAL_KEY}
    assert await world.registry.names_for_guild(1) == ["fal", "kling", "runway"]
    assert await world.registry.names_for_guild(2) == ["kling"]


async def test_a_key_the_provider_refuses_is_not_kept(world: World) -> None:
    KeyedProvider.refuse = FinalError("refused", detail=f"bad key {KLING['secret_key']}")
    with pytest.raises(InvalidInputError) as caught:
        await world.keys.set(ADMIN, "kling", KLING)
    assert "Kling did not accept this key" in str(caught.value) and KLING["secret_key"] not in str(caught.value)
    assert await world.keys.status(1) == [] and world.audit.entries == []
    assert all(p.closed for p in world.built)  # the provider built to check it is closed

    KeyedProvider.refuse = RetryableError("busy")  # cannot tell now: kept, and said so
    saved = await world.keys.set(ADMIN, "kling", KLING)
    assert saved.verified is False and saved.status.set_by == ADMIN.user_id


async def test_server_instances_are_cached_per_key_version_and_closed_when_it_changes(world: World) -> None:
    assert await world.registry.for_guild(1, "kling") is world.bots_kling
    await world.keys.set(ADMIN, "kling", KLING)
    first = await world.registry.for_guild(1, "kling")
    assert isinstance(first, KeyedProvider) and first.fields == KLING
    assert await world.registry.for_guild(1, "kling") is first  # reused, not rebuilt per job step
    assert await world.registry.for_guild(2, "kling") is world.bots_kling  # another server: the bot's key

    await world.keys.set(ADMIN, "kling", {**KLING, "secret_key": "sk-the-new-one-0123"})
    assert first.closed
    second = await world.registry.for_guild(1, "kling")
    assert (
        isinstance(second, KeyedProvider)
        and second is not first
        and second.fields["secret_key"] == "sk-the-new-one-0123"
    )

    await world.keys.remove(ADMIN, "kling")
    assert second.closed
    assert await world.registry.for_guild(1, "kling") is world.bots_kling

    await world.keys.set(ADMIN, "kling", KLING)
    third = await world.registry.for_guild(1, "kling")
    await world.registry.close()
    assert isinstance(third, KeyedProvider) and third.closed and world.bots_kling.closed


async def test_a_row_copied_to_another_server_does_not_open(world: World, storage: Storage) -> None:
    await world.keys.set(ADMIN, "kling", KLING)
    row = await storage.provider_keys.get(1, "kling")
    assert row is not None and b"ak-0123456789" not in row.ciphertext
    await storage.provider_keys.put(2, "kling", row.ciphertext, OTHER_ADMIN.user_id)
    with pytest.raises(ServerKeyError, match="enter it again"):
        await world.registry.for_guild(2, "kling")
    await storage.provider_keys.put(1, "fal", row.ciphertext, ADMIN.user_id)  # ... or to another provider
    with pytest.raises(ServerKeyError):
        await world.registry.for_guild(1, "fal")


async def test_without_a_secret_key_keys_cannot_be_set_or_used_but_can_be_removed(storage: Storage) -> None:
    sealed = World(storage, SecretBox.from_setting(generate_key()))
    await sealed.keys.set(ADMIN, "kling", KLING)
    bare = World(storage, None)  # the bot restarted without LIKENESS_SECRET_KEY
    assert not bare.keys.enabled
    with pytest.raises(NoSecretKeyError, match="likeness keygen"):
        await bare.keys.set(ADMIN, "kling", KLING)
    with pytest.raises(ServerKeyError, match="LIKENESS_SECRET_KEY"):
        await bare.registry.for_guild(1, "kling")
    assert await bare.registry.names_for_guild(1) == ["kling"]
    await bare.keys.remove(ADMIN, "kling")
    assert await bare.registry.for_guild(1, "kling") is bare.bots_kling


async def job_on(storage: Storage, account: str | None) -> int:
    """A job of server 1 sent with `account`, as the worker leaves it when it takes the job from the queue."""
    existing = await storage.db.fetchone("SELECT COUNT(*) FROM characters")
    assert existing is not None
    character = await Library(storage).create(ADMIN, f"Ava {existing[0] + 1}", "traits")
    job = await new_job(storage, guild_id=1, user_id=ADMIN.user_id, character_id=character.id, provider="kling")
    moved = await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.RUNNING, account=account, task_id="t")
    assert moved is not None
    return job.id


async def test_a_replaced_key_is_kept_only_while_a_shot_sent_with_it_may_still_need_it(
    world: World, storage: Storage
) -> None:
    await world.keys.set(ADMIN, "kling", KLING)
    first, first_account = await world.registry.resolve(1, "kling")
    assert isinstance(first, KeyedProvider)
    job_id = await job_on(storage, first_account)

    saved = await world.keys.set(ADMIN, "kling", {**KLING, "secret_key": "sk-the-new-one-0123"})
    assert saved.previous_in_use == 1
    assert await world.registry.for_job(1, "kling", first_account) is first and not first.closed
    new, new_account = await world.registry.resolve(1, "kling")
    assert new is not first and new_account != first_account

    # After a restart the old key is opened again from its sealed row (never kept in plain).
    restarted = World(storage, world.sealed._box)  # pyright: ignore[reportPrivateUsage]
    reopened = await restarted.registry.for_job(1, "kling", first_account)
    assert isinstance(reopened, KeyedProvider) and reopened.fields == KLING

    # Given up on but looked at again later (a late success is still collected): still needed.
    await storage.jobs.transition(job_id, [JobState.RUNNING], JobState.FAILED, late_check_until=10**12)
    await world.registry.purge_retired()
    assert not first.closed
    # Once nothing can need it, it is deleted and its instance closed; the job can no longer reach it.
    await storage.jobs.transition(job_id, [JobState.FAILED], JobState.FAILED, late_check_until=None)
    await world.registry.purge_retired()
    assert first.closed
    assert await storage.db.fetchone("SELECT 1 FROM retired_provider_keys") is None
    with pytest.raises(AccountGoneError):
        await world.registry.for_job(1, "kling", first_account)
    assert await world.registry.for_job(1, "kling", BOT_ACCOUNT) is world.bots_kling
    assert await world.registry.for_job(1, "kling", None) is new


async def test_a_key_retired_while_a_purge_runs_is_not_closed_under_its_shot(
    world: World, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's purge and an admin setting a key again interleave at every await."""
    await world.keys.set(ADMIN, "kling", KLING)
    first, first_account = await world.registry.resolve(1, "kling")
    await job_on(storage, first_account)
    await world.keys.set(ADMIN, "kling", {**KLING, "secret_key": "sk-the-second-0123"})  # retires the first
    second, second_account = await world.registry.resolve(1, "kling")
    await job_on(storage, second_account)
    assert isinstance(first, KeyedProvider) and isinstance(second, KeyedProvider)

    looked_up = world.sealed.retired_key
    interleaved = False

    async def retired_key(guild_id: int, provider: str, version: str) -> object:
        nonlocal interleaved
        if not interleaved:  # while the pass looks up the first key, the admin sets a third
            interleaved = True
            await world.keys.set(ADMIN, "kling", {**KLING, "secret_key": "sk-the-third-01234"})
        return await looked_up(guild_id, provider, version)

    monkeypatch.setattr(world.sealed, "retired_key", retired_key)
    await world.registry.purge_retired()
    assert interleaved and not first.closed and not second.closed  # each still has a shot rendering on it
    assert await world.registry.for_job(1, "kling", second_account) is second


async def test_removing_a_key_a_shot_still_uses_says_so(world: World, storage: Storage) -> None:
    await world.keys.set(ADMIN, "kling", KLING)
    _provider, account = await world.registry.resolve(1, "kling")
    await job_on(storage, account)
    await job_on(storage, account)
    removed = await world.keys.remove(ADMIN, "kling")
    assert removed.in_use == 2 and removed.status.provider == "kling"
    assert await world.registry.for_guild(1, "kling") is world.bots_kling  # new shots: the bot's key
    assert isinstance(await world.registry.for_job(1, "kling", account), KeyedProvider)
