"""Test data builders and helpers shared by test modules, in one place: rows (built through the real
services where a service exists, so tests exercise the same paths as production), market quotes,
parameter forms, admin form data, API, websocket and browser clients, and what a test needs to
start a server process or a worker. Fixtures that several test packages share live in
``tests/conftest.py``; a package's own stay in its ``conftest.py``. No test module imports another
(``tests/test_architecture.py``)."""

from __future__ import annotations

import html
import json
import re
import socket
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AccountKind, Asset, MarginAccount, Member, Role, User
from accounts.services import api_token_issue, collateral_deposit, collateral_withdraw, user_create
from accounts.trading import Fill, trade_book, trades_book
from agents import tasks as agents_tasks
from agents.crypto import signature_valid
from clearing.config.asgi import application
from clearing.config.celery import app as celery_app
from clearing.marketdata.demo import UNDERLYINGS, index_history_load, spot_prices
from clearing.marketdata.models import IndexState, PriceSource
from clearing.marketdata.quotes import MarketQuotes
from clearing.marketdata.services import PriceIn, price_observations_submit
from clearing.models import Instrument, InstrumentKind, OptionRight, Underlying
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services as sweep_services
from riskengine.sweeps.models import AccountMargin, Liquidation
from riskengine.sweeps.services import sweep_accounts_run


def member_make(*, code: str = "AAA", name: str | None = None) -> Member:
    return Member.objects.create(code=code, name=name or f"Member {code}")


def account_make(*, member: Member, code: str | None = None, mode: str = "portfolio") -> MarginAccount:
    code = code or f"{member.code}-{MarginAccount.objects.filter(member=member).count() + 1:02d}"
    return MarginAccount.objects.create(member=member, code=code, mode=mode)


def user_make(
    *, username: str, role: str = Role.TRADER, member: Member | None = None, password: str = "pw-Str0ng!"
) -> User:
    return user_create(username=username, password=password, role=role, member=member)


@dataclass
class Venue:
    btc: Underlying
    eth: Underlying
    btc_perp: Instrument
    btc_future: Instrument
    btc_call: Instrument
    eth_perp: Instrument
    usd: Asset
    usdc: Asset
    btc_asset: Asset


def venue_make() -> Venue:
    btc = Underlying.objects.create(symbol="BTC", name="Bitcoin")
    eth = Underlying.objects.create(symbol="ETH", name="Ether")
    expiry = (timezone.now() + timedelta(days=90)).replace(hour=8, minute=0, second=0, microsecond=0)
    return Venue(
        btc=btc,
        eth=eth,
        btc_perp=Instrument.objects.create(symbol="BTC-PERP", kind=InstrumentKind.PERPETUAL, underlying=btc),
        btc_future=Instrument.objects.create(
            symbol="BTC-FUT", kind=InstrumentKind.FUTURE, underlying=btc, expiry=expiry
        ),
        btc_call=Instrument.objects.create(
            symbol="BTC-70000-C",
            kind=InstrumentKind.OPTION,
            underlying=btc,
            expiry=expiry,
            strike=Decimal(70000),
            right=OptionRight.CALL,
        ),
        eth_perp=Instrument.objects.create(symbol="ETH-PERP", kind=InstrumentKind.PERPETUAL, underlying=eth),
        usd=Asset.objects.create(symbol="USD", name="US dollar", decimals=2),
        usdc=Asset.objects.create(symbol="USDC", name="USD Coin", decimals=6),
        btc_asset=Asset.objects.create(symbol="BTC", name="Bitcoin", underlying=btc, decimals=8),
    )


def aware(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


# --- Market quotes ---------------------------------------------------------------------------------

VENUE_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}  # the small venue's index prices, USD


def quotes_fixed() -> MarketQuotes:
    """Quotes for ``venue_make``'s venue: BTC 60,000, ETH 3,000, stablecoins at 1, every status ok."""
    return MarketQuotes(
        valuation_time=timezone.now(),
        underlying_prices=dict(VENUE_PRICES),
        asset_prices={"USD": 1.0, "USDC": 1.0},
        option_ivs={"BTC-70000-C": 0.55},
        statuses={"BTC": "ok", "ETH": "ok", "USD": "ok", "USDC": "ok"},
    )


