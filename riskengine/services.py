"""Writing risk parameter sets."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import Asset, User
from clearing.models import Underlying
from riskengine.core.errors import DocumentError
from riskengine.core.params import parse_parameters
from riskengine.models import (
    AssetParameters,
    HaircutBracket,
    ParameterSet,
    ParameterStatus,
    UnderlyingParameters,
)

GLOBAL_FIELDS = ("mm_ratio", "offset_cap", "lookahead_days", "rate", "price_steps", "min_vol")


def _dec(value) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


@transaction.atomic
def parameter_set_create(
    *,
    form: dict,
    created_by: User | None,
    origin: str = "manual",
    reason: str = "",
    based_on: ParameterSet | None = None,
    underlying_settings: dict[str, dict] | None = None,
    operational: dict | None = None,
) -> ParameterSet:
    """Create a draft set from a methodology ``parameters`` form (validated by the engine first).

    ``underlying_settings`` carries per-underlying fields outside the form (the oracle thresholds,
    by symbol); ``operational`` the set-wide operational settings. Both default to ``based_on``'s
    values, then to the model defaults.
    """
    try:
        parse_parameters(form)
    except DocumentError as error:
        raise ValidationError({error.field: error.message}) from None
    if ParameterSet.objects.filter(version=form["version"]).exists():
        raise ValidationError({"version": f"Version {form['version']!r} already exists."})
    underlyings = Underlying.objects.in_bulk(list(form["underlyings"]), field_name="symbol")
    assets = Asset.objects.in_bulk(list(form.get("assets", {})), field_name="symbol")
    for symbol in form["underlyings"]:
        if symbol not in underlyings:
            raise ValidationError({f"underlyings.{symbol}": "Unknown underlying."})
    for symbol in form.get("assets", {}):
        if symbol not in assets:
            raise ValidationError({f"assets.{symbol}": "Unknown asset."})

    vol_term, standard = form.get("vol_term", {}), form.get("standard", {})
    operational = {
        "cure_period_minutes": based_on.cure_period_minutes if based_on else 60,
        "sweep_interval_seconds": based_on.sweep_interval_seconds if based_on else 60,
    } | (operational or {})
    parameter_set = ParameterSet.objects.create(
        version=form["version"],
        origin=origin,
        reason=reason,
        based_on=based_on,
        created_by=created_by,
        correlation=form["correlation"],
        **{name: _dec(form[name]) for name in GLOBAL_FIELDS if name in form and name != "price_steps"},
        **({"price_steps": int(form["price_steps"])} if "price_steps" in form else {}),
        **{
            name: _dec(vol_term[name])
            for name in ("pivot_days", "short_power", "long_power")
            if name in vol_term
        },
        **{
            name: _dec(standard[name])
            for name in ("option_imf", "option_min", "option_mmf")
            if name in standard
        },
        **operational,
    )
    previous = {}
    if based_on is not None:
        previous = {
            row.underlying.symbol: row for row in based_on.underlying_parameters.select_related("underlying")
        }
    oracle_fields = (
        "max_age_seconds",
        "max_deviation",
        "min_sources",
        "breaker_move",
        "breaker_window_seconds",
        "event_move",
    )
    rows = []
    for symbol, values in form["underlyings"].items():
        oracle = (
            {name: getattr(previous[symbol], name) for name in oracle_fields} if symbol in previous else {}
        )
        oracle |= (underlying_settings or {}).get(symbol, {})
        rows.append(
            UnderlyingParameters(
                parameter_set=parameter_set,
                underlying=underlyings[symbol],
                extreme=values.get(
                    "extreme", [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}]
                ),
                **{name: _dec(value) for name, value in values.items() if name != "extreme"},
                **oracle,
            )
        )
    UnderlyingParameters.objects.bulk_create(rows)
    AssetParameters.objects.bulk_create(
        AssetParameters(
            parameter_set=parameter_set,
            asset=assets[symbol],
            liability_addon=_dec(values.get("liability_addon", 0)),
        )
        for symbol, values in form.get("assets", {}).items()
    )
    HaircutBracket.objects.bulk_create(
        HaircutBracket(
            parameter_set=parameter_set,
            asset=assets[symbol],
            up_to=None if bracket["up_to"] is None else _dec(bracket["up_to"]),
            haircut=_dec(bracket["haircut"]),
        )
        for symbol, values in form.get("assets", {}).items()
        for bracket in values.get("haircuts", [])
    )
    return parameter_set


@transaction.atomic
def parameter_set_bootstrap(*, form: dict, reason: str = "Initial parameter set") -> ParameterSet:
    """Install the venue's first set, active at once. Refused when any set is active: every later
    change goes through proposal and approval by a second person."""
    if ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).exists():
        raise ValidationError("A parameter set is already active; propose a change instead.")
    parameter_set = parameter_set_create(form=form, created_by=None, origin="bootstrap", reason=reason)
    now = timezone.now()
    parameter_set.status = ParameterStatus.ACTIVE
    parameter_set.effective_at = parameter_set.activated_at = now
    parameter_set.save(update_fields=["status", "effective_at", "activated_at"])
    return parameter_set
