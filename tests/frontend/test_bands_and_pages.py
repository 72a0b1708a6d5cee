"""Target bands, price status events, and the member pages on a swept demo venue."""

import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import MarginAccount, User
from accounts.services import collateral_deposit
from accounts.trading import Fill, trades_book
from clearing.events import events_publish
from clearing.models import OutboxEvent
from frontend.models import TargetBand
from frontend.services import price_status_events_publish, target_band_set
from riskengine.sweeps.models import AccountMargin
from riskengine.sweeps.services import sweep_accounts_run
from tests import factories
from tests.factories import btc_observe, thin_account_make


@pytest.fixture
def account(member_a):
    return factories.account_make(member=member_a, code="AAA-01")


@pytest.fixture
def alice(member_a):
    return factories.user_make(username="alice", member=member_a)


def published(kind: str) -> list[dict]:
    return list(OutboxEvent.objects.filter(type=kind).order_by("id").values_list("payload", flat=True))


@pytest.mark.parametrize(
    ("lower", "upper", "field"),
    [
        ("0", "2", "lower"),
        ("-1", "2", "lower"),
        ("2", "2", "upper"),
        ("3", "2", "upper"),
        ("nan", "2", "lower"),
    ],
)
def test_a_band_must_have_a_positive_lower_bound_below_the_upper(account, alice, lower, upper, field):
    with pytest.raises(ValidationError) as error:
        target_band_set(account=account, lower=lower, upper=upper, user=alice)
    assert field in error.value.message_dict
    assert not TargetBand.objects.exists()


def test_a_sweep_outside_the_band_alerts_once_and_again_when_back_inside(account, alice):
    target_band_set(account=account, lower=Decimal("1.5"), upper=Decimal("4"), user=alice)

    def swept(equity: float, mm: float) -> None:
        events_publish(
            events=[
                (
                    account.pk,
                    "margin.updated",
                    {"equity": equity, "maintenance_margin": mm, "initial_margin": 2 * mm},
                )
            ]
        )

    swept(300, 100)  # 3×: inside
    swept(120, 100)  # 1.2×: below
    swept(110, 100)  # still below: no second alert
    swept(250, 100)  # back inside
    swept(100, 0)  # nothing at risk: above the band
    assert [(p["state"], p["ratio"]) for p in published("target_band.breached")] == [
        ("below", 1.2),
        ("above", None),
    ]
    assert [p["state"] for p in published("target_band.restored")] == ["inside"]
    assert TargetBand.objects.get().state == "above"


def test_price_status_changes_reach_only_the_exposed_accounts(venue, member_a, member_b):
    exposed = factories.account_make(member=member_a, code="AAA-01")
    other = factories.account_make(member=member_b, code="BBB-01")
    trades_book(
        fills=[
            Fill(exposed, "BTC-PERP", Decimal(1), Decimal(60000)),
            Fill(other, "ETH-PERP", Decimal(1), Decimal(3000)),
        ]
    )
    assert price_status_events_publish(changes=[("BTC", "ok", "stale"), ("ETH", "ok", "ok")]) == 1
    (event,) = OutboxEvent.objects.filter(type="price.status")
    assert event.group == f"account-{exposed.pk}"
    assert event.payload == {
        "type": "price.status",
        "account": exposed.pk,
        "symbol": "BTC",
        "previous": "ok",
        "status": "stale",
        "accounts": [exposed.pk],
    }


def test_a_member_whose_accounts_do_not_depend_on_a_symbol_gets_no_event_for_it(venue, member_a, member_b):
    usd_only = factories.account_make(member=member_a, code="AAA-01")  # depends on no oracle price
    collateral_deposit(account=usd_only, asset=venue.usd, amount=Decimal(1000))
    holder = factories.account_make(member=member_b, code="BBB-01")
    collateral_deposit(account=holder, asset=venue.usdc, amount=Decimal(1000))

    assert price_status_events_publish(changes=[("USDC", "ok", "degraded"), ("BTC", "ok", "stale")]) == 1
    assert [(e.group, e.payload["symbol"]) for e in OutboxEvent.objects.filter(type="price.status")] == [
        (f"account-{holder.pk}", "USDC")
    ]


