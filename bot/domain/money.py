"""Money: USD amounts (Decimal or their text) and the integer millionths (micros) the ledger keeps."""

from __future__ import annotations

import math
from decimal import Decimal

MICROS_PER_USD = 1_000_000


def to_micros(amount: Decimal | str) -> int:
    """USD to millionths, rounded up (an estimate is never under-reserved)."""
    return math.ceil(Decimal(amount) * MICROS_PER_USD)


def usd(micros: int) -> str:
    """$1.23; amounts under a cent keep their digits ($0.0035), so a cheap shot never shows as $0.00."""
    amount = Decimal(micros) / MICROS_PER_USD
    if micros == 0 or abs(micros) >= 10_000:
        return f"${amount:,.2f}"
    return f"${amount.normalize():f}"


def plain_usd(micros: int) -> str:
    """Micros as a plain USD number with every digit (0.003500), for exports read by spreadsheets."""
    return f"{Decimal(micros) / MICROS_PER_USD:.6f}"
