"""The ops dashboard's panels on real sweeps, margin calls, liquidations and oracle states."""

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountKind, Asset, CollateralBalance, MarginAccount, User
from accounts.services import collateral_deposit
from clearing.dashboard import dashboard_panels, duration_text
from clearing.marketdata.models import IndexPrice, IndexState
from clearing.marketdata.selectors import market_quotes_current
from clearing.marketdata.services import PriceIn, price_observations_submit
from clearing.ops.alerts import ops_alert_raise
from riskengine.reference import reference_clear
from riskengine.sweeps import services
from riskengine.sweeps.foresight import foresight_accounts_grade
from riskengine.sweeps.models import AccountForesight, AccountMargin, Liquidation, MarginCall, MarginStatus
from tests.factories import account_with_btc_long, margin_activity_make

DASHBOARD = "ops_dashboard"


def panel(key: str):
    return next(p for p in dashboard_panels() if p.key == key)


def query_count(key: str) -> int:
    """The panel's queries when this process has no cached quotes (the most it reads: the probe
    and the oracle's two reads; one probe when the oracle has written nothing since)."""
    reference_clear()
    with CaptureQueriesContext(connection) as captured:
        panel(key).context()
    return len(captured)


def test_the_page_is_for_staff_only(client, trader, ops, approver):
    client.force_login(trader)
    response = client.get(reverse(DASHBOARD))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    for user in (ops, approver):
        client.force_login(user)
        assert client.get(reverse(DASHBOARD)).status_code == 200


def test_accounts_by_status_count_the_current_margins_and_link_the_worst(client, quotes, ops):
    services.sweep_full_run(cause="test", quotes=quotes)
    margin_activity_make(quotes, 1)
    context = panel("accounts").context()

    members = AccountMargin.objects.filter(account__kind=AccountKind.MEMBER)
    for status in MarginStatus.values:
        assert context["counts"][status] == members.filter(status=status).count()
    assert context["counts"]["margin_call"] >= 1
    assert context["total"] == MarginAccount.objects.filter(kind=AccountKind.MEMBER).count()
    ratios = [m.equity / m.maintenance_margin for m in members.filter(maintenance_margin__gt=0)]
    worst = context["worst"]
    assert [m.ratio for m in worst] == pytest.approx(sorted(ratios)[: len(worst)])
    assert worst[0].ratio < 1  # the crashed account is the worst

    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert reverse("admin:accounts_marginaccount_change", args=[worst[0].account_id]) in page
    assert f"{context['counts']['healthy']} healthy" in page


def test_open_margin_calls_show_amount_deadline_and_time_left_and_overdue_ones_stand_out(client, quotes, ops):
    account = account_with_btc_long(code="T-CALL", usd="20000")
    services.sweep_accounts_run(account_ids=[account.pk], cause="trade", quotes=quotes)
    call = MarginCall.objects.get(account=account)
    client.force_login(ops)

    page = client.get(reverse(DASHBOARD)).content.decode()
    section = page[page.index('id="panel-margin_calls"') : page.index('id="panel-liquidations"')]
    assert "T-CALL" in section
    assert f"{call.amount:,.2f}" in section
    assert timezone.localtime(call.deadline).strftime("%Y-%m-%d %H:%M") in section
    assert "59 min" in section or "60 min" in section
    assert "overdue" not in section.split("</p>", 1)[1]

    later = call.deadline + timedelta(minutes=5)
    with mock.patch("django.utils.timezone.now", return_value=later):
        context = panel("margin_calls").context()
        page = client.get(reverse(DASHBOARD)).content.decode()
    assert (context["total"], context["overdue"]) == (1, 1)
    assert context["calls"][0].overdue
    assert "dash-row-overdue" in page
    assert "overdue by 5 min 00 s" in page