def demo_quotes(*, usdc: float = 1.0, **statuses: str) -> MarketQuotes:
    """Quotes for the seeded demo venue: the history's last closes, each option at its
    underlying's demo vol; ``statuses`` as ``BTC="stale"``."""
    return MarketQuotes(
        valuation_time=datetime(2026, 11, 24, 12, tzinfo=UTC),
        underlying_prices={symbol: float(price) for symbol, price in spot_prices().items()},
        asset_prices={"USD": 1.0, "USDC": usdc, "USDT": 1.0, "DAI": 1.0},
        option_ivs={
            i.symbol: UNDERLYINGS[i.underlying.symbol][2]
            for i in Instrument.objects.filter(kind=InstrumentKind.OPTION).select_related("underlying")
        },
        statuses=statuses,
    )


def moved(quotes: MarketQuotes, **prices: float) -> MarketQuotes:
    """``quotes`` with some underlyings at other prices (``BTC=50_000.0``)."""
    return replace(quotes, underlying_prices={**quotes.underlying_prices, **prices})


# --- Parameter sets --------------------------------------------------------------------------------


def venue_parameters_form(version: str = "v1") -> dict:
    """A parameters form for ``venue_make``'s venue (BTC, ETH; USD, USDC, BTC)."""
    underlying = {
        "psr": 0.15, "vol_up": 0.5, "vol_down": 0.25,
        "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20_000_000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip
    return {
        "version": version,
        "mm_ratio": 0.8,
        "offset_cap": 0.8,
        "underlyings": {"BTC": underlying, "ETH": underlying | {"psr": 0.18}},
        "correlation": {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.8, 1.0]]},
        "assets": {
            "USD": {
                "underlying": None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": None, "haircut": 0.0}],
            },
            "USDC": {
                "underlying": None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": 10_000_000, "haircut": 0.0}, {"up_to": None, "haircut": 0.02}],
            },
            "BTC": {
                "underlying": "BTC",
                "liability_addon": 0.10,
                "haircuts": [{"up_to": 1_000_000, "haircut": 0.05}, {"up_to": None, "haircut": 0.10}],
            },
        },
    }


def oracle_parameters_form(assets: list[str]) -> dict:
    """A complete parameters form (every optional rule spelled out) for ``venue_make``'s
    underlyings and the collateral ``assets`` named."""
    underlying = {
        "psr": 0.15, "vol_up": 0.5, "vol_down": 0.25,
        "extreme": [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}],
        "min_basis": 0.01, "basis_rate": 0.075, "som_rate": 0.01,
        "conc_threshold": 20_000_000, "conc_rate": 0.05, "imf": 0.10, "mmf": 0.05,
    }  # fmt: skip
    return {
        "version": "test-1",
        "mm_ratio": 0.8,
        "offset_cap": 0.8,
        "lookahead_days": 1,
        "rate": 0.0,
        "price_steps": 4,
        "min_vol": 0.01,
        "vol_term": {"pivot_days": 30, "short_power": 0.30, "long_power": 0.13},
        "standard": {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075},
        "underlyings": {"BTC": underlying, "ETH": dict(underlying, psr=0.18)},
        "correlation": {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.8, 1.0]]},
        "assets": {
            symbol: {
                "underlying": "BTC" if symbol == "BTC" else None,
                "liability_addon": 0.05,
                "haircuts": [{"up_to": None, "haircut": 0.0 if symbol != "BTC" else 0.05}],
            }
            for symbol in assets
        },
    }


# --- Price history ---------------------------------------------------------------------------------


def price_history_load(symbols: tuple[str, ...] = ("BTC", "ETH", "USDC")) -> int:
    """The shipped daily closes of ``symbols`` as the oracle's stored history (``IndexClose``),
    as ``seed_demo`` loads them: what model validation backtests on. Default: the series
    ``venue_make``'s parameter sets need (USD is the settlement currency, BTC the linked asset)."""
    return index_history_load(symbols=symbols)


@dataclass
class ValidationBook:
    """Member books on ``venue_make``'s venue for model validation (``validation_book_make``)."""

    long_btc: MarginAccount  # cross, long BTC perpetual
    short_call: MarginAccount  # portfolio mode, short BTC call against BTC collateral
    hedged: MarginAccount  # portfolio mode, long BTC perpetual short BTC future, and ETH
    cash_only: MarginAccount  # USDC only: stressed, not backtested (no position)
    other_member: MarginAccount  # member BBB, ETH perpetual (short by default)
    fund: MarginAccount  # the venue's insurance fund (not a member account)


