"""Fixtures that several test packages share; builders (plain functions) are in ``factories``."""

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount, Role
from accounts.services import collateral_deposit, user_create
from clearing.cache import ProcessLRU
from clearing.marketdata.services import price_source_register
from riskengine import whatif
from riskengine.reference import reference_clear
from riskengine.selectors import _parameters_form
from riskengine.services import parameter_set_bootstrap
from tests import factories


@pytest.fixture(autouse=True, scope="session")
def _quick_password_hashing():
    """Passwords hashed in tests cost a thousandth of production's (``tests.hashers``)."""
    with override_settings(PASSWORD_HASHERS=["tests.hashers.QuickPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _process_caches_cleared():
    """Per-process caches keyed by database ids start empty in every test: SQLite hands the ids of
    a rolled-back test out again (PostgreSQL's sequences never do), and a test that edits a frozen
    parameter set in place must not meet the form a previous test cached under the same id."""
    reference_clear()
    _parameters_form.cache_clear()
    ProcessLRU.clear_all()


def pytest_runtest_setup(item):
    """Tests marked ``postgresql`` exercise what only PostgreSQL has (row-lock races between
    connections, SKIP LOCKED, real workers on a shared server, pg_terminate_backend, pipeline mode):
    on the embedded SQLite stack (``make test-sqlite``) they are skipped, saying why."""
    marker = item.get_closest_marker("postgresql")
    if marker and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "needs PostgreSQL")
        pytest.skip(f"PostgreSQL only: {reason}")


@pytest.fixture
def venue(db):
    """A small venue: BTC and ETH with a perpetual, a dated future and an option each; USD, USDC
    and a BTC asset linked to its underlying."""
    return factories.venue_make()


@pytest.fixture
def history(db):
    """The shipped daily closes of BTC, ETH and USDC as the oracle's stored history: what model
    validation backtests ``venue``'s books on (a proposal is approved only once validated)."""
    return factories.price_history_load()


@pytest.fixture
def validation_ready(history, monkeypatch):
    """Model validation can run on ``venue``'s books: the stored history, and the small venue's
    prices where the oracle has none (no source runs in most tests). Proposals are approved only
    once validated (riskengine.validation)."""
    monkeypatch.setattr("riskengine.validation.services.quotes_current", factories.quotes_fixed)


@pytest.fixture
def member_a(db):
    return factories.member_make(code="AAA")


@pytest.fixture
def member_b(db):
    return factories.member_make(code="BBB")


@pytest.fixture
def active_set(venue):
    """The small venue's active parameter set (``factories.venue_parameters_form``)."""
    return parameter_set_bootstrap(form=factories.venue_parameters_form("v1"))


@pytest.fixture
def ops(db):
    return factories.user_make(username="ops1", role=Role.OPS)


@pytest.fixture
def approver(db):
    return factories.user_make(username="risk1", role=Role.RISK_APPROVER)


@pytest.fixture
def demo(db):
    """The seeded demo venue (``manage.py seed_demo``)."""
    call_command("seed_demo", stdout=io.StringIO())


@pytest.fixture
def quotes(demo):
    """The demo venue's prices (``factories.demo_quotes``)."""
    return factories.demo_quotes()


@pytest.fixture
def clock(monkeypatch):
    clock = factories.Clock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(timezone, "now", clock)
    return clock


@pytest.fixture
def oracle(db, venue, clock):
    """The small venue with an active parameter set (default oracle thresholds: max_age 60 s,
    max_deviation 2 %, min_sources 3, breaker 15 % within 300 s, event move 2 %) and four sources."""
    parameter_set_bootstrap(form=factories.oracle_parameters_form(["USD", "USDC", "BTC"]))
    # System users without a password: hashing one is slow and sources use API tokens anyway.
    users = [user_create(username=f"src-{name}", password=None, role=Role.PRICE_SOURCE) for name in "abcd"]
    for user in users:
        price_source_register(user=user)
    venue.sources = users
    return venue


@pytest.fixture
def agents_world(venue, member_a, active_set, monkeypatch) -> factories.AgentsWorld:
    """For the automated agents: member A with a funding account of 1,000,000 USDC and a cross
    margin account long 10 BTC-PERP at 60,000 on 75,000 USDC (IM 60,000, MM 30,000: equity / MM
    2.5, a margin call below 2.0), a trader and a viewer, and market quotes the agents read through
    the what-if seam (``riskengine.whatif.quotes_current``) that a test moves
    (``AgentsWorld.move``)."""
    market = {"quotes": factories.quotes_fixed()}
    monkeypatch.setattr(whatif, "quotes_current", lambda: market["quotes"])
    funding = MarginAccount.objects.create(member=member_a, code="AAA-FUND", kind=AccountKind.FUNDING)
    collateral_deposit(account=funding, asset=venue.usdc, amount=Decimal(1_000_000))
    margin = factories.btc_long_account(member=member_a, venue=venue, code="AAA-01")
    trader = factories.user_make(username="trader-a", member=member_a)
    viewer = factories.user_make(username="viewer-a", member=member_a, role=Role.VIEWER)
    return factories.AgentsWorld(venue, funding, margin, trader, viewer, market)


@pytest.fixture
def sweep_with_agents(django_capture_on_commit_callbacks) -> factories.SweepWithAgents:
    return factories.SweepWithAgents(django_capture_on_commit_callbacks, [], [])
