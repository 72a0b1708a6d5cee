"""A parameter set the methodology refuses (v1.1 section 5) never gets past the admin form, the
proposal, the approval or the activation; each refusal names the field and changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from clearing.ops.models import OpsAlert
from riskengine.models import EventAction, ParameterSet, ParameterStatus, UnderlyingParameters
from riskengine.services import (
    INVALID_SET_ALERT,
    parameter_set_activate_due,
    parameter_set_approve,
    parameter_set_draft_from,
    parameter_set_propose,
)
from tests.factories import draft_post_data, parameter_set_change_url


@pytest.fixture
def draft(active_set, ops):
    return parameter_set_draft_from(base=active_set, created_by=ops, version="v2")


def btc_row(parameter_set) -> UnderlyingParameters:
    return parameter_set.underlying_parameters.get(underlying__symbol="BTC")


def inline_prefix(client, parameter_set) -> str:
    """The admin inline's form prefix of the BTC row (``underlying_parameters-0``)."""
    data = draft_post_data(client, parameter_set)
    for name, value in data.items():
        if (
            name.startswith("underlying_parameters-")
            and name.endswith("-id")
            and value == str(btc_row(parameter_set).pk)
        ):
            return name.removesuffix("-id")
    raise AssertionError("no BTC row in the change form")


def post_edit(client, parameter_set, **fields):
    data = draft_post_data(client, parameter_set, _continue="1", **fields)
    return client.post(parameter_set_change_url(parameter_set), data)


def test_a_psr_of_0_9_is_refused_at_the_admin_form_naming_the_psr_and_nothing_changes(client, draft, ops):
    client.force_login(ops)
    prefix = inline_prefix(client, draft)
    events = draft.events.count()

    response = post_edit(client, draft, **{f"{prefix}-psr": "0.9"})

    assert response.status_code == 200  # the form again, with the error
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert "psr" in errors
    assert "zero or below" in errors["psr"][0]
    assert btc_row(draft).psr == Decimal("0.15")
    assert draft.events.count() == events


@pytest.mark.parametrize("text", ["０.1", "٠.١", "0_1", "0.1_5"])
def test_a_number_that_is_not_plain_ascii_is_refused_at_the_admin_form_naming_the_field(
    client, draft, ops, text
):
    client.force_login(ops)
    prefix = inline_prefix(client, draft)

    response = post_edit(client, draft, **{f"{prefix}-psr": text})

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert "plain decimal" in errors["psr"][0]
    assert btc_row(draft).psr == Decimal("0.15")


def test_price_steps_above_50_are_refused_at_the_admin_form_naming_the_field(client, draft, ops):
    client.force_login(ops)

    response = post_edit(client, draft, price_steps="300000")

    assert response.status_code == 200
    assert "price_steps" in response.context["adminform"].form.errors
    draft.refresh_from_db()
    assert draft.price_steps == 4


def test_a_psr_of_0_9_is_refused_at_the_proposal_naming_the_field(draft, ops):
    UnderlyingParameters.objects.filter(pk=btc_row(draft).pk).update(psr=Decimal("0.9"))

    with pytest.raises(ValidationError) as raised:
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="wider BTC scan")

    assert "parameters.underlyings.BTC.psr" in raised.value.message_dict
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.DRAFT
    assert not draft.events.filter(action=EventAction.PROPOSED).exists()


def slipped_through(parameter_set, ops, status) -> ParameterSet:
    """A set proposed (and maybe approved) before the rule existed: its psr is 0.9 already."""
    UnderlyingParameters.objects.filter(pk=btc_row(parameter_set).pk).update(psr=Decimal("0.9"))
    ParameterSet.objects.filter(pk=parameter_set.pk).update(status=status, proposed_by=ops)
    return ParameterSet.objects.get(pk=parameter_set.pk)


def test_a_set_that_slipped_through_the_proposal_is_refused_at_the_approval(draft, ops, approver):
    proposed = slipped_through(draft, ops, ParameterStatus.PROPOSED)

    with pytest.raises(ValidationError) as raised:
        parameter_set_approve(parameter_set=proposed, approved_by=approver)

    assert "parameters.underlyings.BTC.psr" in raised.value.message_dict
    proposed.refresh_from_db()
    assert proposed.status == ParameterStatus.PROPOSED
    assert ParameterSet.objects.get(status=ParameterStatus.ACTIVE).version == "v1"


def test_an_approved_set_that_fails_validation_is_not_activated_and_raises_a_critical_alert(
    draft, ops, active_set
):
    approved = slipped_through(draft, ops, ParameterStatus.APPROVED)
    ParameterSet.objects.filter(pk=approved.pk).update(effective_at=active_set.activated_at)

    assert parameter_set_activate_due() == []

    approved.refresh_from_db()
    assert approved.status == ParameterStatus.APPROVED
    assert ParameterSet.objects.get(status=ParameterStatus.ACTIVE).pk == active_set.pk
    alert = OpsAlert.objects.get(kind=INVALID_SET_ALERT, key="v2", resolved_at=None)
    assert alert.message.startswith("CRITICAL")
    assert "parameters.underlyings.BTC.psr" in alert.message
