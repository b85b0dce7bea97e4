"""Money: exact micros, rounding up from USD, what members and exports see, and the storage boundary."""

from __future__ import annotations

import copy
import pickle
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.domain import Actor, JobState, Money, ServerRules
from bot.library.characters import Library
from storage import Storage
from storage.ledger import Settlement, reserve
from tests.support.factories import new_job, open_storage


def test_from_usd_rounds_up_to_the_micro() -> None:
    assert Money.from_usd("0.0035") == Money(3500)
    assert Money.from_usd(Decimal("1.5")) == Money(1_500_000)
    assert Money.from_usd("0.0000001") == Money(1)  # an estimate is never under-reserved
    assert Money.from_usd("-0.0000019") == Money(-1)
    assert Money.from_usd(3) == Money(3_000_000)
    assert Money.from_usd("0.560") == Money.from_usd("0.56")


@pytest.mark.parametrize("bad", [0.5, True, "NaN", "Infinity"])
def test_from_usd_refuses_floats_and_non_amounts(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        Money.from_usd(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.0, True, Decimal(1), "1"])
def test_micros_are_whole_numbers(bad: object) -> None:
    with pytest.raises(TypeError):
        Money(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (0, "$0.00"),
        (3500, "$0.0035"),  # under a cent keeps its digits
        (9999, "$0.009999"),
        (10_000, "$0.01"),
        (420_000, "$0.42"),
        (1_234_567_890, "$1,234.57"),
        (-500_000, "$-0.50"),
    ],
)
def test_what_members_see(micros: int, shown: str) -> None:
    assert str(Money(micros)) == shown
    assert f"about {Money(micros)}" == f"about {shown}"


def test_usd_and_the_export_form() -> None:
    assert Money(500_000).usd == Decimal("0.5") and str(Money(500_000).usd) == "0.50"
    assert str(Money(40_000_000).usd) == "40.00"
    assert str(Money(3500).usd) == "0.0035"
    assert str(Money(10_000_000).usd) == "10.00"  # never 1E+1
    assert str(Money(1).usd) == "0.000001"
    assert Money(3500).plain == "0.003500" and Money(0).plain == "0.000000"


def test_arithmetic_and_ordering() -> None:
    a, b = Money(300), Money(200)
    assert a + b == Money(500) and a - b == Money(100) and b - a == Money(-100) and -a == Money(-300)
    assert Money.from_usd("0.112") * 5 == Money.from_usd("0.560")
    assert 5 * Money.from_usd("0.01") == Money.from_usd("0.05")
    assert Money.from_usd("0.14") * Decimal("1.5") == Money.from_usd("0.21")
    assert Money(1) * Decimal("0.5") == Money(1)  # a fractional count rounds up too
    assert sum([a, b, a], Money.ZERO) == Money(800)
    assert b < a and a > b and a >= Money(300) and b <= Money(200)
    assert max(Money.ZERO, b - a) == Money.ZERO
    assert sorted([a, Money.ZERO, b]) == [Money.ZERO, b, a]
    assert not Money.ZERO and Money(1) and Money(-1)


def test_money_is_not_a_number() -> None:
    assert Money(0) != 0 and Money(500_000) != Decimal("0.5") and Money(500_000) != "0.50"
    with pytest.raises(TypeError):
        _ = Money(1) < 2  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Money(1) + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Money(1) * Money(2)  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Money(1) * 1.5  # type: ignore[operator]


def test_immutable_hashable_copyable() -> None:
    money = Money(42)
    with pytest.raises(AttributeError):
        money.micros = 7  # type: ignore[misc]
    assert {Money(42): "x"}[money] == "x" and hash(Money(42)) == hash(money)
    assert copy.deepcopy(money) == money and pickle.loads(pickle.dumps(money)) == money
    assert repr(money) == "Money(micros=42)"


def test_in_a_model_money_comes_only_as_money_from_code_and_as_its_text_from_json() -> None:
    rules = ServerRules(monthly_cap_usd=Money.from_usd("40"), daily_cap_usd=Money.from_usd("0.0035"))
    with pytest.raises(ValidationError):
        ServerRules(monthly_cap_usd="40.00")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ServerRules(monthly_cap_usd=Decimal("40.00"))  # type: ignore[arg-type]
    assert rules.model_dump()["monthly_cap_usd"] == Money.from_usd("40")  # stays Money in Python
    saved = rules.model_dump_json(exclude_defaults=True)
    assert saved == '{"monthly_cap_usd":"40.00","daily_cap_usd":"0.0035"}'  # as Decimal amounts were saved
    assert ServerRules.model_validate_json(saved) == rules
    assert ServerRules.model_validate({**rules.model_dump(), "daily_cap_usd": None}).daily_cap_usd is None
    # settings saved before Money existed (Decimal text, or a number written by hand) still read
    old = ServerRules.model_validate_json('{"daily_cap_usd": "2.00", "monthly_cap_usd": 5, "confirm_over_usd": null}')
    assert old.daily_cap_usd == Money(2_000_000) and old.monthly_cap_usd == Money(5_000_000)
    assert old.confirm_over_usd is None
    assert ServerRules().confirm_over_usd == Money.from_usd("1.00")


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async for opened in open_storage(tmp_path):
        yield opened


async def test_job_costs_keep_their_text_columns(storage: Storage) -> None:
    character = await Library(storage).create(Actor(1, 42), "Ava", "tall")
    job = await new_job(storage, guild_id=1, user_id=42, character_id=character.id, cost=Money.from_usd("0.50"))
    assert job.cost_estimate == Money(500_000) and job.cost_final is None
    done = await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.DONE, cost_final=Money(3500))
    assert done is not None and done.cost_final == Money(3500)
    row = await storage.db.fetchone("SELECT cost_estimate, cost_final FROM jobs WHERE id = ?", (job.id,))
    assert row is not None and tuple(row) == ("0.50", "0.0035")
    # a row written before Money (the estimate's Decimal text as it came) reads as the same amount
    await storage.db.execute("UPDATE jobs SET cost_estimate = '0.560', cost_final = '0' WHERE id = ?", (job.id,))
    old = await storage.jobs.get(job.id)
    assert old is not None and old.cost_estimate == Money(560_000) and old.cost_final == Money.ZERO
    with pytest.raises(TypeError):
        await storage.jobs.update(job.id, cost_final="0.25")


async def test_the_ledger_takes_and_gives_money(storage: Storage) -> None:
    character = await Library(storage).create(Actor(1, 42), "Ava", "tall")
    job = await new_job(storage, guild_id=1, user_id=42, character_id=character.id, cost=Money.from_usd("0.28"))
    async with storage.db.transaction() as tx:
        await reserve(tx, guild_id=1, user_id=42, job_id=job.id, amount=job.cost_estimate)
    assert await storage.ledger.job_totals(1, [job.id]) == {job.id: Money.from_usd("0.28")}
    await storage.jobs.transition(job.id, [JobState.QUEUED], JobState.DONE, settle=Settlement(Money.from_usd("0.21")))
    entries = await storage.ledger.entries(1)
    assert [(e.entry, e.amount) for e in entries] == [
        ("reserve", Money(280_000)),
        ("release", Money(-280_000)),
        ("charge", Money(210_000)),
    ]
    month = entries[0].day[:7]
    totals = await storage.ledger.totals(1, period=month)
    assert totals.committed == totals.charged == Money(210_000) and totals.held == Money.ZERO
    assert await storage.ledger.month_by_job(1, month) == [(job.id, Money(280_000), Money.ZERO, Money(210_000))]
