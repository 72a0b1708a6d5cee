"""Booking trades into margin accounts: the only writer of positions.

It lives with the accounts because booking moves an account's cash (premiums, realised P&L) through
the collateral ledger under the accounts' locks; the trade and position models are the clearing
domain's (``clearing.models``), below the accounts.

A clearing house accepts executed trades even when they breach margin (the sweep then calls for
margin), so booking checks that a fill is well formed, never that the account can afford it. A
funding account (``AccountKind.FUNDING``) margins nothing: a fill into one is refused, naming it.

Cash effects, in the settlement asset (``settings.SETTLEMENT_ASSET``):

* options: the premium ``−q·m·price`` moves when the fill is booked; the option is then worth
  ``q·m·mark`` in equity (spec §3), so buying an option at its mark leaves equity unchanged;
* futures and perpetuals: the P&L of the closed quantity, ``closed·m·(price − entry)`` signed by
  the direction of the position, is realised in cash; the open quantity carries its unrealised
  P&L ``q·m·(S − entry)`` in equity (spec §3).

In an isolated account a fill also changes its position's allocated margin (spec §4a): opening or
increasing allocates the added initial margin from free collateral, reducing releases in
proportion, closing releases all (``riskengine.allocations.fills_allocate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import AccountKind, Asset, MarginAccount, MarginMode, MovementKind, User
from accounts.services import BalanceChange, collateral_movements_apply, margin_accounts_lock
from clearing.models import Instrument, InstrumentKind, Position, Trade
from clearing.signals import accounts_changed_on_commit, isolated_fills_booked
from clearing.validation import QUANTUM, decimal_nonzero, decimal_positive, errors_prefixed


@dataclass(frozen=True)
class BookedFill:
    """A fill just booked into an isolated account's position: the position's quantity before it
    (sent with ``clearing.signals.isolated_fills_booked``)."""

    position: Position
    quantity_before: Decimal
    instrument: Instrument
    quantity: Decimal
    price: Decimal
    trade: Trade


@dataclass(frozen=True)
class Fill:
    """One executed fill to clear. ``instrument`` may be an Instrument or its symbol."""

    account: MarginAccount
    instrument: Instrument | str
    quantity: Decimal | str | int
    price: Decimal | str | int
    external_id: str | None = None
    executed_at: datetime | None = None


@dataclass(frozen=True)
class PositionChange:
    quantity: Decimal
    entry_price: Decimal
    realised: Decimal


def position_after_fill(
    *, quantity: Decimal, entry_price: Decimal, fill_quantity: Decimal, fill_price: Decimal
) -> PositionChange:
    """The position (signed quantity, average entry price) after a fill, and the trading P&L per
    unit of multiplier realised by the part of the fill that closes existing quantity."""
    new_quantity = quantity + fill_quantity
    if quantity == 0 or (quantity > 0) == (fill_quantity > 0):
        average = (abs(quantity) * entry_price + abs(fill_quantity) * fill_price) / abs(new_quantity)
        return PositionChange(new_quantity, average.quantize(QUANTUM), Decimal(0))
    closed = min(abs(fill_quantity), abs(quantity))
    direction = 1 if quantity > 0 else -1
    realised = closed * (fill_price - entry_price) * direction
    if new_quantity == 0:
        average = Decimal(0)
    elif (new_quantity > 0) != (quantity > 0):
        average = fill_price  # flipped: the remainder was opened at this fill's price
    else:
        average = entry_price
    return PositionChange(new_quantity, average, realised)


def fill_check(
    *, instrument: Instrument, quantity: object, price: object, at: datetime
) -> tuple[Decimal, Decimal]:
    """A fill's signed quantity and its price as Decimals, or a ``ValidationError`` naming
    ``instrument``, ``quantity`` or ``price``: the instrument open for clearing and not expired at
    ``at``, a non-zero quantity, a positive price. The one check of a fill, booked
    (``trades_book``) or hypothetical (``riskengine.whatif``)."""
    if not instrument.is_active:
        raise ValidationError({"instrument": f"{instrument.symbol} is not open for clearing."})
    if instrument.expiry is not None and at >= instrument.expiry:
        raise ValidationError(
            {"instrument": f"{instrument.symbol} expired at {instrument.expiry.isoformat()}."}
        )
    return decimal_nonzero(quantity, field="quantity"), decimal_positive(price, field="price")


def fill_cash(
    *, instrument: Instrument, quantity: Decimal, price: Decimal, change: PositionChange
) -> tuple[str, Decimal]:
    """The settlement-asset movement a fill causes (module docstring), as ``(MovementKind,
    amount)``: an option's premium ``−q·m·price``, else the P&L ``change`` realised, times the
    multiplier. The one cash rule of a fill, booked or hypothetical."""
    if instrument.kind == InstrumentKind.OPTION:
        return MovementKind.PREMIUM, -quantity * instrument.multiplier * price
    return MovementKind.REALISED_PNL, change.realised * instrument.multiplier


def _fill_validate(
    fill: Fill, instruments: dict[str, Instrument], now: datetime
) -> tuple[Instrument, Decimal, Decimal, datetime]:
    symbol = fill.instrument.symbol if isinstance(fill.instrument, Instrument) else fill.instrument
    instrument = instruments.get(symbol)
    if instrument is None:
        raise ValidationError({"instrument": f"Unknown instrument {symbol!r}."})
    executed_at = fill.executed_at or now
    if timezone.is_naive(executed_at):
        raise ValidationError({"executed_at": "Must carry a time zone."})
    quantity, price = fill_check(
        instrument=instrument, quantity=fill.quantity, price=fill.price, at=executed_at
    )
    return instrument, quantity, price, executed_at


@transaction.atomic
def trades_book(*, fills: Sequence[Fill], booked_by: User | None = None) -> list[Trade]:
    """Clear a batch of fills atomically: all of them or, on the first invalid one, none.

    Errors name the offending item and field (``fills[2].price``). Positions and balances are
    updated in the same transaction, under the account locks, with a constant number of queries.
    """
    if not fills:
        raise ValidationError({"fills": "At least one fill is required."})
    symbols = {f.instrument.symbol if isinstance(f.instrument, Instrument) else f.instrument for f in fills}
    instruments = Instrument.objects.select_related("underlying").in_bulk(list(symbols), field_name="symbol")
    now = timezone.now()
    validated = []
    for index, fill in enumerate(fills):
        try:
            validated.append(_fill_validate(fill, instruments, now))
        except ValidationError as error:
            raise errors_prefixed(error, f"fills[{index}]") from None
    external_ids = [f.external_id for f in fills if f.external_id]
    if len(set(external_ids)) != len(external_ids):
        raise ValidationError({"fills": "The same external trade id appears twice in the batch."})
    duplicates = set(Trade.objects.filter(external_id__in=external_ids).values_list("external_id", flat=True))
    if duplicates:
        raise ValidationError({"external_id": f"Already booked: {', '.join(sorted(duplicates))}."})

    locked = margin_accounts_lock(account_ids=[f.account.pk for f in fills])
    for index, fill in enumerate(fills):
        if locked[fill.account.pk].kind == AccountKind.FUNDING:
            raise ValidationError(
                {
                    f"fills[{index}].account": f"{fill.account.code} is a funding account: it margins "
                    "nothing, so no position can be booked into it."
                }
            )
    pairs = {(f.account.pk, checked[0].pk) for f, checked in zip(fills, validated, strict=True)}
    Position.objects.bulk_create(
        [Position(account_id=a, instrument_id=i) for a, i in pairs], ignore_conflicts=True
    )
    positions = {
        (p.account_id, p.instrument_id): p
        for p in Position.objects.filter(
            account_id__in={a for a, _ in pairs}, instrument_id__in={i for _, i in pairs}
        )
        .order_by("pk")
        .select_for_update()
        if (p.account_id, p.instrument_id) in pairs
    }

    settlement = Asset.objects.get(symbol=settings.SETTLEMENT_ASSET)
    trades = []
    cash = []
    isolated = []
    for fill, (instrument, quantity, price, executed_at) in zip(fills, validated, strict=True):
        position = positions[(fill.account.pk, instrument.pk)]
        if locked[fill.account.pk].mode == MarginMode.ISOLATED:
            isolated.append((len(trades), position, position.quantity, instrument, quantity, price))
        change = position_after_fill(
            quantity=position.quantity,
            entry_price=position.entry_price,
            fill_quantity=quantity,
            fill_price=price,
        )
        position.quantity, position.entry_price = change.quantity, change.entry_price
        position.realised_pnl += change.realised * instrument.multiplier
        trades.append(
            Trade(
                account_id=fill.account.pk,
                instrument=instrument,
                quantity=quantity,
                price=price,
                external_id=fill.external_id or None,
                executed_at=executed_at,
                booked_by=booked_by,
            )
        )
        kind, amount = fill_cash(instrument=instrument, quantity=quantity, price=price, change=change)
        cash.append((fill.account.pk, kind, amount))

    trades = Trade.objects.bulk_create(trades)
    collateral_movements_apply(
        changes=[
            BalanceChange(
                account_id, settlement, kind, amount.quantize(QUANTUM), f"trade {trade.pk}", trade.pk
            )
            for trade, (account_id, kind, amount) in zip(trades, cash, strict=True)
        ],
        created_by=booked_by,
    )
    if isolated:
        # The allocation rule needs the engine, which depends on this app: the risk engine receives
        # the signal (``riskengine.allocations.fills_allocate``) in this transaction. No receiver
        # means no allocation, so the batch is refused rather than booked unallocated.
        answered = isolated_fills_booked.send(
            sender=__name__,
            fills=[BookedFill(p, q, i, fq, fp, trades[t]) for t, p, q, i, fq, fp in isolated],
            booked_by=booked_by,
        )
        if not answered:
            raise ImproperlyConfigured("Isolated fills were booked but nothing allocates their margin.")
    # After the cash: allocations are taken from free collateral that includes the batch's P&L.
    for position in positions.values():
        position.updated_at = now
    Position.objects.bulk_update(
        list(positions.values()),
        ["quantity", "entry_price", "realised_pnl", "allocated_margin", "updated_at"],
    )
    accounts_changed_on_commit(sender=__name__, account_ids=[f.account.pk for f in fills])
    return trades


def trade_book(
    *,
    account: MarginAccount,
    instrument: Instrument | str,
    quantity: Decimal | str | int,
    price: Decimal | str | int,
    external_id: str | None = None,
    executed_at: datetime | None = None,
    booked_by: User | None = None,
) -> Trade:
    """Clear one fill (see ``trades_book``); errors name the field without a batch prefix."""
    fill = Fill(account, instrument, quantity, price, external_id, executed_at)
    try:
        (trade,) = trades_book(fills=[fill], booked_by=booked_by)
    except ValidationError as error:
        if hasattr(error, "error_dict"):
            raise ValidationError(
                {field.removeprefix("fills[0]."): messages for field, messages in error.error_dict.items()}
            ) from None
        raise
    return trade