def validation_book_make(
    venue, member_a, member_b, *, fund_usd: str = "1000000", long_usd: str = "150000",
    short_usd: str = "60000", other_eth: str = "-100",
) -> ValidationBook:  # fmt: skip
    """Books on ``venue_make``'s venue (prices of ``factories.quotes_fixed``); ``long_usd`` and
    ``short_usd`` the cash of the long BTC and of member BBB's account, which holds ``other_eth``
    ETH perpetuals (short by default)."""

    def account(member, code, mode, **deposits):
        row = account_make(member=member, code=code, mode=mode)
        for symbol, amount in deposits.items():
            collateral_deposit(account=row, asset=getattr(venue, symbol), amount=Decimal(amount))
        return row

    long_btc = account(member_a, "AAA-01", "cross", usd=long_usd)
    short_call = account(member_a, "AAA-02", "portfolio", usd="50000", btc_asset="2")
    hedged = account(member_a, "AAA-03", "portfolio", usdc="200000")
    cash_only = account(member_a, "AAA-04", "cross", usdc="10000")
    other_member = account(member_b, "BBB-01", "cross", usd=short_usd)
    trades_book(
        fills=[
            Fill(long_btc, "BTC-PERP", "10", "60000"),
            Fill(short_call, "BTC-70000-C", "-4", "2500"),
            Fill(hedged, "BTC-PERP", "5", "60000"),
            Fill(hedged, "BTC-FUT", "-5", "60500"),
            Fill(hedged, "ETH-PERP", "30", "3000"),
            Fill(other_member, "ETH-PERP", other_eth, "3000"),
        ]
    )
    venue_member = Member.objects.create(code="VENUE", name="The venue")
    fund = MarginAccount.objects.create(
        member=venue_member, code="VENUE-INSURANCE", mode="cross", kind=AccountKind.INSURANCE_FUND
    )
    collateral_deposit(account=fund, asset=venue.usd, amount=Decimal(fund_usd))
    return ValidationBook(long_btc, short_call, hedged, cash_only, other_member, fund)


# --- Books on the seeded demo venue ----------------------------------------------------------------


def account_with_btc_long(*, code: str, usd: str, btc: str = "10") -> MarginAccount:
    """A fresh cross account of ALPHA long ``btc`` BTC-PERP at the demo spot, with ``usd`` of cash."""
    member = Member.objects.get(code="ALPHA")
    account = MarginAccount.objects.create(member=member, code=code, mode="cross")
    collateral_deposit(account=account, asset=Asset.objects.get(symbol="USD"), amount=Decimal(usd))
    trades_book(fills=[Fill(account, "BTC-PERP", Decimal(btc), spot_prices()["BTC"])])
    return account


def btc_index() -> Decimal:
    """The demo venue's BTC index price now."""
    return IndexState.objects.get(symbol="BTC").last_good_price


def thin_account_make(
    *, code: str, member_code: str = "ALPHA", btc: str = "10", cushion: float = 1.04
) -> MarginAccount:
    """A cross account long ``btc`` BTC-PERP at the index, with just enough USD for equity to be
    ``cushion`` × its initial margin after a sweep: healthy now, a margin call after a few % drop
    (the browser tests, the live-page tests and ``bench/bench_live.py``)."""
    member = Member.objects.get(code=member_code)
    account = MarginAccount.objects.create(member=member, code=code, mode="cross")
    usd = Asset.objects.get(symbol="USD")
    collateral_deposit(account=account, asset=usd, amount=Decimal(1_000_000))
    trades_book(fills=[Fill(account, "BTC-PERP", Decimal(btc), btc_index())])
    sweep_accounts_run(account_ids=[account.pk], cause="scenario")
    margin = AccountMargin.objects.get(account=account)
    excess = Decimal(repr(margin.equity - cushion * margin.initial_margin)).quantize(Decimal("0.01"))
    collateral_withdraw(account=account, asset=usd, amount=excess)
    sweep_accounts_run(account_ids=[account.pk], cause="scenario")
    return account


