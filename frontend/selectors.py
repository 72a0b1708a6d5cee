"""Reads of the member web app. Every account read starts from ``margin_accounts_visible``."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Prefetch, QuerySet

from accounts.models import MarginAccount, User
from accounts.selectors import margin_accounts_visible
from clearing.models import Instrument, InstrumentKind
from clearing.validation import decimal_from_float
from frontend.models import BandState, TargetBand
from riskengine.core import OPTION, compute_margin
from riskengine.core.errors import DocumentError
from riskengine.loading import margin_book_load
from riskengine.reference import quotes_current, reference_current
from riskengine.selectors import NoActiveParameterSet, parameter_set_active
from riskengine.sweeps.foresight import account_foresight
from riskengine.sweeps.models import AccountForesight, AccountMargin, CallStatus, MarginCall, MarginSnapshot
from riskengine.whatif import margin_what_if

HISTORY_POINTS = 120
HEDGE_STEP = Decimal("0.0001")


@dataclass
class AccountSummary:
    """One account as the overview and the detail header show it (from the latest sweep)."""

    account: MarginAccount
    margin: AccountMargin | None
    band: TargetBand | None
    open_call: MarginCall | None
    foresight: AccountForesight | None = None  # as graded after the last full sweeps

    @property
    def excess(self) -> float | None:
        return None if self.margin is None else self.margin.equity - self.margin.initial_margin

    @property
    def ratio(self) -> float | None:
        if self.margin is None or self.margin.maintenance_margin <= 0:
            return None
        return self.margin.equity / self.margin.maintenance_margin

    @property
    def status(self) -> str:
        return "unswept" if self.margin is None else self.margin.status

    @property
    def band_state(self) -> str | None:
        if self.band is None or self.margin is None:
            return None
        return self.band.state_for(self.ratio)

    @property
    def band_breached(self) -> bool:
        return self.band_state not in (None, BandState.INSIDE)


def _summaries(accounts: QuerySet[MarginAccount]) -> list[AccountSummary]:
    accounts = list(
        accounts.select_related("margin", "target_band", "foresight").prefetch_related(
            Prefetch(
                "margin_calls",
                queryset=MarginCall.objects.filter(status=CallStatus.OPEN),
                to_attr="open_calls",
            )
        )
    )

    def related(account, name):
        try:
            return getattr(account, name)
        except ObjectDoesNotExist:
            return None

    return [
        AccountSummary(
            account=account,
            margin=related(account, "margin"),
            band=related(account, "target_band"),
            open_call=account.open_calls[0] if account.open_calls else None,
            foresight=related(account, "foresight"),
        )
        for account in accounts
    ]


def account_summaries(*, user: User) -> list[AccountSummary]:
    """The overview: every account ``user`` may see with its latest margin, band and open call, in
    four queries whatever the number of accounts."""
    return _summaries(margin_accounts_visible(user=user).order_by("code"))


def account_summary(*, account: MarginAccount) -> AccountSummary:
    return _summaries(MarginAccount.objects.filter(pk=account.pk))[0]


def margin_history(*, account: MarginAccount, points: int = HISTORY_POINTS) -> list[MarginSnapshot]:
    """The account's last ``points`` snapshots, oldest first (only the charted columns)."""
    rows = (
        MarginSnapshot.objects.filter(account=account)
        .order_by("-read_at", "-id")
        .only("read_at", "equity", "initial_margin", "maintenance_margin")[:points]
    )
    return list(reversed(rows))


def margin_calls_recent(*, account: MarginAccount, limit: int = 10) -> list[MarginCall]:
    return list(MarginCall.objects.filter(account=account).order_by("-id")[:limit])


@dataclass
class AccountNow:
    """The account under the engine at the oracle's current prices: the engine's result dict
    (spec section 5) plus collateral valued after haircuts, asset by asset."""

    result: dict
    collateral: list[dict] = field(default_factory=list)
    # The result's positions, each with its database ``id`` and, for an isolated linear position,
    # its ``liquidation_price``: the index at which its equity would fall to its maintenance margin.
    positions: list[dict] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)