def test_a_member_hears_of_a_price_status_change_once_however_many_of_its_accounts_depend_on_it(
    venue, member_a, member_b
):
    a1, _not_exposed, a3 = (factories.account_make(member=member_a, code=f"AAA-0{n}") for n in (1, 2, 3))
    b1 = factories.account_make(member=member_b, code="BBB-01")
    for account in (a3, a1, b1):
        collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(1000))

    assert price_status_events_publish(changes=[("USDC", "ok", "degraded")]) == 2
    events = {e.payload["account"]: e.payload for e in OutboxEvent.objects.filter(type="price.status")}
    assert set(events) == {a1.pk, b1.pk}, "one event per member, to its first exposed account"
    assert events[a1.pk]["accounts"] == [a1.pk, a3.pk], "naming every exposed account, no other"
    assert events[b1.pk]["accounts"] == [b1.pk]


def test_a_symbols_first_status_ok_is_no_news_but_a_first_degraded_status_is(venue, member_a):
    account = factories.account_make(member=member_a, code="AAA-01")
    collateral_deposit(account=account, asset=venue.usdc, amount=Decimal(1000))

    assert price_status_events_publish(changes=[("USDC", "", "ok")]) == 0
    assert price_status_events_publish(changes=[("USDC", "", "degraded")]) == 1


@pytest.fixture
def swept_demo(db):
    call_command("seed_demo", stdout=io.StringIO())
    account = thin_account_make(code="ALPHA-LIVE")
    btc_observe(fraction=0.03)
    sweep_accounts_run(account_ids=[account.pk], cause="test: BTC drop")
    return account


def test_the_member_pages_show_swept_margin_calls_modes_and_hedges(client, swept_demo):
    client.force_login(User.objects.get(username="alice"))
    margin = AccountMargin.objects.get(account=swept_demo)
    with CaptureQueriesContext(connection) as queries:
        overview = client.get("/")
    assert overview.status_code == 200
    assert len(queries) <= 10, "the overview's queries must not grow with the number of accounts"
    html = overview.content.decode()
    assert 'data-account-card="ALPHA-LIVE"' in html
    assert "Margin call" in html
    assert MarginAccount.objects.filter(member__code="ALPHA").count() > 5

    detail = client.get("/accounts/ALPHA-LIVE/").content.decode()
    assert f"{margin.equity:,.2f}" in detail
    assert "data-deadline" in detail
    for section in ("comparison", "greeks", "hedges", "positions", "collateral"):
        assert f'id="{section}"' in detail
    assert "Sell 10 BTC-PERP" in detail  # the hedge that flattens the 10 BTC long

    fragment = client.get("/accounts/ALPHA-LIVE/?fragment=1").content.decode()
    assert "<html" not in fragment
    assert "data-deadline" in fragment


def test_another_members_account_and_its_what_if_are_a_404(client, swept_demo):
    client.force_login(User.objects.get(username="bob"))
    assert client.get("/accounts/ALPHA-LIVE/").status_code == 404
    assert client.get("/accounts/ALPHA-LIVE/what-if/").status_code == 404
    assert client.post("/accounts/ALPHA-LIVE/band/", {"lower": "1", "upper": "2"}).status_code == 404


def test_a_what_if_shows_before_and_after_and_refuses_bad_rows(client, swept_demo):
    from accounts.models import Asset
    from clearing.models import Instrument

    client.force_login(User.objects.get(username="alice"))
    perp = Instrument.objects.get(symbol="BTC-PERP")
    usd = Asset.objects.get(symbol="USD")
    good = client.post(
        "/accounts/ALPHA-LIVE/what-if/",
        {"t0-instrument": perp.pk, "t0-quantity": "-5", "c0-asset": usd.pk, "c0-amount": "1000"},
    )
    assert good.status_code == 200
    assert 'id="what-if-result"' in good.content.decode()
    bad = client.post("/accounts/ALPHA-LIVE/what-if/", {"t0-instrument": perp.pk, "t0-quantity": "0"})
    assert bad.status_code == 400
    assert "Give a non-zero quantity." in bad.content.decode()
    empty = client.post("/accounts/ALPHA-LIVE/what-if/", {})
    assert empty.status_code == 400


