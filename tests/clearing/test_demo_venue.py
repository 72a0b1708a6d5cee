"""The demo venue (``manage.py seed_demo``): what it holds, its users, and that it starts healthy so
that its margin calls and liquidations come from the prices ``demo_feed`` replays."""

import random
from collections import Counter
from dataclasses import replace

import pytest
from django.core.management import call_command

from accounts.models import CollateralBalance, CollateralMovement, MarginAccount, Member, User
from clearing.marketdata.demo import REPLAY_START, STABLECOINS, demo_symbols_prices
from clearing.marketdata.feed import DemoFeed
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument, Position, Trade, Underlying
from riskengine.core import compute_margin
from riskengine.demo import ISOLATED_DEMO_ACCOUNT
from riskengine.loading import margin_book_load
from riskengine.reference import quotes_current
from riskengine.selectors import parameter_set_active
from riskengine.sweeps.models import AccountMargin, Liquidation, MarginCall
from riskengine.sweeps.services import sweep_full_run
from riskengine.validation.models import ValidationRun


@pytest.fixture
def seeded(db, capsys):
    call_command("seed_demo")
    return capsys.readouterr().out


def test_the_demo_venue_has_the_instruments_members_and_books_it_promises(seeded):
    assert {"BTC", "ETH", "SOL"} <= set(Underlying.objects.values_list("symbol", flat=True))
    kinds = Counter(Instrument.objects.values_list("underlying__symbol", "kind"))
    for underlying in ("BTC", "ETH", "SOL"):
        assert kinds[(underlying, "perpetual")] == 1
        assert kinds[(underlying, "future")] >= 2
        assert kinds[(underlying, "option")] >= 20
    option_ladder = Instrument.objects.filter(kind="option", underlying__symbol="BTC")
    assert option_ladder.values("expiry").distinct().count() >= 2
    assert option_ladder.values("strike").distinct().count() >= 5
    assert set(option_ladder.values_list("right", flat=True)) == {"call", "put"}

    assert MarginAccount.objects.count() >= 50
    assert Member.objects.count() >= 3
    assert CollateralBalance.objects.filter(asset__symbol__in=["USDC", "USDT", "DAI"], amount__gt=0).exists()
    assert CollateralBalance.objects.filter(asset__symbol__in=["BTC", "ETH"], amount__gt=0).exists()


def test_the_demo_books_include_hedged_directional_and_short_option_accounts(seeded):
    open_positions = Position.objects.exclude(quantity=0)
    short_options = open_positions.filter(instrument__kind="option", quantity__lt=0)
    assert short_options.values("account").distinct().count() >= 5
    hedged = [
        account
        for account in MarginAccount.objects.all()
        if open_positions.filter(
            account=account, quantity__gt=0, instrument__kind__in=["perpetual", "future"]
        ).exists()
        and open_positions.filter(
            account=account, quantity__lt=0, instrument__kind__in=["perpetual", "future"]
        ).exists()
    ]
    assert len(hedged) >= 5
    single_perp = [a for a in MarginAccount.objects.all() if open_positions.filter(account=a).count() == 1]
    assert len(single_perp) >= 5


def test_the_demo_users_exist_with_their_roles_and_printed_passwords(seeded):
    expected = {
        "alice": "trader",
        "bob": "trader",
        "ops": "ops",
        "risk": "risk_approver",
        "security": "security_admin",
        "security2": "security_admin",
        "feed": "price_source",
        "venue": "venue",
        "custody": "custodian",
    }
    for username, role in expected.items():
        user = User.objects.get(username=username)
        assert user.role == role
        password = next(line.split()[1] for line in seeded.splitlines() if line.split()[:1] == [username])
        assert user.check_password(password)
    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    first_two = list(Member.objects.order_by("pk")[:2])
    assert (alice.member, bob.member) == (first_two[0], first_two[1])


def test_seeding_twice_duplicates_nothing(seeded, capsys):
    models = (Member, User, MarginAccount, Instrument, Trade, Position, CollateralMovement, CollateralBalance)
    before = {model: model.objects.count() for model in models}
    call_command("seed_demo")
    assert {model: model.objects.count() for model in models} == before


def test_every_demo_account_starts_healthy_at_the_seeded_prices(seeded):
    sweep_full_run(cause="the first sweep", quotes=market_quotes_current())

    statuses = Counter(AccountMargin.objects.values_list("status", flat=True))
    assert statuses == {"healthy": MarginAccount.objects.count()}
    assert not MarginCall.objects.exists()
    assert not Liquidation.objects.exists()


def test_the_replayed_moves_bring_margin_calls_and_liquidations_within_the_first_days(seeded):
    # demo_feed's replay without its noise, jumps and bad ticks: each day's close, scaled to start
    # at the seeded prices. At the demo's 20 s per historical day, day 10 is 200 s into the demo.
    start = market_quotes_current()
    feed = DemoFeed(
        anchors=demo_symbols_prices(),
        start=REPLAY_START,
        seconds_per_day=1.0,
        n_sources=1,
        rng=random.Random(0),
    )
    reached = set()
    for day in range(1, 11):
        prices = feed.prices(day)
        quotes = replace(
            start,
            underlying_prices={symbol: prices[symbol] for symbol in start.underlying_prices},
            asset_prices={**start.asset_prices, **{symbol: prices[symbol] for symbol in STABLECOINS}},
        )
        sweep_full_run(cause=f"replay day {day}", quotes=quotes)
        reached |= set(AccountMargin.objects.values_list("status", flat=True))

    assert {"margin_call", "liquidation"} <= reached
    assert MarginCall.objects.exists()
    assert Liquidation.objects.exists()


def test_alices_member_has_an_isolated_account_with_one_position_near_its_own_liquidation(seeded):
    account = MarginAccount.objects.get(code=ISOLATED_DEMO_ACCOUNT)
    assert (account.member.code, account.mode) == ("ALPHA", "isolated")
    book = margin_book_load(
        parameters_form=parameter_set_active().to_parameters_form(),
        quotes=quotes_current(),
        account_ids=[account.pk],
    )
    result = compute_margin(book.margin_input).to_dict(0)

    assert result["status"] == "healthy"
    assert result["free_collateral"] > 0
    cushions = {p["instrument"]: p["equity"] / p["maintenance_margin"] for p in result["positions"]}
    assert all(p["status"] == "healthy" for p in result["positions"])
    # The ETH short stands at 1.3 × its IM = 2.6 × its MM; the BTC long at 3 × IM = 6 × MM.
    assert cushions["ETH-PERP"] == pytest.approx(2.6, rel=1e-3)
    assert cushions["BTC-PERP"] == pytest.approx(6.0, rel=1e-3)


def test_the_demo_queues_its_first_model_validation_once_so_its_pages_have_figures(seeded):
    runs = ValidationRun.objects.order_by("mode")
    assert [(run.mode, run.kind, run.status) for run in runs] == [
        ("calibrated", "on_demand", "running"),
        ("fixed", "on_demand", "running"),
    ]
    assert runs[0].parameter_set == parameter_set_active()
    assert "Model validation queued: 2 runs" in seeded

    call_command("seed_demo")
    assert ValidationRun.objects.count() == 2
