"""Isolated margin allocations (methodology v1.1 section 4a): the collateral an isolated account
commits to each of its positions.

Every change of ``Position.allocated_margin`` is a ``MarginAllocation`` ledger row (append-only)
written in the same transaction, under the account lock (``margin_accounts_lock``, primary-key
order), with the position rows locked in primary-key order after it. An allocation moves no
collateral balance: it earmarks part of the account's collateral value for one position, so
``free collateral = collateral value − Σ a_i`` (computed by the engine).

Four writers, one rule each:

* booking (``fills_allocate``, run by ``accounts.trading.trades_book`` through the
  ``isolated_fills_booked`` signal): a fill that opens or
  increases an isolated position allocates the opened lot's initial margin, computed by the
  engine at the trade's price (linear: the underlying at the fill price; options: at the index,
  the trade's price being a premium), from free collateral, as much as there is; a fill that
  reduces the position releases its allocation in proportion to the quantity closed; closing
  releases all of it (the realised P&L is settled in cash by the booking itself);
* a member (``position_margin_move``): moves margin between free collateral and one position,
  never more than the free collateral, never more than the allocation, never taking the
  position's equity below its initial margin, never on prices the oracle does not trust;
* a change of margin mode (``margin_account_mode_change``): to ``isolated`` each position gets
  what makes it stand at its initial margin, ``max(0, IM_i − value_i)``, from free collateral in
  position order; from ``isolated`` every allocation is released; refused when the account's
  status (the engine's, before and after) would be worse;
* the upgrade (``isolated_carry_over_allocate``, command ``isolated_allocate``): positions of
  isolated accounts opened before allocations existed get the same ``max(0, IM_i − value_i)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from accounts.custody import member_account_require, member_trader_require
from accounts.models import MarginAccount, MarginMode, User
from accounts.services import margin_accounts_lock
from accounts.trading import BookedFill
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import AllocationKind, MarginAllocation, Position, Trade
from clearing.signals import accounts_changed_on_commit
from clearing.validation import decimal_nonzero
from riskengine import whatif
from riskengine.allocation_rules import (
    Lot,
    allocation_after_fill,
    allocations_in_order,
    cents_down,
    cents_up,
    lots_initial_margin,
    usd_decimal,
)
from riskengine.core import MODES, STATUSES, MarginResult, compute_margin
from riskengine.core.errors import DocumentError
from riskengine.loading import LoadedBook, book_rows_fetch, margin_book_build
from riskengine.selectors import NoActiveParameterSet, parameter_set_active
from riskengine.withdrawals import account_price_symbols, prices_trusted_require

logger = logging.getLogger(__name__)


def _parameters_form() -> dict:
    """The active set's form; ``NoActiveParameterSet`` when there is none."""
    return parameter_set_active().to_parameters_form()


# --- The engine's figures the allocations need ------------------------------------------------------


def collateral_free(
    *, account_ids: Sequence[int], quotes: MarketQuotes, parameters_form: dict
) -> dict[int, Decimal]:
    """Each account's free collateral, USD: its collateral value after haircuts (the engine's,
    spec section 3) less the allocations stored now. Positions play no part in it, so an account
    is never refused an allocation because one of its options lacks a mark volatility."""
    rows = book_rows_fetch(account_ids=account_ids)
    empty = np.zeros(0)
    collateral_only = replace(
        rows,
        position_ids=empty.astype(np.int64),
        position_account=empty.astype(np.int64),
        position_instrument=empty.astype(np.int64),
        position_quantity=empty,
        position_entry=empty,
        position_allocated=empty,
    )
    result = compute_margin(
        margin_book_build(rows=collateral_only, parameters_form=parameters_form, quotes=quotes).margin_input
    )
    allocated = dict(
        Position.objects.filter(account_id__in=list(account_ids))
        .values("account_id")
        .annotate(total=Sum("allocated_margin"))
        .values_list("account_id", "total")
    )
    return {
        int(account_id): usd_decimal(result.collateral_value[k]) - (allocated.get(int(account_id)) or 0)
        for k, account_id in enumerate(rows.account_ids.tolist())
    }


