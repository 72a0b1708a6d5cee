"""The ops dashboard's model validation panels and the admin's "Run now" (riskengine.validation)."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Role
from accounts.services import collateral_deposit
from accounts.trading import trade_book
from clearing.dashboard import dashboard_panels
from riskengine.validation.models import ValidationKind, ValidationRun
from riskengine.validation.services import validation_run_complete, validation_runs_start
from tests import factories


def panel(key: str):
    return next(p for p in dashboard_panels() if p.key == key)


@pytest.fixture
def validated(venue, active_set, member_a, member_b, validation_ready):
    """The small venue's books, validated in both modes (a nightly run's pair)."""
    book = factories.validation_book_make(venue, member_a, member_b, fund_usd="1000")
    runs = validation_runs_start(kind=ValidationKind.NIGHTLY, cause="test", enqueue=False)
    for run in runs:
        validation_run_complete(run=run)
    return book, {run.mode: ValidationRun.objects.get(pk=run.pk) for run in runs}


def test_the_backtest_panel_shows_the_venue_the_red_accounts_their_exceptions_and_both_modes(validated):
    _, runs = validated
    fixed = runs["fixed"]

    context = panel("validation_backtest").context()

    assert context["run"] == fixed
    assert context["pooled"] == fixed.report["pooled"]
    assert context["aggregate"] == fixed.report["aggregate"]
    assert context["worst"]
    assert {row.light for row in context["worst"]} <= {"yellow", "red"}
    assert context["worst"][0].exceptions == max(r.exceptions for r in fixed.account_backtests.all())
    assert context["exceptions"]
    days = [e["day"] for e in context["exceptions"]]
    assert days == sorted(days, reverse=True)
    assert {e["underlying"] for e in context["exceptions"]} <= {"BTC", "ETH", "collateral"}
    assert "<svg" in context["chart"]
    assert {(row["mode"], row["view"]) for row in context["procyclicality"]} == {
        (mode, view) for mode in ("fixed", "calibrated") for view in ("accounts' total IM", "aggregate book")
    }
    pooled = {row["mode"]: row for row in context["procyclicality"] if row["view"] == "accounts' total IM"}
    assert (
        pooled["calibrated"]["peak_to_trough"]
        == runs["calibrated"].report["pooled"]["procyclicality"]["peak_to_trough"]
    )


def test_the_stress_panel_compares_cover_2_with_the_fund_and_names_who_sets_it(validated):
    _, runs = validated

    context = panel("validation_stress").context()

    cover_2 = runs["fixed"].report["cover_2"]
    assert context["cover_2"] == cover_2
    assert context["fund"] == 1000.0
    assert context["short"] is (cover_2["amount"] > 1000.0)
    assert len(context["scenarios"]) == len(runs["fixed"].report["scenarios"]) == 18 + 4


def test_the_panels_read_a_fixed_number_of_queries_whatever_the_venue(validated, venue, member_a):
    def count(key):
        with CaptureQueriesContext(connection) as captured:
            panel(key).context()
        return len(captured)

    before = (count("validation_backtest"), count("validation_stress"))
    for n in range(5):
        account = factories.account_make(member=member_a, code=f"AAA-X{n}", mode="cross")
        collateral_deposit(account=account, asset=venue.usd, amount=Decimal(1000))
        trade_book(account=account, instrument="BTC-PERP", quantity="0.1", price="60000")
    for run in validation_runs_start(kind=ValidationKind.NIGHTLY, cause="more", enqueue=False):
        validation_run_complete(run=run)

    assert (count("validation_backtest"), count("validation_stress")) == before
    assert before[0] <= 7


@pytest.fixture
def staff(db):
    """An ops user and a risk approver of the small venue (this package's ``ops`` and ``approver``
    are the seeded demo venue's)."""
    return (
        factories.user_make(username="ops1", role=Role.OPS),
        factories.user_make(username="risk1", role=Role.RISK_APPROVER),
    )


def test_the_dashboard_page_renders_both_panels(client, validated, staff):
    client.force_login(staff[0])

    page = client.get(reverse("ops_dashboard")).content.decode()

    assert "Model validation: backtest of the active set" in page
    assert "Model validation: stress, Cover-1 and Cover-2" in page
    assert "Procyclicality: fixed set against psr recalibrated daily" in page
    assert "fund below Cover-2" in page or "fund covers Cover-2" in page


def test_run_now_starts_both_modes_for_ops_and_risk_approvers_only(client, book_for_run_now, staff):
    url = reverse("admin:riskengine_validationrun_run_now")
    for user in staff:
        client.force_login(user)
        assert "Run now" in client.get(reverse("admin:riskengine_validationrun_changelist")).content.decode()
        assert client.post(url).status_code == 302
    runs = ValidationRun.objects.filter(kind=ValidationKind.ON_DEMAND)
    assert sorted(runs.values_list("mode", flat=True)) == ["calibrated", "calibrated", "fixed", "fixed"]
    assert set(runs.values_list("requested_by__username", flat=True)) == {"ops1", "risk1"}

    security = factories.user_make(username="sec1", role=Role.SECURITY_ADMIN)
    client.force_login(security)
    assert client.post(url).status_code == 403
    assert runs.count() == 4


@pytest.fixture
def book_for_run_now(venue, active_set, member_a, member_b, validation_ready):
    return factories.validation_book_make(venue, member_a, member_b)