def test_liquidations_in_progress_and_finished_show_fee_and_deficit(client, quotes, ops):
    margin_activity_make(quotes, 2)
    running = Liquidation.objects.get(status="in_progress")
    finished = list(Liquidation.objects.filter(status="done").order_by("-finished_at", "-pk"))
    context = panel("liquidations").context()

    assert [liq.pk for liq in context["running"]] == [running.pk]
    assert [liq.pk for liq in context["finished"]] == [liq.pk for liq in finished]
    assert all(liq.deficit_covered > 0 for liq in finished)  # a 50 % crash wipes these accounts out
    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert reverse("admin:sweeps_liquidation_change", args=[running.pk]) in page
    for liquidation in finished:
        assert f"{liquidation.deficit_covered:,.2f}" in page


def test_recent_sweeps_show_kind_cause_accounts_shards_and_duration(client, quotes, ops):
    sweep, _ = services.sweep_full_run(cause="beat", quotes=quotes, shard_size=20)
    event = services.sweep_accounts_run(
        account_ids=list(MarginAccount.objects.values_list("pk", flat=True)[:3]), cause="trade", quotes=quotes
    )
    context = panel("sweeps").context()

    assert [s.pk for s in context["sweeps"]] == [event.pk, sweep.pk]
    shown = context["sweeps"][1]
    sweep.refresh_from_db()
    assert shown.duration == sweep.finished_at - sweep.started_at
    assert shown.duration.total_seconds() > 0
    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert f"{sweep.shards_done}/{sweep.shard_count}" in page
    assert duration_text(shown.duration) in page
    assert "beat" in page


def test_the_insurance_fund_is_valued_in_usd_at_the_oracle_prices(client, ops, demo):
    fund = MarginAccount.objects.get(kind=AccountKind.INSURANCE_FUND)
    collateral_deposit(account=fund, asset=Asset.objects.get(symbol="BTC"), amount=Decimal("2.5"))
    collateral_deposit(account=fund, asset=Asset.objects.get(symbol="USDC"), amount=Decimal(1000))
    quotes = market_quotes_current()
    expected = Decimal(0)
    for balance in CollateralBalance.objects.filter(account=fund).select_related("asset__underlying"):
        asset = balance.asset
        price = (
            quotes.underlying_prices[asset.underlying.symbol]
            if asset.underlying_id
            else quotes.asset_prices[asset.symbol]
        )
        expected += balance.amount * Decimal(repr(price))

    context = panel("insurance_fund").context()

    assert context["complete"]
    assert context["total_usd"] == expected
    assert expected > Decimal("2.5") * 10_000  # the BTC counts at its price, not as 2.5 units
    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert f"{expected:,.2f} USD" in page


def test_the_oracle_panel_shows_every_symbol_with_status_age_and_sources(client, ops, demo):
    ops_alert_raise(kind="feed_gap", key="feed-2", message="feed-2 silent for 5 minutes")
    context = panel("oracle").context()
    rows = {row.symbol: row for row in context["rows"]}

    assert set(rows) == set(IndexState.objects.values_list("symbol", flat=True))
    assert {"BTC", "ETH", "USDC"} <= set(rows)
    btc = rows["BTC"]
    state = IndexState.objects.select_related("last_index_price").get(symbol="BTC")
    assert btc.status == market_quotes_current().statuses["BTC"] == "ok"
    assert btc.sources == state.last_index_price.sources
    assert len(btc.sources) == 3
    assert btc.min_sources is not None
    assert [a.kind for a in context["other_alerts"]] == ["feed_gap"]

    # Two minutes without a fresh source: stale as readers see it, though not yet recorded.
    later = timezone.now() + timedelta(minutes=2)
    with mock.patch("django.utils.timezone.now", return_value=later):
        stale = {row.symbol: row for row in panel("oracle").context()["rows"]}["BTC"]
        client.force_login(ops)
        page = client.get(reverse(DASHBOARD)).content.decode()
    assert (stale.status, stale.recorded_status) == ("stale", "ok")
    assert stale.too_old
    assert "dash-status-stale" in page
    assert "feed-2 silent" in page