# --- Booking ----------------------------------------------------------------------------------------


def isolated_fills_receive(sender, *, fills: Sequence[BookedFill], booked_by: User | None, **kwargs) -> int:
    """The ``clearing.signals.isolated_fills_booked`` receiver: ``fills_allocate``; returns the
    number of allocation entries written (the booking checks that a receiver answered)."""
    return len(fills_allocate(fills=fills, booked_by=booked_by))


def fills_allocate(*, fills: Sequence[BookedFill], booked_by: User | None) -> list[MarginAllocation]:
    """Apply the booking rule (module docstring) to ``fills``, in order, in the caller's
    transaction: the caller holds the account and position locks, has settled the fills' cash and
    saves the positions (``allocated_margin`` is set on them here). Free collateral is read once
    per account, after the batch's cash, and followed through the batch.

    A booked trade is final: when the engine cannot margin a lot now (no active parameter set, no
    index price or mark volatility for an option) nothing is allocated to it, which the next sweep
    reports; releases never need the engine."""
    if not fills:
        return []
    opened = []
    for fill in fills:
        _, lot = allocation_after_fill(
            quantity=fill.quantity_before, allocated=Decimal(0), fill_quantity=fill.quantity
        )
        opened.append(lot)
    lots = [Lot(f.instrument, q, f.price) for f, q in zip(fills, opened, strict=True) if q != 0]
    lot_im: list[Decimal] = []
    free: dict[int, Decimal] = {}
    if lots:
        try:
            form = _parameters_form()
            quotes = whatif.quotes_current()
            lot_im = lots_initial_margin(lots=lots, quotes=quotes, parameters_form=form)
            free = collateral_free(
                account_ids=sorted({f.position.account_id for f in fills}),
                quotes=quotes,
                parameters_form=form,
            )
        except (NoActiveParameterSet, DocumentError) as error:
            logger.warning("isolated fills booked without allocating their initial margin: %s", error)
            lot_im, free = [], {}
    ims = iter(lot_im)
    rows = []
    for fill, lot in zip(fills, opened, strict=True):
        position, account_id = fill.position, fill.position.account_id
        kept, _ = allocation_after_fill(
            quantity=fill.quantity_before, allocated=position.allocated_margin, fill_quantity=fill.quantity
        )
        released = position.allocated_margin - kept
        if released:
            position.allocated_margin = kept
            if account_id in free:
                free[account_id] += released
            rows.append(_row(position, AllocationKind.RELEASE, -released, fill.trade, booked_by))
        if lot == 0:
            continue
        im = next(ims, None)
        if im is None or account_id not in free:
            continue
        added = min(im, max(free[account_id], Decimal(0)))
        if added > 0:
            position.allocated_margin += added
            free[account_id] -= added
            rows.append(_row(position, AllocationKind.TRADE, added, fill.trade, booked_by))
    return MarginAllocation.objects.bulk_create(rows)


def _row(
    position: Position,
    kind: str,
    amount: Decimal,
    trade: Trade | None,
    created_by: User | None,
    reference: str = "",
) -> MarginAllocation:
    return MarginAllocation(
        account_id=position.account_id,
        position=position,
        kind=kind,
        amount=amount,
        allocated_after=position.allocated_margin,
        trade=trade,
        reference=reference or (f"trade {trade.pk}" if trade is not None else ""),
        created_by=created_by,
    )


# --- One account margined as it stands, or as it would stand ------------------------------------------


def _account_book(*, account: MarginAccount, quotes: MarketQuotes, form: dict) -> LoadedBook:
    return margin_book_build(
        rows=book_rows_fetch(account_ids=[account.pk]), parameters_form=form, quotes=quotes
    )


