import re

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse

from accounts.models import Role, User
from clearing.models import Underlying
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.services import (
    TRANSITIONS,
    parameter_set_approve,
    parameter_set_draft_from,
    parameter_set_propose,
    parameter_set_reject,
    parameter_set_withdraw,
)
from tests import factories
from tests.factories import draft_post_data, parameter_set_action_url, parameter_set_change_url


@pytest.fixture
def draft(active_set, ops):
    return parameter_set_draft_from(base=active_set, created_by=ops, version="v2")


def test_members_cannot_reach_the_parameter_admin(client, active_set, member_a):
    client.force_login(factories.user_make(username="alice", member=member_a))
    urls = (
        parameter_set_change_url(active_set),
        reverse("ops_dashboard"),
        parameter_set_action_url(active_set, "impact"),
    )
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_an_ops_user_edits_a_draft_and_the_edit_is_in_the_history(client, draft, ops):
    client.force_login(ops)
    data = draft_post_data(client, draft, mm_ratio="0.75", correlation__0__1="0.6", _continue="1")
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    draft.refresh_from_db()
    assert draft.mm_ratio == pytest.approx(0.75)
    assert draft.correlation == {"underlyings": ["BTC", "ETH"], "matrix": [[1.0, 0.6], [0.6, 1.0]]}
    edit = draft.events.get(action="edited")
    assert edit.actor == ops
    assert "mm_ratio" in str(edit.changes) or "Mm ratio" in str(edit.changes)


def test_an_invalid_correlation_is_refused_with_the_nearest_valid_matrix_offered(client, venue, ops):
    draft = ParameterSet.objects.create(version="tri", created_by=ops, correlation={})
    for symbol in ("BTC", "ETH"):
        draft.underlying_parameters.create(underlying=getattr(venue, symbol.lower()), psr="0.1")
    client.force_login(ops)
    # With two underlyings every |rho| <= 1 is valid: break the bound.
    data = draft_post_data(client, draft, correlation__0__1="1.4", _continue="1")
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Not a valid correlation matrix" in page
    assert "Accept the nearest valid matrix" in page
    draft.refresh_from_db()
    assert draft.correlation == {}  # nothing saved
    # One click: the nearest valid matrix is saved.
    data["correlation__accept_nearest"] = "1"
    del data["_continue"]
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 302, re.findall(
        r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode(), re.S
    )
    draft.refresh_from_db()
    matrix = draft.correlation["matrix"]
    assert matrix[0][0] == matrix[1][1] == 1.0
    assert matrix[0][1] == matrix[1][0] == pytest.approx(1.0)


def test_a_non_psd_matrix_is_refused_naming_the_problem(client, venue, ops):
    sol = Underlying.objects.create(symbol="SOL", name="Solana")
    draft = ParameterSet.objects.create(version="tri", created_by=ops, correlation={})
    for underlying in (venue.btc, venue.eth, sol):
        draft.underlying_parameters.create(underlying=underlying, psr="0.1")
    client.force_login(ops)
    # Strongly correlated pairs with one strongly anti-correlated: each |rho| <= 1 but not PSD.
    data = draft_post_data(
        client,
        draft,
        correlation__0__1="0.9",
        correlation__0__2="0.9",
        correlation__1__2="-0.9",
        _continue="1",
    )
    page = client.post(parameter_set_change_url(draft), data).content.decode()
    assert "not positive semi-definite" in page
    assert "Accept the nearest valid matrix" in page


def test_haircut_brackets_must_increase_with_a_single_open_one(client, draft, ops, venue):
    client.force_login(ops)
    data = draft_post_data(client, draft, _continue="1")
    # Make the USDC brackets' bounded slice open too: two open brackets for one asset.
    usdc_rows = [
        key[: -len("-asset")]
        for key, value in data.items()
        if key.startswith("haircut_brackets-") and key.endswith("-asset") and value == str(venue.usdc.pk)
    ]
    bounded = next(prefix for prefix in usdc_rows if data[f"{prefix}-up_to"])
    data[f"{bounded}-up_to"] = ""
    page = client.post(parameter_set_change_url(draft), data).content.decode()
    assert "only one bracket may be open" in page
    assert draft.haircut_brackets.filter(asset=venue.usdc, up_to__isnull=True).count() == 1


def test_propose_then_approve_by_a_second_user_entirely_in_the_admin(
    client, draft, ops, approver, active_set, django_capture_on_commit_callbacks
):
    client.force_login(ops)
    assert client.get(parameter_set_action_url(draft, "propose")).status_code == 200
    response = client.post(
        parameter_set_action_url(draft, "propose"), {"note": "Wider scan after the March crash"}
    )
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.PROPOSED
    # The proposer sees no Approve button and cannot post one.
    assert client.post(parameter_set_action_url(draft, "approve"), {"note": "self"}).status_code == 403
    # A proposed set is read-only in the admin.
    assert client.post(parameter_set_change_url(draft), {"mm_ratio": "0.1"}).status_code == 403

    client.force_login(approver)
    page = client.get(parameter_set_change_url(draft)).content.decode()
    assert parameter_set_action_url(draft, "approve") in page
    approve_page = client.get(parameter_set_action_url(draft, "approve"))
    assert approve_page.status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(parameter_set_action_url(draft, "approve"), {"note": "Reviewed the impact"})
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.ACTIVE
    history = client.get(parameter_set_change_url(draft)).content.decode()
    for text in ("ops1", "risk1", "Wider scan after the March crash", "Reviewed the impact"):
        assert text in history


