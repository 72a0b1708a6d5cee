"""A proposal's backtest and stress (methodology sections 7 and 8) are shown beside the active set's
before anyone may approve it; a red venue backtest needs a written reason; the hypothetical stress
scenarios are governed with the set."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from clearing.marketdata.models import IndexClose
from riskengine.models import FrozenParameterSet, ParameterSet, StressScenario
from riskengine.services import (
    parameter_set_approve,
    parameter_set_bootstrap,
    parameter_set_draft_from,
    parameter_set_propose,
    parameter_set_refusal,
)
from riskengine.validation.models import ValidationKind, ValidationRun
from riskengine.validation.services import validation_run_complete
from tests import factories
from tests.factories import draft_post_data, parameter_set_action_url, parameter_set_change_url


@pytest.fixture
def book(venue, active_set, member_a, member_b):
    return factories.validation_book_make(venue, member_a, member_b)


@pytest.fixture
def wider(active_set, ops, book):
    """A proposal with scan ranges and standard fractions wide enough for the history's worst two
    days (green, where the active set is red on this book), validated when proposed (a small
    venue: at once)."""
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    draft.underlying_parameters.update(psr=Decimal("0.45"), imf=Decimal("0.5"), mmf=Decimal("0.25"))
    return parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="Wider scans")


def thin_proposal(active_set, ops):
    """A proposal whose psr and standard fractions are far too small for the history: red."""
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="thin")
    draft.underlying_parameters.update(psr=Decimal("0.01"), imf=Decimal("0.002"), mmf=Decimal("0.001"))
    return parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="Thinner margins")


def test_proposing_validates_the_set_and_the_active_set_beside_it(wider, active_set):
    runs = ValidationRun.objects.filter(proposal=wider, kind=ValidationKind.PROPOSAL)

    assert {run.parameter_set for run in runs} == {wider, active_set}
    assert {run.status for run in runs} == {"done"}
    assert {run.mode for run in runs} == {"fixed"}
    own, current = runs.get(parameter_set=wider), runs.get(parameter_set=active_set)
    assert own.history["days"] == current.history["days"]
    assert own.valuation_time == current.valuation_time
    # Wider scans hold more IM against the same history: fewer exceptions.
    assert own.report["pooled"]["exceptions"] < current.report["pooled"]["exceptions"]
    assert (own.light, current.light) == ("green", "red")


def test_the_proposal_page_shows_both_sets_results_before_the_approver_acts(client, wider, approver):
    client.force_login(approver)

    page = client.get(parameter_set_change_url(wider)).content.decode()
    approve = client.get(parameter_set_action_url(wider, "approve")).content.decode()

    for text in (page, approve):
        assert "Backtest and stress of v2 beside the active v1" in text
        assert "Accounts pooled: coverage (target 99 %)" in text
        assert "Aggregate book: traffic light" in text
        assert "Cover-2" in text
        assert "Worst accounts" in text
    own = ValidationRun.objects.get(proposal=wider, parameter_set=wider)
    assert f"{own.report['pooled']['coverage']:.2%}" in page


def test_approval_waits_for_a_validation_still_running_on_the_workers(
    client, active_set, ops, approver, book
):
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    with override_settings(CLEARING_VALIDATION_SYNC_ACCOUNTS=0):  # a large venue: on the workers
        proposed = parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="x")

    refusal = parameter_set_refusal(parameter_set=proposed, action="approve", user=approver)
    assert refusal.message_dict == {
        "validation": ["The backtest and stress of this proposal are still running."]
    }
    with pytest.raises(ValidationError) as raised:
        parameter_set_approve(parameter_set=proposed, approved_by=approver)
    assert "validation" in raised.value.message_dict
    client.force_login(approver)
    assert (
        parameter_set_action_url(proposed, "approve")
        not in client.get(parameter_set_change_url(proposed)).content.decode()
    )

    for run in ValidationRun.objects.filter(proposal=proposed):
        validation_run_complete(run=run)
    parameter_set_approve(parameter_set=proposed, approved_by=approver, note="the same set, red as it was")
    proposed.refresh_from_db()
    assert proposed.status == "active"


def test_a_failed_validation_refuses_approval_until_it_is_run_again(client, active_set, ops, approver, book):
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    IndexClose.objects.filter(symbol="ETH").delete()  # the stored history lost a series
    proposed = parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="x")
    refusal = parameter_set_refusal(parameter_set=proposed, action="approve", user=approver)
    assert "prices.ETH: missing" in refusal.message_dict["validation"][0]

    factories.price_history_load(symbols=("ETH",))
    client.force_login(approver)
    page = client.get(parameter_set_change_url(proposed)).content.decode()
    assert "prices.ETH: missing" in page
    assert client.post(parameter_set_action_url(proposed, "validate")).status_code == 302

    assert parameter_set_refusal(parameter_set=proposed, action="approve", user=approver) is None


def test_a_proposal_validated_beside_a_set_since_replaced_is_validated_again(
    wider, active_set, ops, approver
):
    other = parameter_set_draft_from(base=active_set, created_by=ops, version="v3")
    parameter_set_propose(parameter_set=other, proposed_by=ops, reason="another")
    parameter_set_approve(
        parameter_set=ParameterSet.objects.get(pk=other.pk), approved_by=approver, note="ok"
    )

    refusal = parameter_set_refusal(parameter_set=wider, action="approve", user=approver)
    assert "active set v3" in refusal.message_dict["validation"][0]


def test_a_red_proposal_is_approved_only_with_a_written_reason_kept_in_the_history(
    active_set, ops, approver, book
):
    thin = thin_proposal(active_set, ops)
    own = ValidationRun.objects.get(proposal=thin, parameter_set=thin)
    assert own.light == "red"

    with pytest.raises(ValidationError) as raised:
        parameter_set_approve(parameter_set=thin, approved_by=approver, note="  ")
    assert "red" in raised.value.message_dict["note"][0]
    assert ParameterSet.objects.get(pk=thin.pk).status == "proposed"

    parameter_set_approve(parameter_set=thin, approved_by=approver, note="Stress week: temporary relief")
    approved = thin.events.get(action="approved")
    assert "Venue backtest red" in approved.note
    assert f"{own.report['pooled']['exceptions']} exceptions" in approved.note
    assert approved.note.endswith("because: Stress week: temporary relief")


def test_a_green_proposal_keeps_the_approvers_note_as_it_is(wider, approver):
    assert ValidationRun.objects.get(proposal=wider, parameter_set=wider).light == "green"

    parameter_set_approve(parameter_set=wider, approved_by=approver, note="fine")

    assert wider.events.get(action="approved").note == "fine"


# --- Hypothetical stress scenarios are part of the set ---------------------------------------------


def test_a_new_set_starts_with_the_methodologys_default_scenarios(venue):
    parameter_set = parameter_set_bootstrap(form=factories.venue_parameters_form("first"))

    rows = list(parameter_set.stress_scenarios.all())
    assert [row.name for row in rows] == [
        "all crypto -40%, ivs x1.5",
        "BTC -30%, ETH -45%, SOL -60%, ivs x2",
        "every stablecoin at 0.87",
        "all crypto +50%, ivs x1.5",
    ]
    assert (rows[1].underlyings, rows[1].others, rows[1].iv_factor) == (
        {"BTC": 0.7, "ETH": 0.55, "SOL": 0.4},
        Decimal("0.4"),
        Decimal(2),
    )
    assert rows[2].stablecoin_price == Decimal("0.87")


def test_scenarios_are_copied_into_a_draft_edited_there_and_frozen_once_proposed(
    client, active_set, ops, book
):
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    assert draft.stress_scenarios.count() == active_set.stress_scenarios.count() == 4
    client.force_login(ops)
    prefix = "stress_scenarios"
    data = draft_post_data(
        client,
        draft,
        _continue="1",
        **{
            f"{prefix}-4-number": "4",
            f"{prefix}-4-name": "BTC -70%",
            f"{prefix}-4-underlyings": '{"BTC": 0.3}',
            f"{prefix}-4-others": "1",
            f"{prefix}-4-stablecoin_price": "",
            f"{prefix}-4-iv_factor": "2",
            f"{prefix}-TOTAL_FORMS": "5",
        },
    )
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert draft.stress_scenarios.filter(name="BTC -70%").exists()
    assert "BTC -70%" in str(draft.events.get(action="edited").changes)

    proposed = parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="a harsher crash")
    run = ValidationRun.objects.get(proposal=proposed, parameter_set=proposed)
    assert "BTC -70%" in [s["name"] for s in run.report["scenarios"]]
    assert run.report["scenarios"][-1]["prices"]["BTC"] == pytest.approx(0.3)
    with pytest.raises(FrozenParameterSet):
        proposed.stress_scenarios.get(name="BTC -70%").save()


def test_a_scenario_with_a_non_positive_factor_is_refused_naming_it(active_set, ops):
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v2")
    StressScenario.objects.create(parameter_set=draft, number=9, name="broken", underlyings={"BTC": -1})

    with pytest.raises(ValidationError) as raised:
        parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="x")
    assert "stress_scenarios.broken.underlyings" in raised.value.message_dict
