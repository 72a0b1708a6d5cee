"""The agents on the member pages (issue #18 items 1–3): the account page shows the band policy,
its transfers and the hedges; traders set policies and endpoints there, viewers only read."""

from decimal import Decimal

import pytest
from django.test import Client

from agents.band import band_policy_apply
from agents.hedge import hedge_policy_evaluate
from agents.models import BandPolicy, HedgePolicy, WebhookEndpoint
from agents.services import band_policy_set, hedge_policy_create


@pytest.fixture
def pages(agents_world):
    trader, viewer = Client(), Client()
    trader.force_login(agents_world.trader)
    viewer.force_login(agents_world.viewer)
    return trader, viewer


def test_a_trader_sets_a_band_policy_on_the_account_page_and_sees_its_transfers(agents_world, pages):
    world, (trader, _viewer) = agents_world, pages
    form = {"search_level": "2.2", "target_level": "2.6", "release_level": "3.5", "assets": "usdc",
            "min_interval_seconds": "0"}  # fmt: skip

    saved = trader.post(f"/accounts/{world.margin.code}/band-policy/", form)

    assert saved.status_code == 302
    policy = BandPolicy.objects.get(account=world.margin)
    assert (policy.funding_account, policy.assets, policy.state) == (world.funding, ["USDC"], "on")
    world.move(BTC=58_800.0)
    transfer = band_policy_apply(account_id=world.margin.pk).transfer
    page = trader.get(f"/accounts/{world.margin.code}/?fragment=1").content.decode()
    assert f'data-transfer="{transfer.pk}"' in page
    assert "13440.000000 USDC" in page
    assert 'data-band-policy="on"' in page
    funding_page = trader.get(f"/accounts/{world.funding.code}/?fragment=1").content.decode()
    assert f'data-transfer="{transfer.pk}"' in funding_page
    assert "margins nothing" in funding_page


def test_the_pages_call_a_funding_account_a_funding_account_not_a_margin_mode(agents_world, pages):
    world, (trader, _viewer) = agents_world, pages

    overview = trader.get("/").content.decode()
    detail = trader.get(f"/accounts/{world.funding.code}/").content.decode()

    card = overview[overview.index(world.funding.code) :][:400]
    assert "Funding account" in card
    assert "Cross" not in card
    assert "<small>funding account</small>" in detail


def test_a_refused_band_policy_is_shown_with_its_error(agents_world, pages):
    trader, _viewer = pages
    answer = trader.post(
        f"/accounts/{agents_world.margin.code}/band-policy/",
        {"search_level": "2.6", "target_level": "2.2", "release_level": "3.5", "assets": "USDC",
         "min_interval_seconds": "60"},
    )  # fmt: skip
    assert answer.status_code == 400
    assert "Must be above the search level." in answer.content.decode()
    assert not BandPolicy.objects.exists()


def test_viewers_read_the_agents_but_change_nothing(agents_world, pages):
    world, (_trader, viewer) = agents_world, pages
    band_policy_set(
        account=world.margin, funding_account=world.funding, search_level="2.2", target_level="2.6",
        release_level="3.5", assets=["USDC"], user=world.trader,
    )  # fmt: skip
    hedge = hedge_policy_create(
        account=world.margin, underlying="BTC", instrument="BTC-PERP", threshold_usd=1000,
        max_quantity=Decimal(2), user=world.trader,
    )  # fmt: skip
    request = hedge_policy_evaluate(policy_id=hedge.pk)

    page = viewer.get(f"/accounts/{world.margin.code}/").content.decode()

    assert 'data-band-policy="on"' in page
    assert f'data-hedge="{request.pk}"' in page
    assert 'data-hedge-status="proposed"' in page
    assert "Sell 2 BTC-PERP" in page
    assert 'id="band-policy"' not in page  # no form
    assert viewer.post(f"/accounts/{world.margin.code}/band-policy/", {"off": "1"}).status_code == 403
    assert viewer.post(f"/accounts/{world.margin.code}/hedge-policies/{hedge.pk}/off/").status_code == 403
    assert viewer.post("/webhooks/", {"url": "https://hedges.example.org/a"}).status_code == 403
    assert HedgePolicy.objects.get().is_active


def test_a_trader_adds_a_hedge_policy_and_a_webhook_whose_secret_is_shown_once(agents_world, pages):
    world, (trader, _viewer) = agents_world, pages
    added = trader.post("/webhooks/", {"url": "https://hedges.example.org/a"})
    assert added.status_code == 201
    endpoint = WebhookEndpoint.objects.get()
    secret = added.context["secret"]
    assert secret in added.content.decode()
    assert secret not in trader.get("/webhooks/").content.decode()

    saved = trader.post(
        f"/accounts/{world.margin.code}/hedge-policies/",
        {"instrument": world.venue.btc_perp.pk, "target_delta_usd": "0", "threshold_usd": "10000",
         "max_quantity": "3", "min_interval_seconds": "300", "mode": "request", "endpoint": endpoint.pk},
    )  # fmt: skip
    assert saved.status_code == 302
    policy = HedgePolicy.objects.get()
    assert (policy.underlying.symbol, policy.mode, policy.endpoint) == ("BTC", "request", endpoint)
    trader.post(f"/accounts/{world.margin.code}/hedge-policies/{policy.pk}/off/")
    assert not HedgePolicy.objects.get().is_active
