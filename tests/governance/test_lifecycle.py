from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from clearing.ledger import AppendOnlyError
from riskengine.models import (
    EventAction,
    FrozenParameterSet,
    ParameterSet,
    ParameterSetEvent,
    ParameterStatus,
)
from riskengine.selectors import parameter_set_active
from riskengine.services import (
    parameter_set_activate_due,
    parameter_set_approve,
    parameter_set_draft_from,
    parameter_set_propose,
    parameter_set_reject,
    parameter_set_withdraw,
)
from riskengine.signals import parameter_set_activated
from riskengine.tasks import parameter_sets_activate_due


@pytest.fixture
def draft(active_set, ops):
    return parameter_set_draft_from(base=active_set, created_by=ops, version="v2")


@pytest.fixture
def proposed(draft, ops):
    return parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="Wider BTC scan")


@pytest.fixture
def activations():
    received = []

    def receiver(sender, parameter_set, **kwargs):
        received.append(parameter_set.version)

    parameter_set_activated.connect(receiver)
    yield received
    parameter_set_activated.disconnect(receiver)


def actions(parameter_set):
    return list(parameter_set.events.order_by("at", "pk").values_list("action", "actor__username", "note"))


def test_a_draft_copies_every_parameter_of_its_base(active_set, draft):
    assert draft.status == ParameterStatus.DRAFT
    assert draft.based_on == active_set
    assert draft.to_parameters_form() == active_set.to_parameters_form() | {"version": "v2"}
    assert draft.underlying_parameters.get(underlying__symbol="BTC").max_age_seconds == (
        active_set.underlying_parameters.get(underlying__symbol="BTC").max_age_seconds
    )


def test_proposal_freezes_the_set_and_records_who_and_why(proposed, ops):
    proposed.refresh_from_db()
    assert proposed.status == ParameterStatus.PROPOSED
    assert proposed.proposed_by == ops
    assert proposed.reason == "Wider BTC scan"
    proposed.mm_ratio = Decimal("0.5")
    with pytest.raises(FrozenParameterSet):
        proposed.save()
    row = proposed.underlying_parameters.first()
    row.psr = Decimal("0.3")
    with pytest.raises(FrozenParameterSet):
        row.save()
    with pytest.raises(FrozenParameterSet):
        proposed.haircut_brackets.first().delete()


def test_an_invalid_draft_cannot_be_proposed_and_stays_a_draft(draft, ops):
    draft.correlation = {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.8], [0.7, 1.0]]}
    draft.save()
    with pytest.raises(ValidationError) as error:
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    assert "parameters.correlation.matrix" in error.value.message_dict
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.DRAFT
    assert not draft.events.filter(action=EventAction.PROPOSED).exists()


def test_a_draft_with_brackets_for_an_asset_outside_the_set_cannot_be_proposed(draft, ops):
    draft.asset_parameters.get(asset__symbol="USDC").delete()  # its brackets stay behind
    with pytest.raises(ValidationError) as error:
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    assert "haircut_brackets" in error.value.message_dict


def test_a_proposal_needs_a_reason(draft, ops):
    with pytest.raises(ValidationError) as error:
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="  ")
    assert "reason" in error.value.message_dict


def test_the_proposer_cannot_approve_their_own_set(draft, db):
    both = User.objects.create_superuser(username="root", password="x-Str0ng!", role="ops")
    parameter_set_propose(parameter_set=draft, proposed_by=both, reason="r")
    with pytest.raises(ValidationError) as error:
        parameter_set_approve(parameter_set=draft, approved_by=both)
    assert "approved_by" in error.value.message_dict
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.PROPOSED


def test_the_database_refuses_self_approval(proposed, ops):
    with pytest.raises(IntegrityError), transaction.atomic():
        ParameterSet.objects.filter(pk=proposed.pk).update(status=ParameterStatus.APPROVED, decided_by=ops)


def test_an_ops_user_without_the_approver_role_cannot_approve(proposed, ops2):
    with pytest.raises(ValidationError) as error:
        parameter_set_approve(parameter_set=proposed, approved_by=ops2)
    assert "approved_by" in error.value.message_dict
    with pytest.raises(ValidationError):
        parameter_set_reject(parameter_set=proposed, rejected_by=ops2, note="no")


def test_an_approver_cannot_propose(draft, approver):
    with pytest.raises(ValidationError) as error:
        parameter_set_propose(parameter_set=draft, proposed_by=approver, reason="r")
    assert "proposed_by" in error.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_approval_activates_at_once_and_fires_the_signal_after_commit(
    proposed, active_set, approver, activations
):
    with transaction.atomic():
        parameter_set_approve(parameter_set=proposed, approved_by=approver, note="ok")
        assert activations == []  # not before the commit
    assert activations == ["v2"]
    active_set.refresh_from_db()
    assert active_set.status == ParameterStatus.SUPERSEDED
    assert parameter_set_active().version == "v2"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_activation_never_fires_the_signal(proposed, approver, activations):
    def approve_then_fail():
        with transaction.atomic():
            parameter_set_approve(parameter_set=proposed, approved_by=approver)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        approve_then_fail()
    assert activations == []
    proposed.refresh_from_db()
    assert proposed.status == ParameterStatus.PROPOSED


