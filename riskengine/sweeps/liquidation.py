"""Liquidation: execute an escalated call's liquidation at the current trusted quotes.

The plan (which positions, in which order) is ``riskengine.core.liquidation.liquidation_plan``
over the account's arrays; this module loads them under the account's lock, books the plan's
closes against the house account, pays the fee and covers a deficit from the insurance fund.

An isolated account (methodology v1.1 section 4a) is liquidated position by position
(``riskengine.core.liquidation.isolated_liquidation_plan``): only the positions whose own status
calls for it are closed, each pays its fee from its own equity, and a loss beyond a position's
allocation is covered by the insurance fund at once; the account's other positions and its free
collateral are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import VENUE_KINDS, AccountKind, Asset, MarginAccount, MovementKind
from accounts.services import BalanceChange, collateral_movements_apply, margin_accounts_lock
from accounts.trading import Fill, trades_book
from clearing.events import events_publish
from clearing.models import Instrument, Position
from clearing.ops.alerts import ops_alerts_raise, ops_alerts_resolve
from clearing.validation import decimal_from_float
from riskengine.core import STATUSES, compute_margin
from riskengine.core.document import ISOLATED
from riskengine.core.liquidation import isolated_liquidation_plan, liquidation_plan
from riskengine.loading import LoadedBook, book_rows_fetch, margin_book_build
from riskengine.reference import quotes_current
from riskengine.selectors import parameters_form
from riskengine.sweeps.calls import NOT_FINITE_ALERT, SUSPENDED_ALERT, exposed_symbols
from riskengine.sweeps.insurance import insurance_fund_after_liquidation
from riskengine.sweeps.models import Liquidation, LiquidationStatus


@dataclass(frozen=True)
class PlanStep:
    """One close of a liquidation plan (stored in ``Liquidation.plan``)."""

    position_id: int
    instrument: str
    quantity: float
    price: float
    notional: float
    released: float
    equity_after: float
    initial_margin_after: float


def liquidation_steps(*, book: LoadedBook, fee_rate: float) -> list[PlanStep]:
    """The plan of the (single) account in ``book``, closing against the settlement asset
    (``settings.SETTLEMENT_ASSET``), as steps with database ids and symbols."""
    margin_input = book.margin_input
    plan = liquidation_plan(
        margin_input,
        fee_rate=fee_rate,
        settlement_asset=margin_input.parameters.assets.index(settings.SETTLEMENT_ASSET),
    )
    rows = book.rows
    return [
        PlanStep(
            int(rows.position_ids[j]),
            book.instrument_symbols[int(rows.position_instrument[j])],
            float(rows.position_quantity[j]),
            price,
            notional,
            released,
            equity,
            im,
        )
        for j, price, notional, released, equity, im in zip(
            plan.positions.tolist(),
            plan.price.tolist(),
            plan.notional.tolist(),
            plan.released.tolist(),
            plan.equity_after.tolist(),
            plan.initial_margin_after.tolist(),
            strict=True,
        )
    ]


@transaction.atomic
def liquidation_execute(*, liquidation_id: int, quotes=None) -> Liquidation:
    """Execute a liquidation at the current trusted prices (or ``quotes``), not at the prices of
    the sweep that started it: its task may run minutes after that sweep (a retry, a redelivery,
    the recovery task), and a member is never closed out at a stale price nor after recovering.
    Close the plan's positions against the house account with ``trades_book``; the plan is made
    under the account's lock at these prices and checks before each step that the account is
    still below IM, so an account that recovered since its sweep trades nothing. Pay the fee
    (``CLEARING_LIQUIDATION_FEE_RATE`` of the closed notional, never more than the equity left) to
    the insurance fund, and have the fund cover any negative equity left once flat. While a price
    the account depends on is not trustworthy, nothing is traded: the liquidation stays in
    progress (``ops.liquidations_resume`` sends it again) with a ``liquidation_suspended`` alert.
    Idempotent."""
    liquidation = (
        Liquidation.objects.select_for_update()
        .select_related("sweep__parameter_set", "account", "call")
        .get(pk=liquidation_id)
    )
    if liquidation.status == LiquidationStatus.DONE:
        return liquidation
    venue = dict(MarginAccount.objects.filter(kind__in=VENUE_KINDS).values_list("kind", "pk"))
    house_id, fund_id = venue[AccountKind.HOUSE], venue[AccountKind.INSURANCE_FUND]
    accounts = margin_accounts_lock(account_ids=[liquidation.account_id, house_id, fund_id])
    quotes = quotes or quotes_current()
    form = parameters_form(parameter_set=liquidation.sweep.parameter_set)
    settlement = Asset.objects.get(symbol=settings.SETTLEMENT_ASSET)
    book = margin_book_build(
        rows=book_rows_fetch(account_ids=[liquidation.account_id]), parameters_form=form, quotes=quotes
    )
    # The parameters parsed once for this liquidation: the books after its trades reuse them.
    parsed = book.margin_input.parameters

    def book_now(account_id: int) -> LoadedBook:
        return margin_book_build(
            rows=book_rows_fetch(account_ids=[account_id]),
            parameters_form=form,
            quotes=quotes,
            parameters=parsed,
        )

    if unsafe := exposed_symbols(book, quotes.unsafe_for_liquidation())[0]:
        ops_alerts_raise(
            kind=SUSPENDED_ALERT,
            messages={
                str(liquidation.account_id): f"Liquidation {liquidation.pk} of account "
                f"{liquidation.account_id} waits: {', '.join(unsafe)} not trustworthy now (stale, "
                "unconfirmed or short of sources)."
            },
        )
        return liquidation
    if not compute_margin(book.margin_input).finite[0]:
        # Fail closed: nothing is traded on a figure that is not a number; the liquidation waits,
        # in progress, with a critical alert, until its prices give finite figures.
        ops_alerts_raise(
            kind=NOT_FINITE_ALERT,
            messages={
                str(liquidation.account_id): f"CRITICAL: liquidation {liquidation.pk} of account "
                f"{liquidation.account_id} not executed: its margin figures are not finite."
            },
        )
        return liquidation
    fee_rate = float(settings.CLEARING_LIQUIDATION_FEE_RATE)
    if int(book.margin_input.portfolios.mode[0]) == ISOLATED:
        return _isolated_execute(
            liquidation=liquidation, book=book, accounts=accounts, house_id=house_id, fund_id=fund_id,
            settlement=settlement, fee_rate=fee_rate, quotes=quotes, book_now=book_now,
        )  # fmt: skip
    steps = liquidation_steps(book=book, fee_rate=fee_rate)
    quantities = dict(
        Position.objects.filter(pk__in=[s.position_id for s in steps]).values_list("pk", "quantity")
    )
    instruments = Instrument.objects.in_bulk([s.instrument for s in steps], field_name="symbol")
    account, house = accounts[liquidation.account_id], accounts[house_id]
    fills = []
    notional = Decimal(0)
    for step in steps:
        quantity = quantities[step.position_id]
        price = max(decimal_from_float(step.price), Decimal("0.0000000001"))
        reference = f"liquidation-{liquidation.pk}-{step.position_id}"
        fills += [
            Fill(account, step.instrument, -quantity, price, f"{reference}-a"),
            Fill(house, step.instrument, quantity, price, f"{reference}-h"),
        ]
        notional += abs(quantity) * instruments[step.instrument].multiplier * price
    trades = trades_book(fills=fills) if fills else []
    after = book_now(account.pk)
    equity = float(compute_margin(after.margin_input).equity[0])
    fee = min(decimal_from_float(fee_rate * float(notional)), max(decimal_from_float(equity), Decimal(0)))
    changes = []
    if fee > 0:
        reference = f"liquidation {liquidation.pk} fee"
        changes += [
            BalanceChange(account.pk, settlement, MovementKind.LIQUIDATION_FEE, -fee, reference),
            BalanceChange(fund_id, settlement, MovementKind.LIQUIDATION_FEE, fee, reference),
        ]
    equity -= float(fee)
    # Once flat, a negative net balance (market value, before haircuts) is the deficit. The
    # balances are those after the trades (``after``): the fee is not yet applied to them.
    portfolios = after.margin_input.portfolios
    net = float(
        np.sum(book.margin_input.market.asset_price[portfolios.balance_asset] * portfolios.balance_amount)
    )
    net -= float(fee)
    flat = not Position.objects.filter(account=account).exclude(quantity=0).exists()
    deficit = decimal_from_float(-net) if flat and net < 0 else Decimal(0)
    if deficit > 0:
        reference = f"liquidation {liquidation.pk} deficit"
        changes += [
            BalanceChange(account.pk, settlement, MovementKind.DEFICIT_COVER, deficit, reference),
            BalanceChange(fund_id, settlement, MovementKind.DEFICIT_COVER, -deficit, reference),
        ]
    collateral_movements_apply(changes=changes, created_by=None)
    final = compute_margin(book_now(account.pk).margin_input)
    liquidation.plan = [step.__dict__ for step in steps]
    liquidation.status, liquidation.finished_at = LiquidationStatus.DONE, timezone.now()
    liquidation.closed_notional, liquidation.fee, liquidation.deficit_covered = notional, fee, deficit
    liquidation.equity_after, liquidation.initial_margin_after = (
        float(final.equity[0]),
        float(final.initial_margin[0]),
    )
    liquidation.save()
    liquidation.trades.set(trades)
    events_publish(
        events=[
            (
                account.pk,
                "liquidation.finished",
                {
                    "liquidation": liquidation.pk,
                    "positions_closed": len(steps),
                    "closed_notional": notional,
                    "fee": fee,
                    "deficit_covered": deficit,
                    "equity": liquidation.equity_after,
                    "initial_margin": liquidation.initial_margin_after,
                },
            )
        ]
    )
    ops_alerts_resolve(kind=SUSPENDED_ALERT, keys=[str(account.pk)])
    insurance_fund_after_liquidation(liquidation=liquidation, quotes=quotes)
    return liquidation


def _isolated_execute(
    *, liquidation, book, accounts, house_id, fund_id, settlement, fee_rate, quotes, book_now
) -> Liquidation:
    """Close the isolated account's positions the plan names, each on its own (module doc). The
    call is overdue when its deadline has passed: then positions in margin call are closed too."""
    plan = isolated_liquidation_plan(
        book.margin_input, fee_rate=fee_rate, overdue=liquidation.call.deadline <= timezone.now()
    )
    rows = book.rows
    account, house = accounts[liquidation.account_id], accounts[house_id]
    position_ids = [int(rows.position_ids[j]) for j in plan.positions.tolist()]
    quantities = dict(Position.objects.filter(pk__in=position_ids).values_list("pk", "quantity"))
    symbols = [book.instrument_symbols[int(rows.position_instrument[j])] for j in plan.positions.tolist()]
    instruments = Instrument.objects.in_bulk(symbols, field_name="symbol")
    fills, steps, changes = [], [], []
    notional = fee_total = deficit_total = Decimal(0)
    for k, (position_id, symbol) in enumerate(zip(position_ids, symbols, strict=True)):
        quantity = quantities[position_id]
        price = max(decimal_from_float(float(plan.price[k])), Decimal("0.0000000001"))
        reference = f"liquidation-{liquidation.pk}-{position_id}"
        fills += [
            Fill(account, symbol, -quantity, price, f"{reference}-a"),
            Fill(house, symbol, quantity, price, f"{reference}-h"),
        ]
        closed = abs(quantity) * instruments[symbol].multiplier * price
        notional += closed
        fee = _cents(float(plan.fee[k]))
        deficit = _cents(float(plan.deficit[k]))
        fee_total += fee
        deficit_total += deficit
        if fee > 0:
            note = f"liquidation {liquidation.pk} fee, position {position_id}"
            changes += [
                BalanceChange(account.pk, settlement, MovementKind.LIQUIDATION_FEE, -fee, note),
                BalanceChange(fund_id, settlement, MovementKind.LIQUIDATION_FEE, fee, note),
            ]
        if deficit > 0:
            note = f"liquidation {liquidation.pk} deficit, position {position_id}"
            changes += [
                BalanceChange(account.pk, settlement, MovementKind.DEFICIT_COVER, deficit, note),
                BalanceChange(fund_id, settlement, MovementKind.DEFICIT_COVER, -deficit, note),
            ]
        steps.append(
            {
                "position_id": position_id, "instrument": symbol, "quantity": float(quantity),
                "price": float(plan.price[k]), "notional": float(plan.notional[k]),
                "released": float(plan.released[k]), "status": STATUSES[int(plan.status[k])],
                "allocated_margin": float(plan.allocated[k]),
                "position_equity": float(plan.position_equity[k]),
                "fee": float(fee), "deficit": float(deficit),
                "free_collateral_after": float(plan.free_after[k]),
            }
        )  # fmt: skip
    # Closing releases each position's allocation (the booking's rule) and settles its value.
    trades = trades_book(fills=fills) if fills else []
    collateral_movements_apply(changes=changes, created_by=None)
    final = compute_margin(book_now(account.pk).margin_input)
    liquidation.plan = steps
    liquidation.status, liquidation.finished_at = LiquidationStatus.DONE, timezone.now()
    liquidation.closed_notional, liquidation.fee = notional, fee_total
    liquidation.deficit_covered = deficit_total
    liquidation.equity_after = float(final.equity[0])
    liquidation.initial_margin_after = float(final.initial_margin[0])
    liquidation.save()
    liquidation.trades.set(trades)
    events_publish(
        events=[
            (
                account.pk,
                "liquidation.finished",
                {
                    "liquidation": liquidation.pk,
                    "positions_closed": len(steps),
                    "positions": position_ids,
                    "closed_notional": notional,
                    "fee": fee_total,
                    "deficit_covered": deficit_total,
                    "equity": liquidation.equity_after,
                    "initial_margin": liquidation.initial_margin_after,
                    "free_collateral": float(final.free_collateral[0]),
                },
            )
        ]
    )
    ops_alerts_resolve(kind=SUSPENDED_ALERT, keys=[str(account.pk)])
    insurance_fund_after_liquidation(liquidation=liquidation, quotes=quotes)
    return liquidation


def _cents(value: float) -> Decimal:
    """A fee or deficit (float USD, ≥ 0) as whole cents, rounded half even; 0 for a NaN."""
    if not value > 0:
        return Decimal(0)
    return decimal_from_float(value).quantize(Decimal("0.01"))
