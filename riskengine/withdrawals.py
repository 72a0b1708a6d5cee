"""Collateral withdrawals that keep the account margined: equity after the withdrawal ≥ IM.

The check and the withdrawal happen under the account lock (``margin_accounts_lock``, taken by
``collateral_withdraw``) in one transaction: the withdrawal is written, the account's margin is
computed from the database as it now stands inside the transaction, and the whole thing rolls
back if equity fell below the initial margin. Two concurrent withdrawals therefore queue on the
lock and the second one is judged on the balance the first one left: together they can never
breach the margin, whatever their interleaving.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Asset, CollateralMovement, MarginAccount, User
from accounts.services import collateral_withdraw
from riskengine import whatif
from riskengine.core import compute_margin
from riskengine.core.errors import DocumentError
from riskengine.loading import margin_book_load
from riskengine.quotes import MarketQuotes
from riskengine.selectors import NoActiveParameterSet, parameter_set_active


@transaction.atomic
def collateral_withdraw_checked(
    *,
    account: MarginAccount,
    asset: Asset,
    amount: Decimal,
    created_by: User | None = None,
    reference: str = "",
    quotes: MarketQuotes | None = None,
) -> CollateralMovement:
    """Withdraw ``amount`` (> 0) of ``asset`` unless the account's equity would end below its
    initial margin; refused with a ValidationError naming ``amount`` (nothing written)."""
    movement = collateral_withdraw(
        account=account, asset=asset, amount=amount, created_by=created_by, reference=reference
    )
    try:
        form = parameter_set_active().to_parameters_form()
        book = margin_book_load(
            parameters_form=form, quotes=quotes or whatif.quotes_current(), account_ids=[account.pk]
        )
    except (DocumentError, NoActiveParameterSet) as error:
        # Without a margin figure nobody can tell whether the withdrawal is safe: refuse it.
        raise ValidationError(
            {"amount": f"The account's margin cannot be computed now ({error}); try again later."}
        ) from None
    result = compute_margin(book.margin_input)
    equity, initial = float(result.equity[0]), float(result.initial_margin[0])
    if equity < initial:
        raise ValidationError(
            {
                "amount": (
                    f"Refused: after withdrawing {-movement.amount:f} {asset.symbol} the "
                    f"account's equity would be {equity:,.2f} USD, below its initial margin of "
                    f"{initial:,.2f} USD. At most the excess over the initial margin can be withdrawn."
                )
            }
        )
    return movement
