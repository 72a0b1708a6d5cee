"""The agents in the demo venue (a step of ``riskengine.demo.demo_venue_seed``), as alice sets them:

* ``ALPHA-FUNDING``, alice's member's funding account, with 2,000,000 USDC and 250,000 USD;
* a band policy on ``ALPHA-07``, the member's thin-margin book (a leveraged perpetual on barely
  more than its initial margin): search 1.4, target 1.8, release 2.6 in equity / MM. Its initial
  margin stands at 1.25 × MM (portfolio mode), so the policy pulls collateral in before a move
  reaches a margin call; the first sweep already brings it to its target;
* a hedge policy in ``propose`` mode on ``ALPHA-02``'s largest dollar delta (a directional book):
  back to a delta of zero through the perpetual, at most the whole delta per hedge, when it strays
  by more than a quarter of today's delta, at most every five minutes. Each proposal shows the
  exact trade and its margin effect on the account page.

Idempotent: rows are found before they are made.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal

from django.db import transaction

from accounts.models import AccountKind, Asset, MarginAccount, MarginMode, Member, User
from accounts.services import collateral_deposit
from agents.models import BandPolicy, HedgeMode, HedgePolicy
from agents.services import band_policy_set, hedge_policy_create
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument, InstrumentKind
from riskengine.core import DocumentError, compute_margin
from riskengine.loading import margin_book_load
from riskengine.selectors import parameter_set_active

MEMBER = "ALPHA"
TRADER = "alice"
FUNDING_ACCOUNT = "ALPHA-FUNDING"
FUNDING_SEED = (("USDC", Decimal(2_000_000)), ("USD", Decimal(250_000)))
BAND_ACCOUNT = "ALPHA-07"
BAND_LEVELS = (Decimal("1.4"), Decimal("1.8"), Decimal("2.6"))
BAND_ASSETS = ["USDC", "USD"]
HEDGE_ACCOUNT = "ALPHA-02"


def agents_demo_seed(*, log: Callable[[str], None]) -> None:
    member = Member.objects.filter(code=MEMBER).first()
    alice = User.objects.filter(username=TRADER).first()
    if member is None or alice is None:
        return
    with transaction.atomic():
        funding, created = MarginAccount.objects.get_or_create(
            code=FUNDING_ACCOUNT,
            defaults={
                "member": member,
                "kind": AccountKind.FUNDING,
                "mode": MarginMode.CROSS,
                "name": f"{member.name} funding",
            },
        )
        if created:
            for symbol, amount in FUNDING_SEED:
                collateral_deposit(
                    account=funding,
                    asset=Asset.objects.get(symbol=symbol),
                    amount=amount,
                    reference="demo seed",
                )
    band_account = MarginAccount.objects.filter(code=BAND_ACCOUNT).first()
    if band_account is not None and not BandPolicy.objects.filter(account=band_account).exists():
        search, target, release = BAND_LEVELS
        band_policy_set(
            account=band_account, funding_account=funding, search_level=search, target_level=target,
            release_level=release, assets=BAND_ASSETS, min_interval_seconds=30, user=alice,
        )  # fmt: skip
        log(f"{BAND_ACCOUNT}: kept between equity / MM {search} and {release} from {FUNDING_ACCOUNT}.")
    hedge_account = MarginAccount.objects.filter(code=HEDGE_ACCOUNT).first()
    if hedge_account is not None and not HedgePolicy.objects.filter(account=hedge_account).exists():
        _hedge_policy_seed(account=hedge_account, alice=alice, log=log)


def _hedge_policy_seed(*, account: MarginAccount, alice: User, log: Callable[[str], None]) -> None:
    # Read as the seed's own steps read (``riskengine.demo.demo_cushions_ensure``): the active set
    # and the oracle's quotes fresh, leaving no per-process cache behind.
    quotes = market_quotes_current()
    try:
        book = margin_book_load(
            parameters_form=parameter_set_active().to_parameters_form(),
            quotes=quotes,
            account_ids=[account.pk],
        )
    except DocumentError as error:
        log(f"{account.code}: no hedge policy ({error})")
        return
    now = compute_margin(book.margin_input).to_dict(0)
    exposures = [row for row in now["by_underlying"] if row["delta_usd"]]
    if not exposures:
        return
    largest = max(exposures, key=lambda row: abs(row["delta_usd"]))
    symbol, delta = largest["underlying"], abs(largest["delta_usd"])
    perpetual = Instrument.objects.get(underlying__symbol=symbol, kind=InstrumentKind.PERPETUAL)
    price = quotes.underlying_prices[symbol]
    hedge_policy_create(
        account=account,
        underlying=symbol,
        instrument=perpetual,
        target_delta_usd=0,
        threshold_usd=Decimal(int(delta / 4)),
        max_quantity=Decimal(repr(delta / price)).quantize(Decimal("0.001"), rounding=ROUND_DOWN),
        min_interval_seconds=300,
        mode=HedgeMode.PROPOSE,
        user=alice,
    )
    log(
        f"{account.code}: a hedge policy proposes trades of {perpetual.symbol} back to a {symbol} delta of 0."
    )