def _margined(book: LoadedBook, **changes) -> MarginResult:
    """The engine's result for ``book``'s rows with ``changes`` (``BookRows`` fields) applied."""
    rows = replace(book.rows, **changes) if changes else book.rows
    built = margin_book_build(rows=rows, parameters_form=book.parameters_form, quotes=_quotes_of(book))
    return compute_margin(built.margin_input)


def _quotes_of(book: LoadedBook) -> MarketQuotes:
    """The market ``book`` was priced at, as quotes (to re-price changed rows identically)."""
    market = book.market_form
    return MarketQuotes(
        valuation_time=book.valuation_time,
        underlying_prices={s: e["price"] for s, e in market["underlyings"].items()},
        asset_prices={s: e["price"] for s, e in market["assets"].items()},
        option_ivs={s: e["iv"] for s, e in market["instruments"].items() if "iv" in e},
    )


def _book_or_refuse(*, account: MarginAccount, quotes: MarketQuotes | None, field: str) -> LoadedBook:
    """The account's book at trusted current prices: ``PricesUntrusted`` (409) when a price its
    margin depends on is not trusted, a ValidationError naming ``field`` when it cannot be margined."""
    quotes = quotes or whatif.quotes_current()
    prices_trusted_require(quotes=quotes, symbols=account_price_symbols(account_id=account.pk))
    try:
        return _account_book(account=account, quotes=quotes, form=_parameters_form())
    except (NoActiveParameterSet, DocumentError) as error:
        raise ValidationError(
            {field: f"The account's margin cannot be computed now ({error}); try again later."}
        ) from None


def stand_alone_needs(result: MarginResult) -> list[Decimal]:
    """Per position of a one-account result, ``max(0, IM_i − value_i)`` in cents rounded up: the
    allocation that makes the position stand at its initial margin (``e_i = a_i + value_i``,
    spec section 4a); its own unrealised profit counts, its unrealised loss is added."""
    needs = np.maximum(0.0, result.position_initial_margin - result.position_value)
    return [cents_up(need) for need in needs.tolist()]


# --- A member moves margin --------------------------------------------------------------------------


class MarginMoveRefused(ValidationError):
    """A well-formed move the account's figures do not allow (the API answers 422 naming the field)."""


@transaction.atomic
def position_margin_move(
    *,
    account: MarginAccount,
    position_id: int,
    amount: object,
    moved_by: User,
    quotes: MarketQuotes | None = None,
) -> MarginAllocation:
    """Move ``amount`` USD (signed: positive from free collateral into the position, negative
    back) on one open position of an isolated account, by a trader of its member.

    Refused with nothing written: ``ValidationError`` naming ``moved_by``, ``account`` or
    ``amount`` (not a trader of the member, a venue account, a zero or malformed amount);
    ``MarginMoveRefused`` naming ``account`` (not isolated), ``position`` (not an open position of
    the account) or ``amount`` (more than the free collateral, more than the allocation, or the
    position's equity would end below its initial margin); ``PricesUntrusted`` (HTTP 409) while
    a price the account's margin depends on is not trusted."""
    member_account_require(account)
    member_trader_require(user=moved_by, account=account, field="moved_by")
    amount = decimal_nonzero(amount, field="amount")
    account = margin_accounts_lock(account_ids=[account.pk])[account.pk]
    if account.mode != MarginMode.ISOLATED:
        raise MarginMoveRefused(
            {"account": f"{account.code} is in {account.mode} mode: only isolated positions hold margin."}
        )
    position = (
        Position.objects.filter(pk=position_id, account=account)
        .exclude(quantity=0)
        .select_for_update()
        .first()
    )
    if position is None:
        raise MarginMoveRefused({"position": f"No open position {position_id} in {account.code}."})
    book = _book_or_refuse(account=account, quotes=quotes, field="amount")
    result = compute_margin(book.margin_input)
    (j,) = np.flatnonzero(book.rows.position_ids == position.pk)
    if amount > 0:
        free = usd_decimal(result.free_collateral[0])
        if amount > free:
            raise MarginMoveRefused(
                {"amount": f"Only {max(free, Decimal(0)):f} USD of free collateral can be moved in."}
            )
    else:
        if -amount > position.allocated_margin:
            raise MarginMoveRefused(
                {"amount": f"The position holds {position.allocated_margin:f} USD: no more can move back."}
            )
        equity = usd_decimal(result.position_equity[j])
        equity_after = equity + amount
        im = usd_decimal(result.position_initial_margin[j])
        # Written so that a NaN figure refuses too.
        if not (equity_after >= im):
            raise MarginMoveRefused(
                {
                    "amount": f"The position's equity would be {equity_after:,.2f} USD, below its initial "
                    f"margin of {im:,.2f} USD: at most {max(equity - im, Decimal(0)):f} "
                    "USD can be moved back."
                }
            )
    position.allocated_margin += amount
    position.save(update_fields=["allocated_margin", "updated_at"])
    row = _row(position, AllocationKind.MEMBER, amount, None, moved_by, reference="moved by the member")
    row.save()
    accounts_changed_on_commit(sender=__name__, account_ids=[account.pk])
    return row


