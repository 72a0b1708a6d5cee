"""A believable demo venue: reference data, members, users and books (``manage.py seed_demo``).

Idempotent: every row is found by its natural key before it is created, and an account's book is
booked only when the account has no trade yet, so running the seed twice duplicates nothing.
Prices come from the last day of the real history shipped with the repository.
"""

from __future__ import annotations

import calendar
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import AccountKind, Asset, MarginAccount, MarginMode, Member, Role, User
from accounts.services import collateral_deposit, user_create
from accounts.trading import Fill, trades_book
from clearing.marketdata.demo import UNDERLYINGS, marketdata_demo_seed, spot_prices
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument, InstrumentKind, OptionRight, Trade, Underlying
from riskengine.allocations import position_margin_move
from riskengine.core import compute_margin
from riskengine.core.black76 import black76_price
from riskengine.loading import margin_book_load
from riskengine.models import ParameterSet
from riskengine.reference import quotes_current
from riskengine.selectors import parameter_set_active
from riskengine.services import parameter_set_bootstrap
from riskengine.validation.models import ValidationKind, ValidationRun
from riskengine.validation.services import validation_runs_start
from riskengine.withdrawals import PricesUntrusted

ASSETS = {
    # symbol: (name, linked underlying, decimals)
    "USD": ("US dollar (settlement)", None, 2),
    "USDC": ("USD Coin", None, 6),
    "USDT": ("Tether USD", None, 6),
    "DAI": ("Dai", None, 6),
    "BTC": ("Bitcoin", "BTC", 8),
    "ETH": ("Ether", "ETH", 8),
    "SOL": ("Solana", "SOL", 8),
}
VENUE_MEMBER = ("VENUE", "The clearing venue")
VENUE_ACCOUNTS = (("VENUE-HOUSE", AccountKind.HOUSE), ("VENUE-INSURANCE", AccountKind.INSURANCE_FUND))
INSURANCE_FUND_SEED = Decimal(5_000_000)
MEMBERS = {
    "ALPHA": "Alpha Capital Markets",
    "BOREAL": "Borealis Trading",
    "CIRRUS": "Cirrus Derivatives",
    "DELTA": "Delta Neutral Partners",
    "EQUINOX": "Equinox Liquidity",
    "FJORD": "Fjord Asset Management",
}
ACCOUNTS_PER_MEMBER = 9
STRIKE_LADDER = (
    Decimal("0.7"),
    Decimal("0.8"),
    Decimal("0.9"),
    Decimal(1),
    Decimal("1.1"),
    Decimal("1.2"),
    Decimal("1.3"),
)
EXPIRY_HOUR = time(8, 0, tzinfo=UTC)


