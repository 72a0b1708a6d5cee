"""A figure that is not a number never passes as healthy in a sweep: the account is in liquidation
with its liquidation suspended and a critical ops alert, the outbox never sees NaN, and every other
account is swept as usual (issue #12)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from clearing.api.serializers import AccountMarginOut, SnapshotOut
from clearing.models import OutboxEvent, Trade
from clearing.ops.models import OpsAlert
from riskengine.reference import reference_clear
from riskengine.selectors import _parameters_form, parameter_set_active
from riskengine.sweeps import liquidation as liquidation_module
from riskengine.sweeps import services
from riskengine.sweeps.models import AccountMargin, CallStatus, Liquidation, MarginCall, MarginSnapshot
from tests.factories import account_with_btc_long, moved

ALERT = "margin_not_finite"


@pytest.fixture
def not_finite(monkeypatch):
    """``not_finite(code)``: from now on the engine's figures for the account ``code`` are NaN (as
    from a parameter set that slipped through validation); ``not_finite(None)`` stops it."""
    engine = services.compute_margin
    broken: set[str] = set()

    def compute(margin_input):
        portfolios = margin_input.portfolios
        bad = [k for k, code in enumerate(portfolios.ids) if code in broken]
        quantity = np.where(np.isin(portfolios.position_portfolio, bad), np.nan, portfolios.position_quantity)
        return engine(replace(margin_input, portfolios=replace(portfolios, position_quantity=quantity)))

    monkeypatch.setattr(services, "compute_margin", compute)
    monkeypatch.setattr(liquidation_module, "compute_margin", compute)

    def set_broken(code: str | None) -> None:
        broken.clear()
        if code is not None:
            broken.add(code)

    return set_broken


def in_margin_call(code: str, quotes):
    """A cross account long 1 BTC whose cash sits between MM and IM: a sweep opens a call."""
    btc = parameter_set_active().to_parameters_form()["underlyings"]["BTC"]
    spot = quotes.underlying_prices["BTC"]
    return account_with_btc_long(code=code, usd=str(round(spot * (btc["imf"] + btc["mmf"]) / 2)), btc="1")


def open_alert(account) -> OpsAlert | None:
    return OpsAlert.objects.filter(kind=ALERT, key=str(account.pk), resolved_at=None).first()


def test_a_nan_figure_puts_the_account_in_liquidation_suspended_with_a_critical_alert(quotes, not_finite):
    broken = in_margin_call("T-NAN", quotes)
    other = in_margin_call("T-CALL", quotes)
    not_finite("T-NAN")

    services.sweep_accounts_run(account_ids=[broken.pk, other.pk], cause="test", quotes=quotes)

    current = AccountMargin.objects.get(account=broken)
    assert current.status == "liquidation"
    assert math.isnan(current.initial_margin)
    assert not MarginCall.objects.filter(account=broken).exists()  # no call of a NaN amount
    assert not Liquidation.objects.filter(account=broken).exists()  # liquidation suspended
    alert = open_alert(broken)
    assert alert.message.startswith("CRITICAL")
    assert "liquidation is suspended" in alert.message
    assert "initial_margin" in alert.message
    (pushed,) = OutboxEvent.objects.filter(group=f"account-{broken.pk}", type="margin.updated")
    assert pushed.payload["status"] == "liquidation"
    assert pushed.payload["equity"] is None
    assert "initial_margin" in pushed.payload["not_finite"]
    # The other account is swept as usual.
    assert AccountMargin.objects.get(account=other).status == "margin_call"
    assert MarginCall.objects.get(account=other).status == CallStatus.OPEN
    assert open_alert(other) is None
    # Its stored snapshot reads back through the API's serializers as JSON (null figures).
    snapshot = MarginSnapshot.objects.select_related("sweep", "parameter_set").get(account=broken)
    data = SnapshotOut(snapshot).data
    assert data["status"] == "liquidation"
    assert data["initial_margin"] is None
    json.dumps(data, allow_nan=False, default=str)
    assert AccountMarginOut(current).data["equity"] is None


def test_an_open_call_is_neither_cured_nor_escalated_while_its_figures_are_not_finite(quotes, not_finite):
    account = in_margin_call("T-WAIT", quotes)
    services.sweep_accounts_run(account_ids=[account.pk], cause="first", quotes=quotes)
    call = MarginCall.objects.get(account=account, status=CallStatus.OPEN)
    MarginCall.objects.filter(pk=call.pk).update(deadline=timezone.now() - timedelta(minutes=1))
    not_finite("T-WAIT")

    for cause in ("nan", "nan again"):
        services.sweep_accounts_run(account_ids=[account.pk], cause=cause, quotes=quotes)

    call.refresh_from_db()
    assert call.status == CallStatus.OPEN  # the cure period is over, but nothing is decided on NaN
    assert not Liquidation.objects.filter(account=account).exists()
    suspended = [e.cause for e in call.events.all() if e.cause.startswith("liquidation suspended")]
    assert len(suspended) == 1  # logged once, not after every sweep
    assert "figures not finite" in suspended[0]
    assert open_alert(account).raise_count == 2

    not_finite(None)  # the figures are finite again: the call follows its normal course
    services.sweep_accounts_run(account_ids=[account.pk], cause="finite", quotes=quotes)
    call.refresh_from_db()
    assert call.status == CallStatus.ESCALATED
    assert Liquidation.objects.filter(account=account, status="in_progress").count() == 1
    assert open_alert(account) is None


def test_a_full_sweep_with_a_nan_account_finishes_and_sweeps_every_other_account(quotes, not_finite):
    broken = in_margin_call("T-NANFULL", quotes)
    not_finite("T-NANFULL")

    sweep, outcome = services.sweep_full_run(cause="test", quotes=quotes, shard_size=25)

    assert sweep.status == "done"
    assert outcome.not_finite == 1
    snapshots = MarginSnapshot.objects.filter(sweep=sweep)
    assert snapshots.count() == outcome.accounts
    assert snapshots.get(account=broken).status == "liquidation"
    others = snapshots.exclude(account=broken).values_list("equity", "initial_margin")
    assert all(math.isfinite(e) and math.isfinite(im) for e, im in others)
    assert open_alert(broken) is not None
    for payload in OutboxEvent.objects.values_list("payload", flat=True):
        json.dumps(payload, allow_nan=False)


def test_a_liquidation_is_not_executed_on_figures_that_are_not_finite(quotes, not_finite):
    account = account_with_btc_long(code="T-NANLIQ", usd="20000")
    crashed = moved(quotes, BTC=quotes.underlying_prices["BTC"] * 0.93)
    services.sweep_accounts_run(account_ids=[account.pk], cause="crash", quotes=crashed)
    liquidation = Liquidation.objects.get(account=account)
    trades = Trade.objects.count()
    not_finite("T-NANLIQ")

    result = liquidation_module.liquidation_execute(liquidation_id=liquidation.pk, quotes=crashed)

    assert result.status == "in_progress"
    assert Trade.objects.count() == trades
    assert "not executed" in open_alert(account).message


def test_no_sweep_starts_on_an_active_set_that_fails_validation_and_ops_get_a_critical_alert(quotes):
    from decimal import Decimal

    from riskengine.models import UnderlyingParameters
    from riskengine.sweeps.models import Sweep

    active = parameter_set_active()  # activated before psr * max(1, |multiple|) < 1 was a rule
    UnderlyingParameters.objects.filter(parameter_set=active, underlying__symbol="BTC").update(
        psr=Decimal("0.9")
    )
    # The set was like this when activated: nothing in this process has read it before (the demo's
    # seed has: its first validation run), as a set's rows never change once frozen.
    _parameters_form.cache_clear()
    reference_clear()
    sweeps = Sweep.objects.count()

    assert services.sweep_full_due() is None

    assert Sweep.objects.count() == sweeps
    alert = OpsAlert.objects.get(kind="parameter_set_invalid", key=active.version, resolved_at=None)
    assert alert.message.startswith("CRITICAL")
    assert "parameters.underlyings.BTC.psr" in alert.message