# --- A change of margin mode ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModePlan:
    """What a mode change would do: the status before and after and each position's allocation."""

    account: MarginAccount
    mode: str
    status_before: str
    status_after: str
    position_ids: tuple[int, ...]
    allocations: tuple[Decimal, ...]


def margin_account_mode_plan(
    *, account: MarginAccount, mode: str, quotes: MarketQuotes | None = None
) -> ModePlan:
    """Plan a change of ``account``'s margin mode to ``mode`` (nothing written): to ``isolated``
    each position gets ``max(0, IM_i − value_i)`` from free collateral in position order; from
    ``isolated`` every allocation is released. Refused (ValidationError naming ``mode``) when the
    engine's status after would be worse than before, or the mode is unknown or unchanged;
    ``PricesUntrusted`` while a price the account's margin depends on is not trusted."""
    if mode not in MarginMode.values:
        raise ValidationError({"mode": f"Unknown margin mode {mode!r}."})
    if mode == account.mode:
        raise ValidationError({"mode": f"{account.code} is already in {mode} mode."})
    if not Position.objects.filter(account=account).exclude(quantity=0).exists():
        # Nothing to allocate, release or judge: the mode changes freely.
        return ModePlan(account, mode, "healthy", "healthy", (), ())
    book = _book_or_refuse(account=account, quotes=quotes, field="mode")
    before = compute_margin(book.margin_input)
    modes = np.full(1, MODES.index(mode), dtype=np.int8)
    allocations = [Decimal(0)] * book.rows.position_ids.size
    if mode == MarginMode.ISOLATED:
        # Outside isolated mode nothing is allocated: the free collateral is the collateral value.
        free = cents_down(before.collateral_value[0])
        allocations = allocations_in_order(needs=stand_alone_needs(before), free=free)
    after = _margined(
        book,
        account_modes=modes,
        position_allocated=np.array([float(a) for a in allocations], dtype=np.float64),
    )
    status_before, status_after = STATUSES[int(before.status[0])], STATUSES[int(after.status[0])]
    if int(after.status[0]) > int(before.status[0]):
        raise ValidationError(
            {
                "mode": f"In {mode} mode {account.code} would be in {status_after.replace('_', ' ')}, worse "
                f"than {status_before.replace('_', ' ')} now: the mode is not changed."
            }
        )
    return ModePlan(
        account=account,
        mode=mode,
        status_before=status_before,
        status_after=status_after,
        position_ids=tuple(int(p) for p in book.rows.position_ids.tolist()),
        allocations=tuple(allocations),
    )


