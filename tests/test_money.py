"""Money: exact micros, rounding up from USD, what members and exports see."""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal

import pytest

from bot.domain import Money


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
