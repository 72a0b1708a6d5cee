"""Money leaves the insurance fund only by maker-checker in the admin: ops propose (amount, asset,
reason), a different user with the risk_approver role approves, and only then is there a custody
withdrawal request, which the custodian sends. Every step is audited and append-only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from accounts.custody import fund_withdrawal_propose, fund_withdrawal_reject
from accounts.models import (
    CollateralBalance,
    FundWithdrawalDecision,
    FundWithdrawalProposal,
    Role,
    Withdrawal,
)
from accounts.services import user_create
from riskengine.withdrawals import fund_withdrawal_approve

V1 = "/api/v1"
ADD = "admin:accounts_fundwithdrawalproposal_add"


def usd(account) -> Decimal:
    return CollateralBalance.objects.get(account=account, asset__symbol="USD").amount


def decide_url(proposal) -> str:
    return reverse("admin:accounts_fundwithdrawalproposal_decide", args=[proposal.pk])


@pytest.fixture
def proposal(world, fund):
    return fund_withdrawal_propose(
        asset=world.venue.usd,
        amount=Decimal(250_000),
        reason="Recapitalise the house account after the March default",
        destination="venue treasury",
        proposed_by=world["ops"].user,
    )


def test_ops_propose_a_different_risk_approver_approves_and_custody_sends(world, fund, client):
    ops, risk = world["ops"].user, world["risk"].user
    client.force_login(ops)
    response = client.post(
        reverse(ADD),
        {
            "asset": world.venue.usd.pk,
            "amount": "250000",
            "reason": "Recapitalise the house",
            "destination": "t",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    proposal = FundWithdrawalProposal.objects.get()
    assert (proposal.proposed_by, proposal.amount, proposal.state) == (ops, 250_000, "proposed")
    # Proposed, nothing moved: no custody request, the fund untouched.
    assert usd(fund) == Decimal(5_000_000)
    assert not Withdrawal.objects.exists()

    client.force_login(risk)
    page = client.get(reverse("admin:accounts_fundwithdrawalproposal_change", args=[proposal.pk]))
    assert decide_url(proposal) in page.content.decode()
    response = client.post(decide_url(proposal), {"note": "checked with treasury", "approve": "Approve"})
    assert response.status_code == 302
    decision = FundWithdrawalDecision.objects.get(proposal=proposal)
    assert (decision.decision, decision.decided_by, decision.note) == (
        "approved",
        risk,
        "checked with treasury",
    )
    withdrawal = decision.withdrawal
    assert (withdrawal.account, withdrawal.amount, withdrawal.state) == (fund, 250_000, "requested")
    assert usd(fund) == Decimal(4_750_000)  # reserved at once

    queue = world["custodian"].get(f"{V1}/custody/withdrawals/").json()["results"]
    assert [(w["id"], w["account"], w["destination"]) for w in queue] == [
        (withdrawal.pk, "VENUE-INSURANCE", "t")
    ]
    response = world["custodian"].post(
        f"{V1}/custody/withdrawals/{withdrawal.pk}/sent/", {"reference": "wire-9"}
    )
    assert response.status_code == 201
    assert Withdrawal.objects.get(pk=withdrawal.pk).state == "sent"
    assert usd(fund) == Decimal(4_750_000)


def test_the_proposer_can_never_approve_its_own_proposal(world, proposal, client):
    """Even after ops made the proposer a risk approver (ops edit users), it cannot decide its own
    proposal: the service, the admin page and the database each refuse."""
    proposer = proposal.proposed_by
    proposer.role = Role.RISK_APPROVER
    proposer.save()

    with pytest.raises(ValidationError) as refused:
        fund_withdrawal_approve(proposal=proposal, approved_by=proposer)
    assert "cannot decide it" in refused.value.message_dict["approved_by"][0]
    with pytest.raises(ValidationError):
        fund_withdrawal_reject(proposal=proposal, rejected_by=proposer, note="no")

    client.force_login(proposer)
    assert client.post(decide_url(proposal), {"approve": "Approve"}).status_code == 403

    with pytest.raises(IntegrityError), transaction.atomic():
        FundWithdrawalDecision.objects.create(
            proposal=proposal,
            decision="rejected",
            proposed_by=proposer,
            decided_by=proposer,
            note="by myself",
            created_at=proposal.created_at,
        )
    assert not FundWithdrawalDecision.objects.exists()
    assert not Withdrawal.objects.exists()
    assert usd(proposal.account) == Decimal(5_000_000)


def test_only_ops_propose_and_only_risk_approvers_decide(world, fund, proposal, client):
    with pytest.raises(ValidationError) as refused:
        fund_withdrawal_propose(
            asset=world.venue.usd, amount=Decimal(1), reason="x", proposed_by=world["risk"].user
        )
    assert "proposed_by" in refused.value.message_dict
    second_ops = user_create(username="ops-2", password=None, role=Role.OPS)
    with pytest.raises(ValidationError):
        fund_withdrawal_approve(proposal=proposal, approved_by=second_ops)

    client.force_login(world["risk"].user)
    assert client.get(reverse(ADD)).status_code == 403
    client.force_login(second_ops)
    assert client.get(decide_url(proposal)).status_code == 403
    assert not Withdrawal.objects.exists()


def test_a_rejection_needs_a_reason_and_closes_the_proposal(world, proposal, client):
    client.force_login(world["risk"].user)
    response = client.post(decide_url(proposal), {"note": "", "reject": "Reject"})
    assert response.status_code == 200
    assert "Required." in response.content.decode()
    assert not FundWithdrawalDecision.objects.exists()

    response = client.post(decide_url(proposal), {"note": "not needed any more", "reject": "Reject"})
    assert response.status_code == 302
    assert FundWithdrawalProposal.objects.get(pk=proposal.pk).state == "rejected"
    response = client.post(decide_url(proposal), {"approve": "Approve"})
    assert "already rejected" in response.content.decode()
    assert not Withdrawal.objects.exists()
    assert usd(proposal.account) == Decimal(5_000_000)


def test_an_approval_beyond_what_the_fund_holds_now_is_refused_and_writes_nothing(world, proposal, client):
    other = fund_withdrawal_propose(
        asset=world.venue.usd,
        amount=Decimal(4_800_000),
        reason="Second payout",
        proposed_by=world["ops"].user,
    )
    fund_withdrawal_approve(proposal=other, approved_by=world["risk"].user)
    client.force_login(world["risk"].user)

    response = client.post(decide_url(proposal), {"approve": "Approve"})

    assert response.status_code == 200
    assert "available to withdraw" in response.content.decode()
    assert proposal.decision_or_none is None
    assert Withdrawal.objects.count() == 1
    assert usd(proposal.account) == Decimal(200_000)


def test_a_proposal_is_validated_naming_the_field(world, fund):
    for amount, reason, field in (
        (Decimal(0), "x", "amount"),
        (Decimal(6_000_000), "x", "amount"),
        (Decimal(1), "  ", "reason"),
    ):
        with pytest.raises(ValidationError) as refused:
            fund_withdrawal_propose(
                asset=world.venue.usd, amount=amount, reason=reason, proposed_by=world["ops"].user
            )
        assert list(refused.value.message_dict) == [field]
    assert not FundWithdrawalProposal.objects.exists()
