"""Reads of risk parameters."""

from __future__ import annotations

from django.db.models import Prefetch

from riskengine.models import AssetParameters, ParameterSet, ParameterStatus, UnderlyingParameters


class NoActiveParameterSet(LookupError):
    """The venue has no active parameter set: nothing can be margined until one is approved."""


def parameter_sets_with_rows():
    """Parameter sets with every row ``to_parameters_form`` reads, in three extra queries."""
    return ParameterSet.objects.prefetch_related(
        Prefetch("underlying_parameters", UnderlyingParameters.objects.select_related("underlying")),
        Prefetch("asset_parameters", AssetParameters.objects.select_related("asset__underlying")),
        "haircut_brackets",
    )


def parameter_set_active() -> ParameterSet:
    parameter_set = parameter_sets_with_rows().filter(status=ParameterStatus.ACTIVE).first()
    if parameter_set is None:
        raise NoActiveParameterSet("No active risk parameter set: approve one in the admin.")
    return parameter_set