@transaction.atomic
def margin_account_mode_change(
    *, account: MarginAccount, mode: str, changed_by: User | None, quotes: MarketQuotes | None = None
) -> ModePlan:
    """Change ``account``'s margin mode under its lock, allocating or releasing explicitly
    (``margin_account_mode_plan``, re-planned on the locked rows); refused with nothing written."""
    account = margin_accounts_lock(account_ids=[account.pk])[account.pk]
    plan = margin_account_mode_plan(account=account, mode=mode, quotes=quotes)
    targets = dict(zip(plan.position_ids, plan.allocations, strict=True))
    positions = Position.objects.filter(account=account).order_by("pk").select_for_update()
    rows = []
    for position in positions:
        target = targets.get(position.pk, Decimal(0))
        if target != position.allocated_margin:
            amount = target - position.allocated_margin
            position.allocated_margin = target
            position.save(update_fields=["allocated_margin", "updated_at"])
            rows.append(
                _row(
                    position,
                    AllocationKind.MODE_CHANGE,
                    amount,
                    None,
                    changed_by,
                    reference=f"mode {plan.mode}",
                )
            )
    MarginAllocation.objects.bulk_create(rows)
    account.mode = plan.mode
    account.save(update_fields=["mode"])
    accounts_changed_on_commit(sender=__name__, account_ids=[account.pk])
    return plan


# --- The upgrade: positions opened before allocations existed -----------------------------------------


def isolated_carry_over_allocate(*, quotes: MarketQuotes | None = None) -> dict[str, Decimal]:
    """Allocate ``max(0, IM_i − value_i)`` from free collateral, in position order, to each open
    position of an isolated account that has never had an allocation (no ``MarginAllocation``
    row): the positions opened before allocations existed, which would otherwise stand on their
    value alone and look liquidatable. Prices: the oracle's last good ones. One transaction per
    account; an account that cannot be margined now is skipped (logged) and taken on a later run.
    Returns the USD allocated per account code. A position that received an allocation is never
    taken again, so running it twice allocates nothing twice."""
    quotes = quotes or whatif.quotes_current()
    form = _parameters_form()
    candidates = sorted(
        set(
            Position.objects.filter(account__mode=MarginMode.ISOLATED, allocations__isnull=True)
            .exclude(quantity=0)
            .values_list("account_id", flat=True)
        )
    )
    allocated: dict[str, Decimal] = {}
    for account_id in candidates:
        with transaction.atomic():
            account = margin_accounts_lock(account_ids=[account_id])[account_id]
            if account.mode != MarginMode.ISOLATED:
                continue
            try:
                book = _account_book(account=account, quotes=quotes, form=form)
            except DocumentError as error:
                logger.warning("isolated_allocate: %s skipped: %s", account.code, error)
                continue
            result = compute_margin(book.margin_input)
            never = Position.objects.filter(account=account, allocations__isnull=True)
            fresh = set(never.values_list("pk", flat=True))
            ids = [int(p) for p in book.rows.position_ids.tolist()]
            needs = [
                need if pk in fresh else Decimal(0)
                for pk, need in zip(ids, stand_alone_needs(result), strict=True)
            ]
            taken = allocations_in_order(needs=needs, free=cents_down(result.free_collateral[0]))
            locked = Position.objects.filter(pk__in=sorted(fresh)).order_by("pk").select_for_update()
            by_id = {p.pk: p for p in locked}
            rows = []
            for position_id, amount in zip(ids, taken, strict=True):
                if amount <= 0:
                    continue
                position = by_id[position_id]
                position.allocated_margin += amount
                position.save(update_fields=["allocated_margin", "updated_at"])
                rows.append(
                    _row(position, AllocationKind.CARRY_OVER, amount, None, None, reference="upgrade")
                )
            MarginAllocation.objects.bulk_create(rows)
            if rows:
                allocated[account.code] = sum((r.amount for r in rows), Decimal(0))
                accounts_changed_on_commit(sender=__name__, account_ids=[account.pk])
    return allocated
