"""Isolated accounts in the sweeps (methodology v1.1 section 4a): a call names each position that is
not healthy, and a position in liquidation is closed on its own: its loss stops at its allocation,
the insurance fund meets the rest, and the account's other positions and free collateral are not
touched."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import AccountKind, Asset, CollateralBalance, MarginAccount, Member
from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from clearing.models import MarginAllocation, OutboxEvent, Position
from riskengine import whatif
from riskengine.core import compute_document
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import CallStatus, Liquidation, LiquidationStatus, MarginCall, MarginSnapshot
from riskengine.sweeps.selectors import margin_snapshot_document
from tests import factories
from tests.factories import moved


def usd(account) -> Decimal:
    row = CollateralBalance.objects.filter(account=account, asset__symbol="USD").first()
    return row.amount if row else Decimal(0)


@pytest.fixture
def book(quotes, monkeypatch):
    """An isolated account: 100,000 USD, long 1 BTC-PERP and short 20 ETH-PERP at the index, each
    allocated its IM by the booking; the rest of the collateral free."""
    monkeypatch.setattr(whatif, "quotes_current", lambda: quotes)
    account = factories.account_make(member=Member.objects.first(), code="T-ISO", mode="isolated")
    collateral_deposit(account=account, asset=Asset.objects.get(symbol="USD"), amount=Decimal(100_000))
    prices = quotes.underlying_prices
    trades_book(
        fills=[
            Fill(account, "BTC-PERP", Decimal(1), Decimal(repr(prices["BTC"]))),
            Fill(account, "ETH-PERP", Decimal(-20), Decimal(repr(prices["ETH"]))),
        ]
    )
    return account


def positions_of(account) -> dict[str, tuple[Decimal, Decimal]]:
    return {
        p.instrument.symbol: (p.quantity, p.allocated_margin)
        for p in Position.objects.filter(account=account).select_related("instrument")
    }


def test_a_short_in_liquidation_is_called_by_name_and_closed_alone_its_loss_stopping_at_its_allocation(
    book, quotes
):
    before = positions_of(book)
    btc_allocation, eth_allocation = before["BTC-PERP"][1], before["ETH-PERP"][1]
    assert btc_allocation > 0
    assert eth_allocation > 0
    # ETH 30 % up: the short loses 0.3 of its notional, three times its 10 % IM allocation; the
    # account's free collateral (about 80 % of its USD) would cover it many times over.
    up = moved(quotes, ETH=quotes.underlying_prices["ETH"] * 1.3)
    sweep = services.sweep_accounts_run(account_ids=[book.pk], cause="ETH squeeze", quotes=up)
    snapshot = MarginSnapshot.objects.get(sweep=sweep, account=book)
    assert snapshot.status == "liquidation"
    assert snapshot.free_collateral == pytest.approx(100_000 - float(btc_allocation + eth_allocation))

    call = MarginCall.objects.get(account=book)
    eth = Position.objects.get(account=book, instrument__symbol="ETH-PERP")
    assert call.status == CallStatus.ESCALATED
    ((named),) = call.positions
    assert (named["position"], named["instrument"], named["status"]) == (eth.pk, "ETH-PERP", "liquidation")
    assert Decimal(named["amount"]) == call.amount > 0
    opened = OutboxEvent.objects.get(group=f"account-{book.pk}", type="margin_call.opened")
    assert opened.payload["positions"] == call.positions

    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    fund_before, usd_before = usd(fund), usd(book)
    liquidation = Liquidation.objects.get(account=book)
    done = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=up)

    assert done.status == LiquidationStatus.DONE
    assert [step["position_id"] for step in done.plan] == [eth.pk]
    after = positions_of(book)
    assert after["BTC-PERP"] == before["BTC-PERP"]  # the long: untouched, quantity and allocation
    assert after["ETH-PERP"] == (Decimal(0), Decimal(0))  # the short: closed, its allocation released
    # The account lost exactly the short's allocation (to the cent: the deficit is rounded); the
    # fund paid the rest of the loss and took no fee from a position with nothing left.
    assert usd(book) == pytest.approx(usd_before - eth_allocation, abs=Decimal("0.01"))
    assert done.fee == 0
    assert done.deficit_covered > 0
    assert usd(fund) == fund_before - done.deficit_covered
    loss = Decimal(20) * Decimal(repr(up.underlying_prices["ETH"])) - Decimal(20) * Decimal(
        repr(quotes.underlying_prices["ETH"])
    )
    assert done.deficit_covered == pytest.approx(loss - eth_allocation, abs=Decimal("0.01"))
    # Free collateral: collateral less allocations, the same before and after (within the cent).
    free_after = usd(book) - sum(a for _, a in after.values())
    free_before = usd_before - btc_allocation - eth_allocation
    assert free_after == pytest.approx(free_before, abs=Decimal("0.01"))
    releases = MarginAllocation.objects.filter(account=book, kind="release").values_list("amount", flat=True)
    assert list(releases) == [-eth_allocation]

    services.sweep_accounts_run(account_ids=[book.pk], cause="after", quotes=up)
    assert MarginSnapshot.objects.filter(account=book).latest("id").status == "healthy"


def test_every_snapshot_of_an_isolated_account_replays_exactly_from_its_document(book, quotes):
    sweep = services.sweep_accounts_run(account_ids=[book.pk], cause="test", quotes=quotes)
    snapshot = MarginSnapshot.objects.select_related("sweep", "account", "parameter_set").get(
        sweep=sweep, account=book
    )
    document = margin_snapshot_document(snapshot=snapshot)
    (replayed,) = compute_document(document)

    allocations = {p["instrument"]: p.get("allocated_margin") for p in document["portfolios"][0]["positions"]}
    stored = {s: str(float(a)) for s, (_, a) in positions_of(book).items()}
    assert {s: float(a) for s, a in allocations.items()} == {s: float(a) for s, a in stored.items()}
    assert replayed["mode"] == "isolated"
    for name in ("equity", "initial_margin", "maintenance_margin", "free_collateral"):
        assert replayed[name] == getattr(snapshot, name), name
    assert replayed["status"] == snapshot.status
    assert [p["status"] for p in replayed["positions"]] == ["healthy", "healthy"]