def btc_observe(*, fraction: float) -> Decimal:
    """Every demo price source reports BTC ``fraction`` below the current index; returns the price."""
    price = (btc_index() * Decimal(repr(1 - fraction))).quantize(Decimal("0.01"))
    now = timezone.now()
    sources = User.objects.filter(pk__in=PriceSource.objects.values("user_id")).order_by("pk")
    price_observations_submit(
        observations=[
            PriceIn(source_user=user, symbol="BTC", price=price, source_time=now) for user in sources
        ]
    )
    return price


def margin_activity_make(quotes: MarketQuotes, n: int) -> None:
    """``n`` accounts in margin call, ``n`` liquidated (one left in progress), one more sweep."""
    base = MarginAccount.objects.count()
    crashed_quotes = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.5)
    for i in range(n):
        call = account_with_btc_long(code=f"CALL-{base}-{i}", usd="20000")
        sweep_accounts_run(account_ids=[call.pk], cause="trade", quotes=quotes)
        crashed = account_with_btc_long(code=f"LIQ-{base}-{i}", usd="5000")
        sweep_accounts_run(account_ids=[crashed.pk], cause="index BTC", quotes=crashed_quotes)
    for liquidation in Liquidation.objects.filter(status="in_progress").order_by("pk")[1:]:
        liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed_quotes)


# --- Admin and browser pages ----------------------------------------------------------------------


def parameter_set_change_url(parameter_set) -> str:
    return reverse("admin:riskengine_parameterset_change", args=[parameter_set.pk])


def parameter_set_action_url(parameter_set, action: str) -> str:
    """The admin page of one governance action (``propose``, ``approve``, ``impact``...) of a set."""
    return reverse(f"admin:riskengine_parameterset_{action}", args=[parameter_set.pk])