@pytest.mark.parametrize(
    ("row", "field", "typed"),
    [("t0", "quantity", "１２３"), ("t0", "quantity", "١٢٣"), ("t0", "quantity", "1_000"),
     ("t0", "price", "٥"), ("c0", "amount", "1_000")],
)  # fmt: skip
def test_a_trader_posting_a_non_plain_number_to_the_web_what_if_gets_the_field_error_nothing_computed(
    client, swept_demo, monkeypatch, row, field, typed
):
    from accounts.models import Asset
    from clearing.models import Instrument
    from frontend import views

    def computed(**kwargs):
        raise AssertionError("nothing is computed from a refused form")

    monkeypatch.setattr(views, "margin_what_if", computed)
    client.force_login(User.objects.get(username="alice"))  # ALPHA's trader
    perp = Instrument.objects.get(symbol="BTC-PERP")
    usd = Asset.objects.get(symbol="USD")
    data = {"t0-instrument": perp.pk, "t0-quantity": "-5", "c0-asset": usd.pk, "c0-amount": "1000"}
    response = client.post("/accounts/ALPHA-LIVE/what-if/", data | {f"{row}-{field}": typed})
    assert response.status_code == 400
    form = response.context["trade_forms" if row == "t0" else "collateral_forms"][0]
    assert list(form.errors) == [field]
    assert form.errors[field] == [
        f'{typed!r} is not a plain decimal number (ASCII digits, e.g. "-1.5" or "2e3", no spaces).'
    ]
    page = response.content.decode()
    assert "is not a plain decimal number" in page
    assert 'id="what-if-result"' not in page


def test_a_member_sets_a_band_from_the_page(client, swept_demo):
    client.force_login(User.objects.get(username="alice"))
    response = client.post("/accounts/ALPHA-LIVE/band/", {"lower": "2", "upper": "5"})
    assert response.status_code == 302
    band = TargetBand.objects.get(account=swept_demo)
    assert (band.lower, band.upper) == (Decimal(2), Decimal(5))
    page = client.get("/accounts/ALPHA-LIVE/").content.decode()
    assert "below your target band" in page
    assert client.post("/accounts/ALPHA-LIVE/band/", {"lower": "5", "upper": "2"}).status_code == 400


def test_a_viewer_cannot_save_or_remove_a_target_band_in_the_web_app(client, swept_demo):
    """Read-only as on the API: 403 and nothing changed; the page offers no band form."""
    alice = User.objects.get(username="alice")
    target_band_set(account=swept_demo, lower=Decimal(2), upper=Decimal(5), user=alice)
    client.force_login(User.objects.get(username="carol"))  # ALPHA's viewer
    page = client.get("/accounts/ALPHA-LIVE/").content.decode()
    assert "data-read-only" in page
    assert 'action="/accounts/ALPHA-LIVE/band/"' not in page
    assert "What if…" not in page

    assert client.post("/accounts/ALPHA-LIVE/band/", {"lower": "1", "upper": "9"}).status_code == 403
    assert client.post("/accounts/ALPHA-LIVE/band/", {"clear": "1"}).status_code == 403
    band = TargetBand.objects.get(account=swept_demo)
    assert (band.lower, band.upper, band.updated_by) == (Decimal(2), Decimal(5), alice)


def test_the_band_service_refuses_a_viewer_too(account, member_a):
    from django.core.exceptions import PermissionDenied

    viewer = factories.user_make(username="vera", role="viewer", member=member_a)
    with pytest.raises(PermissionDenied):
        target_band_set(account=account, lower=Decimal(2), upper=Decimal(5), user=viewer)
    assert not TargetBand.objects.exists()


def test_a_viewer_cannot_run_a_what_if_in_the_web_app(client, swept_demo):
    from clearing.models import Instrument

    client.force_login(User.objects.get(username="carol"))
    page = client.get("/accounts/ALPHA-LIVE/what-if/")
    assert page.status_code == 200
    assert "data-read-only" in page.content.decode()
    assert 'name="t0-quantity"' not in page.content.decode()
    perp = Instrument.objects.get(symbol="BTC-PERP")
    refused = client.post("/accounts/ALPHA-LIVE/what-if/", {"t0-instrument": perp.pk, "t0-quantity": "-5"})
    assert refused.status_code == 403
    assert 'id="what-if-result"' not in refused.content.decode()


def test_the_web_what_if_draws_on_the_users_compute_budget(client, swept_demo, monkeypatch):
    from django.core.cache.backends.locmem import LocMemCache

    from clearing.api.throttling import ComputeRateThrottle, WindowRateThrottle
    from clearing.models import Instrument

    monkeypatch.setattr(WindowRateThrottle, "cache", LocMemCache(f"web-compute-{id(monkeypatch)}", {}))
    monkeypatch.setattr(ComputeRateThrottle, "rate", "2/min", raising=False)
    # Pinned mid-minute: a window boundary between the requests would refill the budget.
    monkeypatch.setattr(WindowRateThrottle, "timer", lambda self: 1_800_000_000 + 20.25)
    client.force_login(User.objects.get(username="alice"))
    perp = Instrument.objects.get(symbol="BTC-PERP")
    codes = [
        client.post(
            "/accounts/ALPHA-LIVE/what-if/", {"t0-instrument": perp.pk, "t0-quantity": "-5"}
        ).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