def _underlying_form(psr: float) -> dict:
    return {
        "psr": psr, "vol_up": 0.5, "vol_down": 0.25,
        "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20_000_000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip


def _asset_form(underlying: str | None, addon: float, brackets: list[tuple[float | None, float]]) -> dict:
    return {
        "underlying": underlying,
        "liability_addon": addon,
        "haircuts": [{"up_to": up_to, "haircut": haircut} for up_to, haircut in brackets],
    }


# The venue's first parameter set: the methodology's example values for BTC and ETH, a wider scan
# for SOL; stablecoins with small haircuts that widen with size, crypto with larger ones.
DEMO_PARAMETERS = {
    "version": "bootstrap-1",
    "mm_ratio": 0.8, "offset_cap": 0.8, "lookahead_days": 1, "rate": 0.0, "price_steps": 4, "min_vol": 0.01,
    "vol_term": {"pivot_days": 30, "short_power": 0.30, "long_power": 0.13},
    "standard": {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075},
    "underlyings": {
        "BTC": _underlying_form(0.15), "ETH": _underlying_form(0.18), "SOL": _underlying_form(0.25),
    },
    "correlation": {
        "underlyings": ["BTC", "ETH", "SOL"],
        "matrix": [[1.0, 0.8, 0.7], [0.8, 1.0, 0.75], [0.7, 0.75, 1.0]],
    },
    "assets": {
        "USD": _asset_form(None, 0.05, [(None, 0.0)]),
        "USDC": _asset_form(None, 0.05, [(10_000_000, 0.0), (None, 0.02)]),
        "USDT": _asset_form(None, 0.05, [(10_000_000, 0.01), (None, 0.03)]),
        "DAI": _asset_form(None, 0.05, [(5_000_000, 0.02), (None, 0.05)]),
        "BTC": _asset_form("BTC", 0.10, [(1_000_000, 0.05), (None, 0.10)]),
        "ETH": _asset_form("ETH", 0.10, [(1_000_000, 0.07), (None, 0.12)]),
        "SOL": _asset_form("SOL", 0.15, [(500_000, 0.15), (None, 0.25)]),
    },
}  # fmt: skip


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    member: str | None

    @property
    def password(self) -> str:
        # Fixed and printed: these accounts exist only in the demo venue.
        return f"{self.username}-demo-2026"


DEMO_USERS = (
    DemoUser("alice", Role.TRADER, "ALPHA"),
    DemoUser("bob", Role.TRADER, "BOREAL"),
    DemoUser("carol", Role.VIEWER, "ALPHA"),
    DemoUser("ops", Role.OPS, None),
    DemoUser("risk", Role.RISK_APPROVER, None),
    # Two security admins: user and role administration, where one proposes and the other approves.
    DemoUser("security", Role.SECURITY_ADMIN, None),
    DemoUser("security2", Role.SECURITY_ADMIN, None),
    DemoUser("feed", Role.PRICE_SOURCE, None),
    DemoUser("venue", Role.VENUE, None),
    DemoUser("custody", Role.CUSTODIAN, None),
)


def last_friday(year: int, month: int) -> date:
    last_day = date(year, month, calendar.monthrange(year, month)[1])
    return last_day - timedelta(days=(last_day.weekday() - calendar.FRIDAY) % 7)


def demo_expiries(*, today: date) -> tuple[list[datetime], list[datetime]]:
    """(future expiries, option expiries): the next three quarterlies, and the next two monthlies
    plus the next two quarterlies, each the last Friday of its month at 08:00 UTC, at least a week out."""
    months = []
    year, month = today.year, today.month
    for _ in range(15):
        expiry = last_friday(year, month)
        if expiry - today >= timedelta(days=7):
            months.append(datetime.combine(expiry, EXPIRY_HOUR))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    quarterlies = [e for e in months if e.month in (3, 6, 9, 12)]
    futures = quarterlies[:3]
    options = sorted(set(months[:2]) | set(quarterlies[:2]))
    return futures, options


def expiry_code(expiry: datetime) -> str:
    return expiry.strftime("%d%b%y").upper()


def reference_data_seed(*, today: date) -> dict[str, list[Instrument]]:
    """Underlyings, assets and instruments; returns the instruments by underlying."""
    spots = spot_prices()
    futures, option_expiries = demo_expiries(today=today)
    by_underlying: dict[str, list[Instrument]] = {}
    for symbol, (name, step, _vol) in UNDERLYINGS.items():
        underlying, _ = Underlying.objects.get_or_create(symbol=symbol, defaults={"name": name})
        wanted = [Instrument(symbol=f"{symbol}-PERP", kind=InstrumentKind.PERPETUAL, underlying=underlying)]
        wanted += [
            Instrument(
                symbol=f"{symbol}-{expiry_code(e)}",
                kind=InstrumentKind.FUTURE,
                underlying=underlying,
                expiry=e,
            )
            for e in futures
        ]
        for expiry in option_expiries:
            for ratio in STRIKE_LADDER:
                strike = max(step, (spots[symbol] * ratio / step).quantize(Decimal(1)) * step)
                for right, letter in ((OptionRight.CALL, "C"), (OptionRight.PUT, "P")):
                    wanted.append(
                        Instrument(
                            symbol=f"{symbol}-{expiry_code(expiry)}-{strike.normalize():f}-{letter}",
                            kind=InstrumentKind.OPTION,
                            underlying=underlying,
                            expiry=expiry,
                            strike=strike,
                            right=right,
                        )
                    )
        Instrument.objects.bulk_create(wanted, ignore_conflicts=True)
        by_underlying[symbol] = list(
            Instrument.objects.filter(symbol__in=[i.symbol for i in wanted]).select_related("underlying")
        )
    for symbol, (name, linked, decimals) in ASSETS.items():
        Asset.objects.get_or_create(
            symbol=symbol,
            defaults={
                "name": name,
                "decimals": decimals,
                "underlying": Underlying.objects.get(symbol=linked) if linked else None,
            },
        )
    return by_underlying


def option_mark(instrument: Instrument, spot: Decimal, now: datetime) -> Decimal:
    """A demo trade price for an option: Black-76 at the underlying's demo vol, 2 significant decimals."""
    years = (instrument.expiry - now).total_seconds() / (365 * 86400)
    vol = UNDERLYINGS[instrument.underlying.symbol][2]
    value = float(
        black76_price(float(spot), float(instrument.strike), vol, years, instrument.right == OptionRight.CALL)
    )
    return max(Decimal("0.01"), Decimal(repr(value)).quantize(Decimal("0.01")))


# --- Books -------------------------------------------------------------------------------------
# Each profile returns (fills as (instrument, quantity), deposits as (asset, amount)) for one
# account, sized in USD notional around ``size``. The mix gives the sweep and the what-if pages
# something to show: hedges that portfolio margining rewards, naked direction, short volatility.

Book = tuple[list[tuple[Instrument, Decimal]], list[tuple[str, Decimal]]]


@dataclass(frozen=True)
class Market:
    instruments: dict[str, list[Instrument]]
    spots: dict[str, Decimal]

    def perp(self, underlying: str) -> Instrument:
        return next(i for i in self.instruments[underlying] if i.kind == InstrumentKind.PERPETUAL)

    def futures(self, underlying: str) -> list[Instrument]:
        return sorted(
            (i for i in self.instruments[underlying] if i.kind == InstrumentKind.FUTURE),
            key=lambda i: i.expiry,
        )

    def options(self, underlying: str, right: str, *, otm: bool) -> list[Instrument]:
        spot = self.spots[underlying]
        chosen = [
            i
            for i in self.instruments[underlying]
            if i.kind == InstrumentKind.OPTION
            and i.right == right
            and ((i.strike > spot) if right == OptionRight.CALL else (i.strike < spot)) == otm
        ]
        return sorted(chosen, key=lambda i: (i.expiry, i.strike))

    def units(self, underlying: str, usd: float) -> Decimal:
        return (Decimal(repr(usd)) / self.spots[underlying]).quantize(Decimal("0.001"))


def _hedged_pair(market: Market, rng: random.Random, size: float) -> Book:
    # Long BTC against short ETH (or SOL): correlated legs that portfolio margining offsets.
    other = rng.choice(["ETH", "SOL"])
    return (
        [
            (market.perp("BTC"), market.units("BTC", size)),
            (market.perp(other), -market.units(other, size * 0.9)),
        ],
        [("USDC", Decimal(int(size * 0.15)))],
    )


def _calendar_basis(market: Market, rng: random.Random, size: float) -> Book:
    underlying = rng.choice(list(UNDERLYINGS))
    future = rng.choice(market.futures(underlying))
    units = market.units(underlying, size)
    return ([(market.perp(underlying), units), (future, -units)], [("USDT", Decimal(int(size * 0.05)))])


def _directional(market: Market, rng: random.Random, size: float) -> Book:
    underlying = rng.choice(list(UNDERLYINGS))
    direction = rng.choice([1, -1])
    fills = [(market.perp(underlying), direction * market.units(underlying, size))]
    if rng.random() < 0.5:
        fills.append(
            (rng.choice(market.futures(underlying)), direction * market.units(underlying, size * 0.4))
        )
    collateral = "BTC" if underlying == "BTC" and direction < 0 else "USDC"
    amount = market.units("BTC", size * 0.22) if collateral == "BTC" else Decimal(int(size * 0.22))
    return fills, [(collateral, amount)]


def _short_strangle(market: Market, rng: random.Random, size: float) -> Book:
    underlying = rng.choice(list(UNDERLYINGS))
    calls = market.options(underlying, OptionRight.CALL, otm=True)
    puts = market.options(underlying, OptionRight.PUT, otm=True)
    units = market.units(underlying, size * 0.5)
    return (
        [(rng.choice(calls), -units), (rng.choice(puts), -units)],
        [("USDC", Decimal(int(size * 0.2))), ("DAI", Decimal(int(size * 0.05)))],
    )


def _covered_calls(market: Market, rng: random.Random, size: float) -> Book:
    underlying = rng.choice(["BTC", "ETH"])
    units = market.units(underlying, size)
    call = rng.choice(market.options(underlying, OptionRight.CALL, otm=True))
    return ([(call, -units)], [(underlying, units), ("USDC", Decimal(int(size * 0.03)))])


def _delta_hedged_long_vol(market: Market, rng: random.Random, size: float) -> Book:
    underlying = rng.choice(list(UNDERLYINGS))
    units = market.units(underlying, size * 0.5)
    call = rng.choice(market.options(underlying, OptionRight.CALL, otm=True))
    put = rng.choice(market.options(underlying, OptionRight.PUT, otm=True))
    return (
        [
            (call, units),
            (put, units),
            (market.perp(underlying), -(units * Decimal("0.1")).quantize(Decimal("0.001"))),
        ],
        [("USDC", Decimal(int(size * 0.12)))],
    )


def _multi_asset(market: Market, rng: random.Random, size: float) -> Book:
    fills = [
        (market.perp(underlying), rng.choice([1, -1]) * market.units(underlying, size / 3))
        for underlying in UNDERLYINGS
    ]
    put = rng.choice(market.options("BTC", OptionRight.PUT, otm=True))
    fills.append((put, -market.units("BTC", size * 0.2)))
    return fills, [("USDC", Decimal(int(size * 0.1))), ("ETH", market.units("ETH", size * 0.05))]


def _thin_margin(market: Market, rng: random.Random, size: float) -> Book:
    # A leveraged directional book on barely enough collateral: the first accounts to get a call
    # (topped up to just above its initial margin: THIN_CUSHION).
    underlying = rng.choice(["ETH", "SOL"])
    return (
        [(market.perp(underlying), market.units(underlying, size))],
        [("USDC", Decimal(int(size * 0.11)))],
    )


# Every book starts healthy at the seeded prices, so that the demo's calls and liquidations come
# from the replayed price moves, not from the seed: equity at least CUSHION × its initial margin,
# the thin books THIN_CUSHION (a move of a few percent against them is a call, a larger one a
# liquidation). The profiles' own deposits are sized by notional; the engine sizes the top-up.
CUSHION = 1.25
THIN_CUSHION = 1.05
CUSHION_REFERENCE = "demo seed: margin cushion"

PROFILES: tuple[Callable[[Market, random.Random, float], Book], ...] = (
    _hedged_pair,
    _calendar_basis,
    _directional,
    _short_strangle,
    _covered_calls,
    _delta_hedged_long_vol,
    _multi_asset,
    _thin_margin,
    _directional,
)


# What the apps above this one add to the demo (the automated agents: a funding account and
# policies), registered in their ``AppConfig.ready()``: each step is called with ``log`` once the
# venue is seeded, and is idempotent like the seed.
DEMO_SEED_STEPS: list[Callable[..., None]] = []


def demo_seed_step_register(step: Callable[..., None]) -> None:
    if step not in DEMO_SEED_STEPS:
        DEMO_SEED_STEPS.append(step)


def demo_venue_seed(*, today: date | None = None, log: Callable[[str], None] = print) -> None:
    """Create or complete the demo venue; prints the demo users and their passwords."""
    now = timezone.now()
    today = today or now.date()
    with transaction.atomic():
        instruments = reference_data_seed(today=today)
        if not ParameterSet.objects.exists():
            parameter_set_bootstrap(form=DEMO_PARAMETERS, reason="Demo venue bootstrap")
        members = {
            code: Member.objects.get_or_create(code=code, defaults={"name": name})[0]
            for code, name in MEMBERS.items()
        }
        for demo in DEMO_USERS:
            if not User.objects.filter(username=demo.username).exists():
                user_create(
                    username=demo.username,
                    password=demo.password,
                    role=demo.role,
                    member=members[demo.member] if demo.member else None,
                )
    with transaction.atomic():
        venue_member, _ = Member.objects.get_or_create(
            code=VENUE_MEMBER[0], defaults={"name": VENUE_MEMBER[1]}
        )
        for code, kind in VENUE_ACCOUNTS:
            account, created = MarginAccount.objects.get_or_create(
                kind=kind, defaults={"code": code, "member": venue_member, "mode": MarginMode.CROSS}
            )
            if created and kind == AccountKind.INSURANCE_FUND:
                collateral_deposit(
                    account=account,
                    asset=Asset.objects.get(symbol=settings.SETTLEMENT_ASSET),
                    amount=INSURANCE_FUND_SEED,
                    reference="initial insurance fund",
                )
    venue_user = User.objects.get(username="venue")
    market = Market(instruments=instruments, spots=spot_prices())
    assets = {asset.symbol: asset for asset in Asset.objects.all()}
    cushions: dict[int, float] = {}
    for member_index, (code, member) in enumerate(members.items()):
        for number in range(1, ACCOUNTS_PER_MEMBER + 1):
            account_code = f"{code}-{number:02d}"
            with transaction.atomic():
                account, _ = MarginAccount.objects.get_or_create(
                    code=account_code,
                    defaults={
                        "member": member,
                        "name": f"{member.name} book {number}",
                        "mode": MarginMode.CROSS if number == ACCOUNTS_PER_MEMBER else MarginMode.PORTFOLIO,
                    },
                )
                if Trade.objects.filter(account=account).exists():
                    continue
                rng = random.Random(f"{account_code}")
                profile = PROFILES[(member_index + number) % len(PROFILES)]
                fills, deposits = profile(market, rng, rng.uniform(50_000, 2_000_000))
                for symbol, amount in deposits:
                    collateral_deposit(
                        account=account, asset=assets[symbol], amount=amount, reference="demo seed"
                    )
                trades_book(
                    fills=[
                        Fill(
                            account=account,
                            instrument=instrument,
                            quantity=quantity,
                            price=option_mark(instrument, market.spots[instrument.underlying.symbol], now)
                            if instrument.kind == InstrumentKind.OPTION
                            else market.spots[instrument.underlying.symbol],
                        )
                        for instrument, quantity in fills
                        if quantity
                    ],
                    booked_by=venue_user,
                )
                cushions[account.pk] = THIN_CUSHION if profile is _thin_margin else CUSHION
    # The oracle: real history as index history, demo price sources, current prices and IV marks.
    marketdata_demo_seed(log=log)
    topped_up = demo_cushions_ensure(cushions=cushions)
    isolated_demo_account_seed(member=members["ALPHA"], venue_user=venue_user, log=log)
    for step in DEMO_SEED_STEPS:
        step(log=log)
    validation_demo_start(log=log)
    log(
        f"Demo venue ready: {MarginAccount.objects.count()} accounts ({len(cushions)} books booked this "
        f"run, {topped_up} topped up to start healthy), "
        f"{Instrument.objects.count()} instruments, settlement asset {settings.SETTLEMENT_ASSET}."
    )
    log("Demo users (username / password / role):")
    for demo in DEMO_USERS:
        of_member = f" of {demo.member}" if demo.member else ""
        log(f"  {demo.username:<9} {demo.password:<23} {demo.role}{of_member}")


def validation_demo_start(*, log: Callable[[str], None]) -> None:
    """Queue the venue's first model validation (both modes, as the nightly run does) when it has
    none, so that the ops dashboard, the account pages and ``/disclosure/`` have figures from the
    first minutes of ``make run`` rather than after the first night. The runs are enqueued on
    commit: the stack's workers compute them."""
    if ValidationRun.objects.exists():
        return
    with transaction.atomic():
        runs = validation_runs_start(kind=ValidationKind.ON_DEMAND, cause="demo venue: first validation")
    log(f"Model validation queued: {len(runs)} runs of the active set (backtest and stress).")


def demo_cushions_ensure(*, cushions: dict[int, float]) -> int:
    """Deposit USD into each account (id → cushion) whose equity is below cushion × its initial
    margin at the oracle's current prices and the active parameter set, up to that level: one
    engine run over the accounts, as the first sweep will see them. Returns the accounts topped up."""
    if not cushions:
        return 0
    book = margin_book_load(
        parameters_form=parameter_set_active().to_parameters_form(),
        quotes=market_quotes_current(),
        account_ids=sorted(cushions),
    )
    result = compute_margin(book.margin_input)
    usd = Asset.objects.get(symbol=settings.SETTLEMENT_ASSET)
    accounts = MarginAccount.objects.in_bulk(list(cushions))
    topped_up = 0
    for k, account_id in enumerate(book.rows.account_ids.tolist()):
        # The settlement asset has no haircut and does not change the margin: a dollar deposited
        # is a dollar of equity. Whole dollars, rounded up, so the cushion holds.
        shortfall = cushions[account_id] * float(result.initial_margin[k]) - float(result.equity[k])
        if shortfall > 0:
            with transaction.atomic():
                collateral_deposit(
                    account=accounts[account_id],
                    asset=usd,
                    amount=Decimal(math.ceil(shortfall)),
                    reference=CUSHION_REFERENCE,
                )
            topped_up += 1
    return topped_up


ISOLATED_DEMO_ACCOUNT = "ALPHA-ISO"


def isolated_demo_account_seed(*, member: Member, venue_user: User, log: Callable[[str], None]) -> None:
    """``ALPHA-ISO``, an isolated account of alice's member (methodology v1.1 section 4a): 100,000
    USDC, long 1 BTC-PERP and short 20 ETH-PERP booked at the oracle's index (each allocated its
    initial margin by the booking), then alice moves margin in through the member's own service:
    twice its IM more into the BTC long (far from liquidation), 30 % of its IM more into the ETH
    short, which stands healthy but closest to its own liquidation (about 7.6 % up in ETH) while
    the account and the rest of its collateral are healthy. Booked once; needs the oracle seeded."""
    with transaction.atomic():
        account, _ = MarginAccount.objects.get_or_create(
            code=ISOLATED_DEMO_ACCOUNT,
            defaults={"member": member, "name": f"{member.name} isolated book", "mode": MarginMode.ISOLATED},
        )
        if Trade.objects.filter(account=account).exists():
            return
        collateral_deposit(
            account=account,
            asset=Asset.objects.get(symbol="USDC"),
            amount=Decimal(100_000),
            reference="demo seed",
        )
        index = quotes_current().underlying_prices
        trades_book(
            fills=[
                Fill(account, "BTC-PERP", Decimal(1), Decimal(repr(index["BTC"]))),
                Fill(account, "ETH-PERP", Decimal(-20), Decimal(repr(index["ETH"]))),
            ],
            booked_by=venue_user,
        )
    alice = User.objects.get(username="alice")
    for symbol, share in (("BTC-PERP", Decimal(2)), ("ETH-PERP", Decimal("0.3"))):
        position = account.positions.get(instrument__symbol=symbol)
        try:
            position_margin_move(
                account=account,
                position_id=position.pk,
                amount=(position.allocated_margin * share).quantize(Decimal("0.01")),
                moved_by=alice,
            )
        except PricesUntrusted as error:
            log(f"{ISOLATED_DEMO_ACCOUNT}: no margin moved into {symbol} ({error})")
