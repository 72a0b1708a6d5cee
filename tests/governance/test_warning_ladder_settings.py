"""The foresight and warning-ladder settings are governed like the rest of a parameter set:
edited in a draft's admin form, validated in one place, copied into the next set."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from riskengine.models import ParameterSet
from riskengine.services import parameter_set_draft_from, parameter_set_validate
from tests.factories import draft_post_data, parameter_set_change_url


@pytest.fixture
def draft(active_set, ops):
    return parameter_set_draft_from(base=active_set, created_by=ops, version="v2")


def test_the_ladder_thresholds_are_edited_in_the_drafts_admin_form(client, draft, ops):
    client.force_login(ops)
    page = client.get(parameter_set_change_url(draft)).content.decode()
    assert "Liquidation foresight and the warning ladder" in page
    data = draft_post_data(client, draft, warning_watch_sigmas="4", warning_hysteresis="0.2", _continue="1")
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    draft.refresh_from_db()
    assert draft.warning_watch_sigmas == Decimal("4")
    assert draft.warning_hysteresis == Decimal("0.2")


def test_the_admin_form_refuses_a_watch_distance_below_the_warning_one(client, draft, ops):
    client.force_login(ops)
    data = draft_post_data(
        client, draft, warning_watch_sigmas="1", warning_warning_sigmas="1.5", _continue="1"
    )
    response = client.post(parameter_set_change_url(draft), data)
    assert response.status_code == 200
    assert "Must be above the warning distance." in response.content.decode()
    draft.refresh_from_db()
    assert draft.warning_watch_sigmas == Decimal("3")


def test_validation_names_each_threshold_out_of_order_or_range(draft):
    draft.warning_watch_ratio, draft.warning_warning_ratio = Decimal("1.1"), Decimal("1.2")
    draft.warning_hysteresis = Decimal("2")
    with pytest.raises(ValidationError) as refused:
        draft.full_clean(validate_unique=False)
    errors = refused.value.message_dict
    assert "warning_hysteresis" in errors
    draft.warning_hysteresis = Decimal("0.1")
    with pytest.raises(ValidationError) as refused:
        draft.full_clean(validate_unique=False)
    assert "warning_watch_ratio" in refused.value.message_dict


def test_the_database_refuses_thresholds_out_of_order(draft):
    with pytest.raises(IntegrityError):
        ParameterSet.objects.filter(pk=draft.pk).update(warning_warning_ratio=Decimal("0.9"))


def test_a_valid_set_passes_the_whole_sets_validation(draft):
    parameter_set_validate(parameter_set=draft)


def test_a_new_set_copies_the_ladder_from_the_one_it_is_based_on(active_set, ops):
    ParameterSet.objects.filter(pk=active_set.pk).update(warning_watch_sigmas=Decimal("5"))
    active_set.refresh_from_db()
    draft = parameter_set_draft_from(base=active_set, created_by=ops, version="v3")
    assert draft.warning_watch_sigmas == Decimal("5")
    assert draft.ladder_thresholds().watch_sigmas == 5.0