def draft_post_data(client, parameter_set, **overrides) -> dict:
    """The parameter set's admin change form's own fields and inline management data, as the
    browser would post them, with ``overrides``."""
    page = client.get(parameter_set_change_url(parameter_set)).content.decode()
    data = {}
    for match in re.finditer(r'<input[^>]*name="([^"]+)"[^>]*>', page):
        tag = match.group(0)
        if 'type="checkbox"' in tag and "checked" not in tag:
            continue
        if 'type="submit"' in tag:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        name = match.group(1)
        if name.endswith("__u"):
            data.setdefault(name, []).append(html.unescape(value.group(1)) if value else "")
        else:
            data[name] = html.unescape(value.group(1)) if value else ""
    for match in re.finditer(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S):
        data[match.group(1)] = html.unescape(match.group(2).strip())
    for match in re.finditer(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        selected = re.search(r'<option value="([^"]*)"[^>]*selected', match.group(2))
        data[match.group(1)] = selected.group(1) if selected else ""
    data.update(overrides)
    return data


def browser_sign_in(page, base: str, username: str = "alice", password: str = "alice-demo-2026") -> None:
    """Sign in on the member login page in a Playwright ``page`` of the server at ``base``."""
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Margin accounts')")


# --- Clocks ----------------------------------------------------------------------------------------


class Clock:
    """A controllable ``timezone.now`` for time rules (the oracle's freshness, the breaker window)."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


# --- API and websocket clients ---------------------------------------------------------------------


@dataclass
class Client:
    """An API client acting as ``user`` through a bearer token (anonymous when ``user`` is None)."""

    user: User | None
    http: APIClient

    def get(self, path, **kwargs):
        return self.http.get(path, **kwargs)

    def post(self, path, data=None, *, key: str | None = None, **kwargs):
        headers = {"Idempotency-Key": key} if key is not None else {}
        return self.http.post(path, data, format="json", headers=headers, **kwargs)

    def put(self, path, data=None, **kwargs):
        return self.http.put(path, data, format="json", **kwargs)

    def delete(self, path, **kwargs):
        return self.http.delete(path, **kwargs)


def client_for(user: User | None) -> Client:
    http = APIClient()
    if user is not None:
        _, token = api_token_issue(user=user, name="tests")
        http.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return Client(user, http)


def recent(seconds: int = 1) -> str:
    """An ISO timestamp ``seconds`` ago (a price source's ``source_time``)."""
    return (timezone.now() - timedelta(seconds=seconds)).isoformat()


def session_cookie(user: User) -> str:
    client = DjangoClient()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def communicator(*, cookie: str | None = None, origin: str = "http://testserver") -> WebsocketCommunicator:
    """A websocket client of ``/ws/margin/`` with the session ``cookie`` and ``origin``."""
    headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/margin/", headers=headers)


# --- Server processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_database_url() -> str:
    """``DATABASE_URL`` of the test database, for a server process started by a test."""
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def queue_purge(name: str, *, delete: bool = False) -> None:
    """Empty the broker queue ``name`` (and with ``delete`` remove it and its bindings): a test's
    Celery workers start and end on a queue of their own."""
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)  # fails here when Redis is down: the test never skips
        channel = conn.default_channel
        channel.queue_declare(queue=name, durable=True, auto_delete=False)
        channel.queue_purge(name)
        if delete:
            channel.queue_delete(name)
            channel.client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


# --- A member's execution system, receiving webhooks -------------------------------------------------


@dataclass
class Delivery:
    """One webhook as the receiver got it: its headers, exact body, whether its signature checked
    out under the receiver's secret, and the status it was answered with."""

    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    answered: int

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (a free port, its own thread) standing for a member's
    execution system: it answers each delivery with the next of ``answers`` (then 200), checks the
    signature with ``secret`` (``agents.crypto.signature_valid``) and "executes" a hedge once per
    idempotency id (``executed``), however often the same id is delivered. ``close()`` stops it."""

    answers: list[int] = field(default_factory=list)
    secret: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                timestamp = headers.get("clearing-webhook-timestamp", "")
                ok = timestamp.isdigit() and signature_valid(
                    secret=receiver.secret,
                    timestamp=int(timestamp),
                    body=body,
                    header=headers.get("clearing-webhook-signature", ""),
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.deliveries.append(Delivery(headers, body, ok, status))
                hedge = headers.get("clearing-webhook-id", "")
                if ok and 200 <= status < 300 and hedge not in receiver.executed:
                    receiver.executed.append(hedge)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hedges"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- The automated agents ----------------------------------------------------------------------------


@dataclass
class AgentsWorld:
    """What ``tests/conftest.py``'s ``agents_world`` builds: a funding account, a margin account, a
    trader and a viewer of its member, and the quotes the agents read (``market["quotes"]``)."""

    venue: Venue
    funding: MarginAccount
    margin: MarginAccount
    trader: object
    viewer: object
    market: dict

    @property
    def quotes(self) -> MarketQuotes:
        return self.market["quotes"]

    def move(self, **prices: float) -> MarketQuotes:
        """Move the oracle the agents read (``BTC=58_800.0``); returns the new quotes."""
        self.market["quotes"] = moved(quotes_fixed(), **prices)
        return self.market["quotes"]

    def statuses(self, **statuses: str) -> MarketQuotes:
        quotes = self.market["quotes"]
        self.market["quotes"] = MarketQuotes(
            valuation_time=quotes.valuation_time,
            underlying_prices=quotes.underlying_prices,
            asset_prices=quotes.asset_prices,
            option_ivs=quotes.option_ivs,
            statuses={**quotes.statuses, **statuses},
        )
        return self.market["quotes"]


def btc_long_account(*, member, venue, code: str, usdc: str = "75000", mode: str = "cross") -> MarginAccount:
    """A margin account of ``member`` long 10 BTC-PERP at 60,000 on ``usdc`` of USDC (the small venue)."""
    account = account_make(member=member, code=code, mode=mode)
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(usdc))
    trade_book(account=account, instrument="BTC-PERP", quantity=10, price=60_000)
    return account


@dataclass
class SweepWithAgents:
    """An event sweep whose commit runs what it hands to the agents, as a worker would
    (``agents.accounts_act``); ``handed`` lists the account ids of each hand-over. The event sweeps
    that transfers request, liquidations and webhook deliveries are not sent (``deliveries``
    records the last)."""

    capture: object
    handed: list
    deliveries: list

    def __call__(self, *, account_ids, quotes):
        def act(ids):
            self.handed.append(ids)
            return agents_tasks.accounts_act.apply(args=[ids])

        with (
            mock.patch.object(agents_tasks.accounts_act, "delay", side_effect=act),
            mock.patch.object(sweep_services, "_drain_enqueue"),
            mock.patch.object(sweep_services, "_liquidations_enqueue"),
            mock.patch.object(agents_tasks.webhook_deliver, "delay", side_effect=self.deliveries.append),
            self.capture(execute=True),
        ):
            return sweep_accounts_run(account_ids=account_ids, cause="test", quotes=quotes)
