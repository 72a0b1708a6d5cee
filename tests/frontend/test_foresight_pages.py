"""Liquidation foresight on the member pages: the level on the overview's card, and on the account
page (and its live fragment, which the page re-reads on ``margin.warning``) the gauge of distance per
underlying, the liquidation prices, the probability and the look-ahead excess."""

import io

import pytest
from django.core.management import call_command

from accounts.models import User
from frontend.templatetags.clearing_format import chance, usd
from riskengine.sweeps.foresight import foresight_accounts_grade
from riskengine.sweeps.models import AccountForesight
from riskengine.sweeps.services import sweep_accounts_run
from tests.factories import btc_observe, thin_account_make


@pytest.fixture
def graded_demo(db):
    call_command("seed_demo", stdout=io.StringIO())
    account = thin_account_make(code="ALPHA-LIVE")
    btc_observe(fraction=0.03)
    sweep = sweep_accounts_run(account_ids=[account.pk], cause="test: BTC drop")
    foresight_accounts_grade(sweep_id=sweep.pk, account_ids=[account.pk])
    return AccountForesight.objects.get(account=account)


def test_the_account_page_shows_the_level_gauge_prices_probability_and_lookahead(client, graded_demo):
    client.force_login(User.objects.get(username="alice"))
    for url in ("/accounts/ALPHA-LIVE/", "/accounts/ALPHA-LIVE/?fragment=1"):
        html = client.get(url).content.decode()
        assert 'id="foresight"' in html
        assert f'data-level="{graded_demo.level}"' in html
        assert 'class="chart gauge"' in html
        assert 'data-field="liquidation-prices"' in html
        for row in graded_demo.by_underlying:
            assert f'data-underlying="{row["underlying"]}"' in html
            if row["down"]:
                assert f"{row['down']['price']:,.2f}" in html
        assert 'data-field="probability"' in html
        assert f'data-field="probability">{chance(graded_demo.probability)}' in html
        assert 'data-field="lookahead-excess"' in html
        assert usd(graded_demo.lookahead_excess) in html


def test_the_overview_card_carries_the_level(client, graded_demo):
    client.force_login(User.objects.get(username="alice"))
    html = client.get("/").content.decode()
    card = html[html.index('data-account-card="ALPHA-LIVE"') :]
    card = card[: card.index("</a>")]
    assert f'class="ladder ladder-{graded_demo.level}"' in card
    if graded_demo.driver:
        assert graded_demo.driver in card


def test_an_account_never_graded_shows_foresight_computed_for_the_page(client, db):
    call_command("seed_demo", stdout=io.StringIO())
    account = thin_account_make(code="ALPHA-LIVE")
    sweep_accounts_run(account_ids=[account.pk], cause="test")
    client.force_login(User.objects.get(username="alice"))

    html = client.get("/accounts/ALPHA-LIVE/").content.decode()

    assert 'id="foresight"' in html
    assert 'class="chart gauge"' in html
    assert not AccountForesight.objects.filter(account=account).exists()


def test_another_member_sees_no_foresight_of_the_account(client, graded_demo):
    client.force_login(User.objects.get(username="bob"))
    assert client.get("/accounts/ALPHA-LIVE/").status_code == 404
    assert client.get("/accounts/ALPHA-LIVE/?fragment=1").status_code == 404
    assert "ALPHA-LIVE" not in client.get("/").content.decode()


def test_a_tiny_probability_reads_as_below_a_tenth_of_a_percent_not_as_zero():
    assert chance(0.00002) == "< 0.1 %"
    assert chance(0.0) == "< 0.1 %"
    assert chance(0.0051) == "0.5 %"
    assert chance(0.25) == "25.0 %"
    assert chance(None) == "—"
