"""The agents in the admin (issue #18 item 3): venue staff see every policy, transfer, hedge and
delivery read-only; ops suspend and resume a policy with a reason, which is audited."""

import pytest
from django.test import Client
from django.urls import reverse

from agents.band import band_policy_apply
from agents.hedge import hedge_policy_evaluate
from agents.models import BandPolicy, PolicyChange, WebhookEndpoint
from agents.services import band_policy_set, hedge_policy_create, webhook_endpoint_create
from tests.factories import user_make

MODELS = ["bandpolicy", "autotransfer", "hedgepolicy", "hedgerequest", "webhookendpoint", "policychange"]


@pytest.fixture
def configured(agents_world):
    world = agents_world
    band = band_policy_set(
        account=world.margin, funding_account=world.funding, search_level="2.2", target_level="2.6",
        release_level="3.5", assets=["USDC"], min_interval_seconds=0, user=world.trader,
    )  # fmt: skip
    world.move(BTC=58_800.0)
    band_policy_apply(account_id=world.margin.pk)
    webhook_endpoint_create(member=world.margin.member, url="https://hedges.example.org/a", user=world.trader)
    hedge = hedge_policy_create(
        account=world.margin, underlying="BTC", instrument="BTC-PERP", threshold_usd=1000, max_quantity=1,
        user=world.trader,
    )  # fmt: skip
    hedge_policy_evaluate(policy_id=hedge.pk)
    return band


def staff(role: str) -> Client:
    client = Client()
    client.force_login(user_make(username=f"{role}-admin", role=role))
    return client


@pytest.mark.parametrize("role", ["ops", "risk_approver"])
def test_venue_staff_see_every_agents_page_read_only(configured, role):
    client = staff(role)
    for model in MODELS:
        listing = client.get(reverse(f"admin:agents_{model}_changelist"))
        assert listing.status_code == 200, model
        assert reverse(f"admin:agents_{model}_add") not in listing.content.decode(), model
    page = client.get(reverse("admin:agents_webhookendpoint_change", args=[WebhookEndpoint.objects.get().pk]))
    assert page.status_code == 200
    assert "secret_encrypted" not in page.content.decode()


def test_ops_suspend_a_policy_with_a_reason_and_risk_approvers_cannot(configured):
    url = reverse("admin:agents_bandpolicy_suspend", args=[configured.pk])
    assert staff("risk_approver").post(url, {"reason": "no"}).status_code == 403
    ops = staff("ops")
    assert ops.post(url, {"reason": ""}).status_code == 200  # the form again: a reason is required
    assert ops.post(url, {"reason": "funding account under review"}).status_code == 302

    policy = BandPolicy.objects.get()
    assert (policy.state, policy.suspension_reason) == ("suspended", "funding account under review")
    change = PolicyChange.objects.filter(action="suspended").get()
    assert (change.actor.username, change.note) == ("ops-admin", "funding account under review")
    ops.post(reverse("admin:agents_bandpolicy_resume", args=[policy.pk]), {"reason": "reviewed"})
    assert BandPolicy.objects.get().state == "on"


def test_members_reach_no_agents_admin_page(configured, agents_world):
    client = Client()
    client.force_login(agents_world.trader)
    response = client.get(reverse("admin:agents_bandpolicy_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