def test_every_panel_reads_in_the_same_number_of_queries_however_much_there_is(quotes):
    services.sweep_full_run(cause="test", quotes=quotes)
    margin_activity_make(quotes, 1)
    ops_alert_raise(kind="feed_gap", key="a", message="m")
    small = {p.key: query_count(p.key) for p in dashboard_panels()}

    margin_activity_make(quotes, 4)
    services.sweep_full_run(cause="again", quotes=quotes)
    for i in range(5):
        ops_alert_raise(kind="feed_gap", key=f"k{i}", message="m")
        ops_alert_raise(kind="price_stale", key="BTC", message="m")
    assert MarginCall.objects.filter(status="open").count() >= 5
    assert Liquidation.objects.filter(status="done").count() >= 4
    large = {p.key: query_count(p.key) for p in dashboard_panels()}

    assert large == small
    assert small == {
        "parameters": 3,
        "accounts": 3,
        "margin_calls": 2,
        "foresight": 2,
        "liquidations": 2,
        "oracle": 8,
        "sweeps": 1,
        "insurance_fund": 5,
        "validation_backtest": 4,
        "validation_stress": 3,
    }


def test_the_foresight_panel_ranks_the_accounts_most_likely_to_be_liquidated(client, quotes, ops):
    sweep, _ = services.sweep_full_run(cause="test", quotes=quotes)
    members = list(MarginAccount.objects.filter(kind=AccountKind.MEMBER).values_list("pk", flat=True))
    foresight_accounts_grade(sweep_id=sweep.pk, account_ids=members)
    context = panel("foresight").context()

    rows = context["rows"]
    probabilities = [row.probability for row in rows if row.probability is not None]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] > 0
    assert sum(context["levels"].values()) == AccountForesight.objects.count() == len(members)
    top = rows[0]
    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert "Most likely to be liquidated" in page
    assert top.account.code in page
    assert f"{top.percent:.2f} %" in page
    if top.driver:
        assert top.driver in page


def test_the_whole_page_reads_in_a_bounded_number_of_queries(client, quotes, ops):
    services.sweep_full_run(cause="test", quotes=quotes)
    client.force_login(ops)
    client.get(reverse(DASHBOARD))  # warm per-process caches (content types, permissions)
    reference_clear()  # both counts with cold quotes: the most the page reads
    with CaptureQueriesContext(connection) as small:
        client.get(reverse(DASHBOARD))
    margin_activity_make(quotes, 3)
    reference_clear()
    with CaptureQueriesContext(connection) as large:
        assert client.get(reverse(DASHBOARD)).status_code == 200
    assert len(large) == len(small)


def test_ops_confirm_a_held_move_from_the_dashboard_and_nobody_else_can(client, ops, approver, trader):
    before = IndexState.objects.get(symbol="BTC").last_good_price
    crash = (before * Decimal("0.75")).quantize(Decimal("0.01"))
    # Two of the three demo sources report a 25 % drop at once: the circuit breaker holds it.
    price_observations_submit(
        observations=[
            PriceIn(
                source_user=User.objects.get(username=name),
                symbol="BTC",
                price=crash,
                source_time=timezone.now(),
            )
            for name in ("feed", "feed-2")
        ]
    )
    state = IndexState.objects.get(symbol="BTC")
    assert (state.status, state.last_good_price) == ("unconfirmed", before)
    held = state.pending_price
    url = reverse("admin:marketdata_indexstate_confirm", args=["BTC"])

    client.force_login(approver)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert "dash-status-unconfirmed" in page
    assert url not in page
    assert client.post(url).status_code == 403
    client.force_login(trader)
    assert client.post(url)["Location"].startswith("/admin/login/")

    client.force_login(ops)
    page = client.get(reverse(DASHBOARD)).content.decode()
    assert url in page
    assert "csrfmiddlewaretoken" in page
    assert client.get(url).status_code == 405
    response = client.post(url, {"next": reverse(DASHBOARD)})
    assert response.status_code == 302
    assert response["Location"] == reverse(DASHBOARD)
    state.refresh_from_db()
    assert state.status in ("ok", "degraded")
    assert (state.last_good_price, state.pending_price) == (held, None)
    assert IndexPrice.objects.filter(symbol="BTC", confirmed_by=ops, last_good_price=held).exists()

    again = client.post(url, {"next": "https://evil.example/"}, follow=True)
    assert again.redirect_chain[0][0] == reverse("admin:marketdata_indexstate_changelist")
    assert "no move held for confirmation" in again.content.decode()
