"""Market-data and sweeps admin pages: staff see them, members do not, ledgers stay read-only,
ops resolve alerts."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from clearing.marketdata.models import IndexPrice, PriceObservation, PriceSource
from clearing.ops.alerts import ops_alert_raise
from clearing.ops.models import OpsAlert
from riskengine.sweeps import services
from riskengine.sweeps.models import Liquidation, MarginCall, MarginSnapshot, Sweep
from tests.factories import margin_activity_make

MODELS = [
    ("marketdata", "pricesource"),
    ("marketdata", "priceobservation"),
    ("marketdata", "indexprice"),
    ("marketdata", "indexstate"),
    ("ops", "opsalert"),
    ("sweeps", "sweep"),
    ("sweeps", "marginsnapshot"),
    ("sweeps", "accountmargin"),
    ("sweeps", "margincall"),
    ("sweeps", "liquidation"),
    ("ops", "uncovereddeficit"),
]
READ_ONLY = [m for m in MODELS if m != ("marketdata", "pricesource")]


@pytest.fixture
def swept(quotes):
    services.sweep_full_run(cause="test", quotes=quotes, shard_size=40)
    margin_activity_make(quotes, 1)
    ops_alert_raise(kind="feed_gap", key="feed-2", message="feed-2 silent")


def rows(swept):
    """One stored row of each model, for its change page."""
    return {
        ("marketdata", "pricesource"): PriceSource.objects.first(),
        ("marketdata", "priceobservation"): PriceObservation.objects.first(),
        ("marketdata", "indexprice"): IndexPrice.objects.first(),
        ("ops", "opsalert"): OpsAlert.objects.first(),
        ("sweeps", "sweep"): Sweep.objects.first(),
        ("sweeps", "marginsnapshot"): MarginSnapshot.objects.first(),
        ("sweeps", "margincall"): MarginCall.objects.first(),
        ("sweeps", "liquidation"): Liquidation.objects.first(),
    }


@pytest.mark.parametrize("username", ["ops", "risk"])
def test_staff_see_every_market_data_and_sweeps_page(client, swept, username):
    from accounts.models import User

    client.force_login(User.objects.get(username=username))
    for app, model in MODELS:
        response = client.get(reverse(f"admin:{app}_{model}_changelist"), {"q": "BTC"})
        assert response.status_code == 200, (app, model)
    for (app, model), obj in rows(swept).items():
        assert obj is not None, model
        assert client.get(reverse(f"admin:{app}_{model}_change", args=[obj.pk])).status_code == 200, model
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:sweeps_margincall_changelist") in index
    assert reverse("admin:ops_opsalert_changelist") in index


def test_members_reach_none_of_them(client, swept, trader):
    client.force_login(trader)
    for app, model in MODELS:
        response = client.get(reverse(f"admin:{app}_{model}_changelist"))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_ledgers_and_sweep_results_are_read_only_even_for_ops(client, swept, ops):
    client.force_login(ops)
    for app, model in READ_ONLY:
        assert client.get(reverse(f"admin:{app}_{model}_add")).status_code == 403, model
    call = MarginCall.objects.first()
    page = client.get(reverse("admin:sweeps_margincall_change", args=[call.pk])).content.decode()
    assert 'name="_save"' not in page
    assert escape(call.events.first().cause) in page  # the event log inline
    assert (
        client.post(reverse("admin:sweeps_margincall_delete", args=[call.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert MarginCall.objects.filter(pk=call.pk).exists()


def test_ops_switch_a_price_source_off_but_cannot_rename_or_add_one(client, demo, ops):
    source = PriceSource.objects.get(name="feed-2")
    client.force_login(ops)
    url = reverse("admin:marketdata_pricesource_change", args=[source.pk])
    response = client.post(url, {"is_active": "", "name": "renamed"})
    assert response.status_code == 302
    source.refresh_from_db()
    assert (source.is_active, source.name) == (False, "feed-2")
    assert client.get(reverse("admin:marketdata_pricesource_add")).status_code == 403


def test_ops_resolve_alerts_and_risk_approvers_cannot(client, demo, ops, approver):
    alert = ops_alert_raise(kind="feed_gap", key="feed-2", message="feed-2 silent")
    url = reverse("admin:ops_opsalert_changelist")
    data = {"action": "resolve", "_selected_action": [alert.pk]}

    client.force_login(approver)
    assert "Resolve the selected alerts" not in client.get(url).content.decode()
    client.post(url, data)
    alert.refresh_from_db()
    assert alert.resolved_at is None

    client.force_login(ops)
    assert "Resolve the selected alerts" in client.get(url).content.decode()
    response = client.post(url, data, follow=True)
    assert "1 alert(s) resolved." in response.content.decode()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
