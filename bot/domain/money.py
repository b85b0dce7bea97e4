"""Money: one type for every amount the bot handles (prices, estimates, charges, caps, ledger entries).

`Money` keeps whole USD millionths ("micros"), so sums and comparisons are exact integer arithmetic. Text and
Decimal amounts become Money once, where they come in (a provider's price list, a member's `/settings budget`
input, a database column), rounded up to the micro: an estimate is never under-reserved.
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import total_ordering
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

MICROS_PER_USD = 1_000_000
_CENT = Decimal("0.01")


@total_ordering
class Money:
    """An amount in USD millionths. Immutable, ordered, hashable; adds to and subtracts from Money, multiplies by a
    count. Not a dataclass: pydantic would dump one as a dict, and `model_dump()` must keep Money as it is."""

    __slots__ = ("micros",)
    micros: int

    ZERO: ClassVar[Money]

    def __init__(self, micros: int) -> None:
        if not isinstance(micros, int) or isinstance(micros, bool):
            raise TypeError(f"Money holds whole micros, not {type(micros).__name__}")
        object.__setattr__(self, "micros", micros)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Money is immutable")

    def __reduce__(self) -> tuple[type[Money], tuple[int]]:  # copy and pickle: a new Money of the same micros
        return Money, (self.micros,)

    def __repr__(self) -> str:
        return f"Money(micros={self.micros})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and self.micros == other.micros

    def __hash__(self) -> int:
        return hash((Money, self.micros))

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        return self.micros < other.micros

    @classmethod
    def from_usd(cls, amount: Decimal | str | int) -> Money:
        """USD (a Decimal or its text, '0.0035') to Money, rounded up to the micro."""
        if isinstance(amount, float | bool):
            raise TypeError("money is never a float: give a Decimal or its text")
        value = Decimal(amount)
        if not value.is_finite():
            raise ValueError(f"not an amount of money: {amount!r}")
        return cls(math.ceil(value * MICROS_PER_USD))

    @property
    def usd(self) -> Decimal:
        """The exact amount in USD, with at least the cents' digits: 0.50, 12.00, 0.0035."""
        amount = Decimal(self.micros).scaleb(-6)
        cents = amount.quantize(_CENT)
        return cents if cents == amount else amount.normalize()

    @property
    def plain(self) -> str:
        """A plain USD number with every digit (0.003500), for exports read by spreadsheets."""
        return f"{Decimal(self.micros) / MICROS_PER_USD:.6f}"

    def __str__(self) -> str:
        """$1.23 for members; amounts under a cent keep their digits ($0.0035), so a cheap shot never shows as
        $0.00."""
        amount = Decimal(self.micros) / MICROS_PER_USD
        if self.micros == 0 or abs(self.micros) >= 10_000:
            return f"${amount:,.2f}"
        return f"${amount.normalize():f}"

    def __bool__(self) -> bool:
        return self.micros != 0

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros + other.micros)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros - other.micros)

    def __neg__(self) -> Money:
        return Money(-self.micros)

    def __mul__(self, factor: int | Decimal) -> Money:
        """A price times a count (seconds, units, credits); a fractional count rounds up to the micro."""
        if isinstance(factor, bool) or not isinstance(factor, int | Decimal):
            return NotImplemented
        if isinstance(factor, int):
            return Money(self.micros * factor)
        return Money(math.ceil(self.micros * factor))

    __rmul__ = __mul__

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """In a model: Money only, from Python code; from JSON (stored settings), the USD text it is saved as."""
        from_json = core_schema.chain_schema(
            [core_schema.decimal_schema(), core_schema.no_info_plain_validator_function(cls.from_usd)]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_json,
            python_schema=core_schema.is_instance_schema(cls),
            serialization=core_schema.plain_serializer_function_ser_schema(_serialized, info_arg=True),
        )


Money.ZERO = Money(0)


def _serialized(money: Money, info: core_schema.SerializationInfo) -> Money | str:
    """Money stays Money in `model_dump()`; in JSON it is its USD text ("40.00"), as amounts were always saved."""
    return str(money.usd) if info.mode_is_json() else money