def account_now(*, account: MarginAccount) -> AccountNow:
    """Raises ``DocumentError`` when the account cannot be margined now (no price, no vol) and
    ``NoActiveParameterSet`` when no parameter set is active."""
    quotes = quotes_current()
    form = reference_current().parameters_form
    book = margin_book_load(parameters_form=form, quotes=quotes, account_ids=[account.pk])
    result = compute_margin(book.margin_input)
    assets = book.margin_input.parameters.assets
    linked = {symbol: entry.get("underlying") for symbol, entry in form["assets"].items()}
    amounts: dict[str, float] = {}
    rows = book.rows
    for b in range(rows.balance_asset.size):
        symbol = book.asset_symbols[int(rows.balance_asset[b])]
        amounts[symbol] = amounts.get(symbol, 0.0) + float(rows.balance_amount[b])
    collateral = []
    for a, symbol in enumerate(assets):
        if symbol not in amounts or amounts[symbol] == 0:
            continue
        underlying = linked.get(symbol)
        price = (
            quotes.underlying_prices.get(underlying) if underlying else quotes.asset_prices.get(symbol, 1.0)
        )
        market = amounts[symbol] * float(price or 0.0)
        value = float(result.collateral_by_asset[0, a])
        collateral.append(
            {
                "asset": symbol,
                "amount": amounts[symbol],
                "price": price,
                "market_value": market,
                "value": value,
                "haircut": (1 - value / market) if market > 0 else None,
            }
        )
    figures = result.to_dict(0)
    positions = []
    for j, entry in enumerate(figures["positions"]):
        position = dict(entry, id=int(rows.position_ids[j]), liquidation_price=None)
        market, i = book.margin_input.market, book.margin_input.portfolios.position_instrument[j]
        if figures["mode"] == "isolated" and market.kind[i] != OPTION:
            position["liquidation_price"] = isolated_liquidation_price(
                units=float(rows.position_quantity[j]) * float(market.multiplier[i]),
                entry_price=float(rows.position_entry[j]),
                allocated=float(rows.position_allocated[j]),
                maintenance_margin=entry["maintenance_margin"],
                price=entry["price"],
            )
        positions.append(position)
    return AccountNow(
        result=figures,
        collateral=collateral,
        positions=positions,
        prices={**quotes.underlying_prices, **quotes.asset_prices},
        statuses=dict(quotes.statuses),
    )


def isolated_liquidation_price(
    *, units: float, entry_price: float, allocated: float, maintenance_margin: float, price: float
) -> float | None:
    """The index price ``P`` at which an isolated linear position of ``units = q·m`` (signed)
    has its equity ``a + q·m·(P − entry)`` equal to its maintenance margin ``|q·m|·P·mmf``
    (spec section 4a), ``mmf`` read off its maintenance margin now (``MM / |q·m|·price``). None
    when no positive price reaches it (a long whose allocation covers its whole entry)."""
    if not units or not price:
        return None
    mmf = maintenance_margin / (abs(units) * price)
    denominator = units - abs(units) * mmf
    if not denominator:
        return None
    level = (units * entry_price - allocated) / denominator
    return level if level > 0 else None


def hedge_suggestions(*, account: MarginAccount, now: AccountNow) -> list[dict]:
    """Per underlying with a dollar delta: the perpetual quantity that brings it to zero
    (−Δ$ / (index × multiplier)) and the account's margin after that trade (``margin_what_if``)."""
    deltas = {row["underlying"]: row["delta_usd"] for row in now.result["by_underlying"] if row["delta_usd"]}
    if not deltas:
        return []
    perpetuals = {
        instrument.underlying.symbol: instrument
        for instrument in Instrument.objects.filter(
            kind=InstrumentKind.PERPETUAL, is_active=True, underlying__symbol__in=list(deltas)
        )
        .select_related("underlying")
        .order_by("-pk")
    }
    suggestions = []
    for symbol, delta in sorted(deltas.items()):
        perpetual = perpetuals.get(symbol)
        price = now.prices.get(symbol)
        suggestion = {"underlying": symbol, "delta_usd": delta, "instrument": perpetual}
        if perpetual is None or not price:
            suggestion["error"] = f"No perpetual on {symbol} to hedge with."
            suggestions.append(suggestion)
            continue
        quantity = (decimal_from_float(-delta) / (decimal_from_float(price) * perpetual.multiplier)).quantize(
            HEDGE_STEP, rounding=ROUND_HALF_EVEN
        )
        suggestion["quantity"] = quantity
        if quantity == 0:
            suggestion["error"] = "Delta below the smallest tradable quantity."
        else:
            try:
                outcome = margin_what_if(account=account, trades=[(perpetual, quantity, None)])
            except (ValidationError, DocumentError) as error:
                suggestion["error"] = str(error)
            else:
                suggestion["after"] = outcome.after
        suggestions.append(suggestion)
    return suggestions


def foresight_view(*, account: MarginAccount) -> dict | None:
    """The account page's foresight: the API's figures (``account_foresight``: stored, else
    computed now), its gauge rows ``(underlying, down σ, up σ)`` (``None``: no move of the range
    liquidates; NaN: no volatility forecast) and the active set's ladder thresholds."""
    foresight = account_foresight(account=account)
    if foresight is None:
        return None

    def sigmas(side: dict | None) -> float | None:
        if side is None:
            return None
        return float("nan") if side["sigmas"] is None else side["sigmas"]

    try:
        thresholds = parameter_set_active().ladder_thresholds()
    except NoActiveParameterSet:
        thresholds = None
    return {
        **foresight,
        "gauge": [
            (row["underlying"], sigmas(row["down"]), sigmas(row["up"])) for row in foresight["by_underlying"]
        ],
        "thresholds": thresholds,
    }