def test_a_future_effective_time_waits_for_the_scheduled_activation(
    draft, ops, approver, active_set, django_capture_on_commit_callbacks, activations
):
    now = timezone.now()
    draft.effective_at = now + timedelta(hours=1)
    draft.save()
    parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    with django_capture_on_commit_callbacks(execute=True):
        parameter_set_approve(parameter_set=draft, approved_by=approver)
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.APPROVED
    assert activations == []
    assert parameter_set_activate_due(now=now + timedelta(minutes=59)) == []
    with django_capture_on_commit_callbacks(execute=True):
        activated = parameter_set_activate_due(now=now + timedelta(hours=1))
    assert [s.version for s in activated] == ["v2"]
    assert activations == ["v2"]
    active_set.refresh_from_db()
    assert active_set.status == ParameterStatus.SUPERSEDED
    assert ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).count() == 1


def test_when_two_approved_sets_are_due_only_the_latest_takes_effect(active_set, ops, approver):
    now = timezone.now()
    for version, minutes in (("v2", 10), ("v3", 20)):
        draft = parameter_set_draft_from(base=active_set, created_by=ops, version=version)
        draft.effective_at = now + timedelta(minutes=minutes)
        draft.save()
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
        parameter_set_approve(parameter_set=draft, approved_by=approver)
    assert parameter_sets_activate_due.apply().get() == []  # nothing due yet at the real now
    assert [s.version for s in parameter_set_activate_due(now=now + timedelta(minutes=30))] == ["v3"]
    statuses = dict(ParameterSet.objects.values_list("version", "status"))
    assert statuses == {"v1": "superseded", "v2": "superseded", "v3": "active"}


def test_rejection_needs_a_reason_and_keeps_the_set(proposed, approver):
    with pytest.raises(ValidationError):
        parameter_set_reject(parameter_set=proposed, rejected_by=approver, note="")
    parameter_set_reject(parameter_set=proposed, rejected_by=approver, note="psr too wide")
    proposed.refresh_from_db()
    assert (proposed.status, proposed.decided_by, proposed.decision_note) == (
        "rejected",
        approver,
        "psr too wide",
    )
    with pytest.raises(ValidationError):
        parameter_set_approve(parameter_set=proposed, approved_by=approver)


def test_withdrawal_by_ops_is_kept_but_an_active_set_cannot_be_withdrawn(
    proposed, active_set, ops2, approver
):
    with pytest.raises(ValidationError):
        parameter_set_withdraw(parameter_set=proposed, withdrawn_by=approver, note="no")  # not ops
    parameter_set_withdraw(parameter_set=proposed, withdrawn_by=ops2, note="superseded by a better idea")
    proposed.refresh_from_db()
    assert proposed.status == ParameterStatus.WITHDRAWN
    with pytest.raises(ValidationError):
        parameter_set_withdraw(parameter_set=active_set, withdrawn_by=ops2, note="x")
    with pytest.raises(FrozenParameterSet):
        proposed.delete()


def test_a_system_proposal_can_be_approved_by_any_approver(active_set, approver):
    draft = parameter_set_draft_from(base=active_set, created_by=None, version="calib-1")
    parameter_set_propose(parameter_set=draft, proposed_by=None, reason="psr recalibration")
    parameter_set_approve(parameter_set=draft, approved_by=approver)
    draft.refresh_from_db()
    assert (draft.origin, draft.status, draft.proposed_by) == ("calibration", "active", None)


def test_the_audit_trail_records_every_step_with_who_and_why(proposed, active_set, approver, ops):
    parameter_set_approve(parameter_set=proposed, approved_by=approver, note="looks right")
    assert actions(proposed) == [
        ("created", "ops1", "Copied from v1"),
        ("proposed", "ops1", "Wider BTC scan"),
        ("approved", "risk1", "looks right"),
        ("activated", "risk1", "Approved and effective"),
    ]
    assert actions(active_set)[-1] == ("superseded", "risk1", "Superseded by v2")
    transitions = list(proposed.events.values_list("from_status", "to_status"))
    assert transitions[1:] == [("draft", "proposed"), ("proposed", "approved"), ("approved", "active")]


def test_audit_events_are_append_only_in_the_model_and_the_database(proposed):
    event = proposed.events.first()
    event.note = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        ParameterSetEvent.objects.filter(pk=event.pk).update(note="rewritten")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        ParameterSetEvent.objects.filter(pk=event.pk).delete()
