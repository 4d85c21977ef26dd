"""Currencies: each account's local one, and `filters[preferred_currency]` conversion.

Records are generated in the account's local currency. A conversions request with
`filters[preferred_currency]=USD` (or `MYR`) gets every amount converted with the fixed
`RATES` table and `currency` set to the asked one. Each amount is converted on its own:
local cents times the rate, rounded half up to cents, so `payout` may differ by a cent from
`base_payout + bonus_payout` after conversion (as with any per-field rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any

LOCAL_CURRENCIES = ("MYR", "SGD", "THB", "IDR", "PHP", "VND", "USD")
"""Currencies an account may keep its conversions in."""
PREFERRED_CURRENCIES = ("USD", "MYR")
"""Values `filters[preferred_currency]` accepts (absent or empty: the local currency)."""
AMOUNT_FIELDS = ("sale_amount", "payout", "base_payout", "bonus_payout")
"""The record fields a preferred currency converts."""
CURRENCY_FILTER = "filters[preferred_currency]"
"""The form field that asks for a currency."""

RATES: Mapping[str, Mapping[str, Decimal]] = MappingProxyType({
    # RATES[target][local]: one unit of `local` is worth this many units of `target`.
    "USD": MappingProxyType({
        "USD": Decimal("1"),
        "MYR": Decimal("0.2250"),
        "SGD": Decimal("0.7400"),
        "THB": Decimal("0.0290"),
        "IDR": Decimal("0.000063"),
        "PHP": Decimal("0.0175"),
        "VND": Decimal("0.000040"),
    }),
    "MYR": MappingProxyType({
        "USD": Decimal("4.4500"),
        "MYR": Decimal("1"),
        "SGD": Decimal("3.3000"),
        "THB": Decimal("0.1300"),
        "IDR": Decimal("0.00028"),
        "PHP": Decimal("0.0780"),
        "VND": Decimal("0.00018"),
    }),
})
"""Fixed conversion rates, `RATES[target][local]`; never change them without the tests."""

_CENT = Decimal("0.01")


def check_local(currency: str) -> str:
    """`currency` if an account may use it, else ValueError."""
    if currency not in LOCAL_CURRENCIES:
        raise ValueError(f"local currency must be one of {', '.join(LOCAL_CURRENCIES)}, "
                         f"got {currency!r}")
    return currency


def preferred_error(raw: str | None) -> str | None:
    """Why `filters[preferred_currency]` is invalid, or None if it is absent, empty or valid."""
    if not raw or raw in PREFERRED_CURRENCIES:
        return None
    return (f"preferred_currency must be one of {', '.join(PREFERRED_CURRENCIES)}, "
            f"got {raw!r}")


def _convert_amount(value: Any, rate: Decimal) -> Any:
    """`value` (a numeric string or a number) times `rate`, rounded half up to cents, in the
    same form: a string stays a "123.45" string, a number stays a number."""
    amount = Decimal(value) if isinstance(value, str) else Decimal(str(value))
    # Exact: amounts and rates have far fewer digits than Decimal's 28-digit context.
    rounded = (amount * rate).quantize(_CENT, rounding=ROUND_HALF_UP)
    return f"{rounded:.2f}" if isinstance(value, str) else float(rounded)


def convert(record: Mapping[str, Any], currency: str | None) -> dict[str, Any]:
    """The record as a request with `filters[preferred_currency]=currency` would see it.

    None or "" keeps the local currency (an unchanged copy). Raises ValueError for a currency
    the API does not accept or a record in a currency `RATES` does not know.
    """
    converted = dict(record)
    if not currency:
        return converted
    error = preferred_error(currency)
    if error is not None:
        raise ValueError(error)
    local = str(record["currency"])
    try:
        rate = RATES[currency][local]
    except KeyError:
        raise ValueError(f"no rate from {local!r} to {currency!r}") from None
    for field in AMOUNT_FIELDS:
        if field in converted:
            converted[field] = _convert_amount(converted[field], rate)
    converted["currency"] = currency
    return converted
