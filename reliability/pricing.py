"""What a model's tokens cost: the price table (``ModelPrice``, US dollars per million tokens)
and the cost of one call.

A model is priced by the longest ``ModelPrice.model`` that prefixes its name
(``claude-sonnet-4-5`` prices ``claude-sonnet-4-5-20250929``); a model no row prefixes is
unpriced, and its calls' cost is ``None`` (unknown, not free). There is no cache: the table is
a few rows read once per batch of recorded calls, so a price edit applies to every call
recorded after it, in every process, at once. Costs are rounded to ``COST_PLACES`` decimal
places, the precision they are stored with, so that sums of stored costs are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from reliability.models import PRICE_FIELDS, ModelPrice

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # LLMCall.cost_usd's decimal places


@dataclass(frozen=True, kw_only=True)
class Price:
    """One row of the price table: US dollars per million tokens of each kind."""

    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    cache_read_per_mtok: Decimal


def price_table() -> list[Price]:
    """Every price, by model prefix (one query)."""
    return [
        Price(**row) for row in ModelPrice.objects.order_by("model").values("model", *PRICE_FIELDS)
    ]


def price_for(model: str, *, prices: Iterable[Price] | None = None) -> Price | None:
    """The price of ``model``: the row with the longest prefix of its name; None if unpriced."""
    matching = [
        price
        for price in (price_table() if prices is None else prices)
        if price.model and model.startswith(price.model)
    ]
    return max(matching, key=lambda price: len(price.model), default=None)


def call_cost(
    price: Price | None,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int = 0,
    cache_creation_input_tokens: int = 0,
) -> Decimal | None:
    """What one call cost in US dollars at ``price`` (None when unpriced), rounded to
    ``COST_PLACES``. ``input_tokens`` excludes cache reads and writes, as the API reports it."""
    if price is None:
        return None
    dollars = (
        input_tokens * price.input_per_mtok
        + output_tokens * price.output_per_mtok
        + cache_read_input_tokens * price.cache_read_per_mtok
        + cache_creation_input_tokens * price.cache_write_per_mtok
    ) / TOKENS_PER_PRICE_UNIT
    return dollars.quantize(COST_PLACES, rounding=ROUND_HALF_UP)


def model_call_cost(
    model: str, *, prices: Sequence[Price] | None = None, **tokens: int
) -> Decimal | None:
    """``call_cost`` for a call to ``model``, priced from the table (or ``prices``)."""
    return call_cost(price_for(model, prices=prices), **tokens)


def dollars(amount: Decimal) -> str:
    """``$0.05``, ``$0.048``: at least cents, more places where they matter (caps, spend)."""
    places = max(2, -int(amount.normalize().as_tuple().exponent))
    return f"${amount:.{places}f}"


def price_rows(prices: Iterable[Price]) -> list[dict[str, str | float]]:
    """The price table as JSON-friendly rows (prices as numbers)."""
    return [
        {"model": price.model, **{name: float(getattr(price, name)) for name in PRICE_FIELDS}}
        for price in prices
    ]