def test_an_ops_user_without_the_approver_role_cannot_approve_in_the_admin(client, draft, ops, ops2):
    parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    client.force_login(ops2)
    assert client.get(parameter_set_action_url(draft, "approve")).status_code == 403
    assert client.post(parameter_set_action_url(draft, "approve"), {"note": "x"}).status_code == 403
    assert client.post(parameter_set_action_url(draft, "reject"), {"note": "x"}).status_code == 403
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.PROPOSED


def test_an_approver_cannot_edit_or_propose(client, draft, approver):
    client.force_login(approver)
    assert client.get(parameter_set_change_url(draft)).status_code == 200  # view only
    assert client.post(parameter_set_action_url(draft, "propose"), {"note": "x"}).status_code == 403
    assert client.get(reverse("admin:riskengine_parameterset_add")).status_code == 403


def test_new_draft_from_a_set_opens_the_copy(client, active_set, ops):
    client.force_login(ops)
    response = client.post(
        parameter_set_action_url(active_set, "new_draft"), {"version": "2026-12-01.1", "note": "tweak"}
    )
    assert response.status_code == 302
    copy = ParameterSet.objects.get(version="2026-12-01.1")
    assert response["Location"] == parameter_set_change_url(copy)
    assert copy.based_on == active_set
    assert copy.status == ParameterStatus.DRAFT


def test_a_rejection_without_a_reason_is_refused_on_the_page(client, draft, ops, approver):
    parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    client.force_login(approver)
    response = client.post(parameter_set_action_url(draft, "reject"), {"note": ""})
    assert response.status_code == 200
    assert "Say why the proposal is rejected." in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == ParameterStatus.PROPOSED


def test_nobody_can_delete_a_parameter_set(client, draft, db):
    client.force_login(factories.user_make(username="root", role=Role.OPS))
    assert client.get(reverse("admin:riskengine_parameterset_delete", args=[draft.pk])).status_code == 403


def test_the_dashboard_shows_the_active_set_and_pending_proposals(client, draft, ops, approver):
    parameter_set_propose(parameter_set=draft, proposed_by=ops, reason="r")
    client.force_login(approver)
    page = client.get(reverse("ops_dashboard")).content.decode()
    assert "Active:" in page
    assert "v1" in page
    assert parameter_set_change_url(draft) in page
    assert parameter_set_action_url(draft, "impact") in page


class _Accepted(Exception):
    """Raised inside a savepoint once a service has taken an action, to undo it."""


RUN = {
    "propose": lambda s, user: parameter_set_propose(parameter_set=s, proposed_by=user, reason="r"),
    "approve": lambda s, user: parameter_set_approve(parameter_set=s, approved_by=user, note="n"),
    "reject": lambda s, user: parameter_set_reject(parameter_set=s, rejected_by=user, note="n"),
    "withdraw": lambda s, user: parameter_set_withdraw(parameter_set=s, withdrawn_by=user, note="n"),
}


def service_accepts(action: str, parameter_set: ParameterSet, user) -> bool:
    try:
        with transaction.atomic():
            RUN[action](parameter_set, user)
            raise _Accepted
    except _Accepted:
        return True
    except ValidationError:
        return False


@pytest.mark.parametrize("status", ParameterStatus.values)
def test_the_admin_shows_a_transition_button_exactly_when_the_service_would_take_it(
    client, active_set, draft, ops, approver, approver2, status
):
    both = User.objects.create_superuser(username="root", password="x-Str0ng!", role=Role.OPS)
    if status == ParameterStatus.ACTIVE:
        ParameterSet.objects.filter(pk=active_set.pk).update(status=ParameterStatus.SUPERSEDED)
    # Proposed by ``both``, who holds every permission: only the four-eyes rule can refuse them.
    ParameterSet.objects.filter(pk=draft.pk).update(status=status, proposed_by=both)
    draft.refresh_from_db()
    assert set(RUN) == set(TRANSITIONS)
    taken = 0
    for user in (ops, approver, approver2, both):
        client.force_login(user)
        page = client.get(parameter_set_change_url(draft)).content.decode()
        for action in TRANSITIONS:
            accepted = service_accepts(action, draft, user)
            assert (parameter_set_action_url(draft, action) in page) == accepted, (user.username, action)
            assert (client.get(parameter_set_action_url(draft, action)).status_code == 200) == accepted
            taken += accepted
    # The rule is not vacuous: something is allowed from every status a transition starts from.
    assert (taken > 0) == any(status in t.from_statuses for t in TRANSITIONS.values())
