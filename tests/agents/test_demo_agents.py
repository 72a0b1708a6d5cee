"""The demo venue shows both agents (issue #18 item 6): an account kept in its band by its funding
account, and a hedge policy in propose mode."""

import pytest
from django.core.management import call_command

from accounts.models import MarginAccount
from agents import demo
from agents.models import AutoTransfer, BandPolicy, HedgePolicy, HedgeRequest
from agents.runs import accounts_act
from clearing.marketdata.selectors import market_quotes_current
from riskengine.sweeps.models import AccountMargin, MarginCall
from riskengine.sweeps.services import sweep_accounts_run, sweep_full_run


@pytest.fixture
def seeded(db, capsys):
    call_command("seed_demo")
    return capsys.readouterr().out


def test_the_first_sweep_tops_the_demo_band_account_up_and_proposes_the_demo_hedge(seeded):
    funding = MarginAccount.objects.get(code=demo.FUNDING_ACCOUNT)
    band = BandPolicy.objects.get(account__code=demo.BAND_ACCOUNT)
    hedge = HedgePolicy.objects.get(account__code=demo.HEDGE_ACCOUNT)
    assert (funding.kind, funding.member.code, band.funding_account) == ("funding", "ALPHA", funding)
    assert (hedge.mode, hedge.state, band.state) == ("propose", "on", "on")
    assert f"{demo.BAND_ACCOUNT}: kept between" in seeded

    quotes = market_quotes_current()
    sweep_full_run(cause="the first sweep", quotes=quotes)
    outcome = accounts_act(account_ids=[band.account_id, hedge.account_id])

    assert outcome == {"top_up": 1, "hedges": 1}
    transfer = AutoTransfer.objects.get(account=band.account)
    assert transfer.ratio_before < float(band.search_level)
    assert transfer.ratio_after == pytest.approx(float(band.target_level), rel=1e-6)
    sweep_accounts_run(account_ids=[band.account_id], cause="the transfer", quotes=quotes)
    margin = AccountMargin.objects.get(account=band.account)
    assert margin.equity / margin.maintenance_margin == pytest.approx(float(band.target_level), rel=1e-6)
    proposal = HedgeRequest.objects.get(policy=hedge)
    assert proposal.status == "proposed"
    assert proposal.initial_margin_after <= proposal.initial_margin_before
    assert abs(proposal.delta_usd_after) < abs(proposal.delta_usd_before)
    assert not MarginCall.objects.exists()
