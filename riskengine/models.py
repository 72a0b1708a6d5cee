"""Risk parameter sets (methodology section 6): versioned, effective-dated, maker-checker governed.

A ``ParameterSet`` holds everything the methodology's ``parameters`` form holds — global scalars
here, one ``UnderlyingParameters`` row per underlying (scan ranges, standard-rule fractions, basis,
short-option minimum, concentration, and the oracle's safety thresholds), one ``AssetParameters`` row
and its ``HaircutBracket`` rows per collateral asset, and the correlation matrix — plus operational
settings (cure period, sweep interval) and the hypothetical stress scenarios of model validation
(``StressScenario`` rows, methodology v1.1 section 8). ``parameter_set.to_parameters_form()``
produces the exact JSON form of the margin document, so every stored margin can be replayed (the
scenarios are not part of it: the margin document has no such key).

Sets are never deleted or edited once proposed: a change is a new set (see ``riskengine.services``).
Exactly one set is ``active`` at any time (a partial unique index enforces "at most one"). Every
transition and every edit of a draft is recorded in the append-only ``ParameterSetEvent`` log.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clearing.ledger import AppendOnlyModel
from riskengine.core.ladder import LadderThresholds
from riskengine.core.params import DEFAULT_EXTREME
from riskengine.core.stress import HypotheticalScenario

# Model validation's models live in their package; importing them here registers them with the
# app (Django reads an app's models from its ``models`` module).
from riskengine.validation.models import (  # noqa: F401
    AccountBacktest,
    AccountStress,
    ValidationRun,
    ValidationShard,
)


class FrozenParameterSet(Exception):
    """Raised when code tries to change the parameters of a set that is no longer a draft."""


def _decimal(digits: int = 20, places: int = 10, **kwargs):
    return models.DecimalField(max_digits=digits, decimal_places=places, **kwargs)


class ParameterStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved (awaiting its effective time)"
    ACTIVE = "active", "Active"
    SUPERSEDED = "superseded", "Superseded"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"


class ParameterOrigin(models.TextChoices):
    MANUAL = "manual", "Manual"
    CALIBRATION = "calibration", "Calibration"
    BOOTSTRAP = "bootstrap", "Bootstrap"


# The columns a status transition writes; everything else is a parameter, frozen after the draft.
GOVERNANCE_FIELDS = frozenset(
    {
        "status",
        "effective_at",
        "proposed_by",
        "proposed_at",
        "decided_by",
        "decided_at",
        "decision_note",
        "activated_at",
        "reason",
    }
)


# The governed settings of liquidation foresight and the warning ladder (copied into each new set).
LADDER_FIELDS = (
    "warning_watch_sigmas",
    "warning_warning_sigmas",
    "warning_watch_ratio",
    "warning_warning_ratio",
    "warning_hysteresis",
)
FORESIGHT_FIELDS = ("foresight_horizon_days", "foresight_below_ratio", *LADDER_FIELDS)


class ParameterSet(models.Model):
    version = models.CharField(max_length=40, unique=True, help_text="e.g. 2026-11-24.1")
    status = models.CharField(max_length=12, choices=ParameterStatus.choices, default=ParameterStatus.DRAFT)
    effective_at = models.DateTimeField(null=True, blank=True, help_text="When an approved set takes effect.")
    based_on = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    origin = models.CharField(
        max_length=20,
        choices=ParameterOrigin.choices,
        default=ParameterOrigin.MANUAL,
        help_text="manual, calibration or bootstrap: where the proposal came from.",
    )
    reason = models.TextField(blank=True, help_text="Why this change is proposed.")

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    proposed_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    # Global methodology parameters (section 4b, 5).
    mm_ratio = _decimal(default=0.8)
    offset_cap = _decimal(default=0.8)
    lookahead_days = _decimal(default=1)
    rate = _decimal(default=0)
    price_steps = models.PositiveSmallIntegerField(default=4)
    min_vol = _decimal(default=0.01)
    pivot_days = _decimal(default=30)
    short_power = _decimal(default=0.30)
    long_power = _decimal(default=0.13)
    option_imf = _decimal(default=0.15)
    option_min = _decimal(default=0.10)
    option_mmf = _decimal(default=0.075)
    # The correlation matrix, {"underlyings": [...], "matrix": [[...]]} as in the margin document.
    correlation = models.JSONField(default=dict)

    # Operational settings.
    cure_period_minutes = models.PositiveIntegerField(default=60)
    sweep_interval_seconds = models.PositiveIntegerField(default=60)
    # Below this value (USD at the oracle's prices) the insurance fund raises an ops alert
    # (riskengine.sweeps.insurance); a negative value is always a critical alert. 0: only that one.
    insurance_fund_floor = _decimal(
        28,
        10,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Ops are alerted when the insurance fund's value (USD) falls below this floor.",
    )
    # Liquidation foresight and the warning ladder (docs/foresight.md, "On the platform";
    # riskengine.core.ladder): which accounts are graded after every full sweep, over which
    # horizon, and the ladder's thresholds. Validated together in ``clean`` (the one place
    # ``parameter_set_validate`` and the admin form both go through) and by the constraints below.
    foresight_horizon_days = _decimal(
        8,
        4,
        default=1,
        validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(30)],
        help_text="Horizon of the probability of liquidation, in calendar days (0.01 to 30).",
    )
    foresight_below_ratio = _decimal(
        12,
        4,
        default=4,
        validators=[MinValueValidator(1)],
        help_text="After every full sweep, foresight is computed for the accounts whose equity / MM is "
        "below this level (and those not at ok); at least 1.",
    )
    warning_watch_sigmas = _decimal(
        8, 4, default=3, help_text="Watch below this distance, in forecast daily standard deviations."
    )
    warning_warning_sigmas = _decimal(
        8, 4, default=Decimal("1.5"), help_text="Warning below this distance (daily standard deviations)."
    )
    warning_watch_ratio = _decimal(8, 4, default=3, help_text="Watch below this equity / MM.")
    warning_warning_ratio = _decimal(
        8, 4, default=Decimal("2.2"), help_text="Warning below this equity / MM."
    )
    warning_hysteresis = _decimal(
        6,
        4,
        default=Decimal("0.1"),
        validators=[MinValueValidator(0), MaxValueValidator(Decimal("0.9"))],
        help_text="A level is left only when past its thresholds by this fraction of them (0 to 0.9).",
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [("approve_parameterset", "Can approve or reject a proposed parameter set")]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="parameterset_one_active"
            ),
            models.CheckConstraint(
                name="parameterset_status_valid", condition=Q(status__in=[c.value for c in ParameterStatus])
            ),
            models.CheckConstraint(
                name="parameterset_mm_ratio_range", condition=Q(mm_ratio__gt=0, mm_ratio__lte=1)
            ),
            models.CheckConstraint(
                name="parameterset_offset_cap_range", condition=Q(offset_cap__gte=0, offset_cap__lte=1)
            ),
            models.CheckConstraint(name="parameterset_price_steps_positive", condition=Q(price_steps__gte=1)),
            models.CheckConstraint(
                name="parameterset_insurance_fund_floor_not_negative",
                condition=Q(insurance_fund_floor__gte=0),
                violation_error_message="The insurance fund floor cannot be negative.",
            ),
            models.CheckConstraint(
                name="parameterset_warning_ladder_ordered",
                condition=Q(
                    warning_watch_sigmas__gt=models.F("warning_warning_sigmas"),
                    warning_warning_sigmas__gt=0,
                    warning_watch_ratio__gt=models.F("warning_warning_ratio"),
                    warning_warning_ratio__gt=1,
                    warning_hysteresis__gte=0,
                    warning_hysteresis__lte=Decimal("0.9"),
                    foresight_horizon_days__gt=0,
                    foresight_below_ratio__gte=1,
                ),
                violation_error_message="The warning ladder's thresholds are out of order or out of range.",
            ),
            models.CheckConstraint(
                name="parameterset_not_self_approved",
                condition=Q(decided_by__isnull=True)
                | Q(proposed_by__isnull=True)
                | ~Q(decided_by=models.F("proposed_by"))
                | Q(status__in=["withdrawn"]),
                violation_error_message="The proposer of a parameter set cannot approve or reject it.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.status})"

    def save(self, *args, **kwargs):
        # Once proposed, a set's parameters are frozen: only the governance columns may change, and
        # only through an explicit ``update_fields`` (the services in ``riskengine.services``).
        loaded = getattr(self, "_loaded_status", None)
        if not self._state.adding and loaded not in (None, ParameterStatus.DRAFT):
            update_fields = kwargs.get("update_fields")
            if update_fields is None or not set(update_fields) <= GOVERNANCE_FIELDS:
                raise FrozenParameterSet(
                    f"Parameter set {self.version} is {loaded}: its parameters are frozen"
                )
        super().save(*args, **kwargs)
        self._loaded_status = self.status

    def delete(self, *args, **kwargs):
        raise FrozenParameterSet("Parameter sets are never deleted: withdraw or reject them instead")

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_status = instance.status if "status" in field_names else None
        return instance

    def clean(self) -> None:
        """The warning ladder's thresholds in order (``riskengine.core.ladder.LadderThresholds``):
        watch above warning on both measures, ratios above 1, distances above 0."""
        super().clean()
        errors = {}
        values = {name: getattr(self, name) for name in LADDER_FIELDS}
        if any(value is None for value in values.values()):
            return  # each missing field has its own error
        if not values["warning_warning_sigmas"] > 0:
            errors["warning_warning_sigmas"] = "Must be above 0."
        elif not values["warning_watch_sigmas"] > values["warning_warning_sigmas"]:
            errors["warning_watch_sigmas"] = "Must be above the warning distance."
        if not values["warning_warning_ratio"] > 1:
            errors["warning_warning_ratio"] = "Must be above 1 (below 1 the engine calls)."
        elif not values["warning_watch_ratio"] > values["warning_warning_ratio"]:
            errors["warning_watch_ratio"] = "Must be above the warning ratio."
        if errors:
            raise ValidationError(errors)

    def ladder_thresholds(self) -> LadderThresholds:
        """The governed thresholds as the engine's ladder reads them."""
        return LadderThresholds(
            watch_sigmas=float(self.warning_watch_sigmas),
            warning_sigmas=float(self.warning_warning_sigmas),
            watch_ratio=float(self.warning_watch_ratio),
            warning_ratio=float(self.warning_warning_ratio),
            hysteresis=float(self.warning_hysteresis),
        )

    @property
    def is_draft(self) -> bool:
        return self.status == ParameterStatus.DRAFT

    def to_parameters_form(self) -> dict:
        """The methodology's ``parameters`` JSON form (margin document, section 5).

        Uses prefetched ``underlying_parameters``, ``asset_parameters`` and ``haircut_brackets``
        when present (``riskengine.selectors.parameter_sets_with_rows`` prefetches them).
        """
        brackets: dict[int, list[HaircutBracket]] = {}
        for bracket in self.haircut_brackets.all():
            brackets.setdefault(bracket.asset_id, []).append(bracket)
        return {
            "version": self.version,
            "mm_ratio": float(self.mm_ratio),
            "offset_cap": float(self.offset_cap),
            "lookahead_days": float(self.lookahead_days),
            "rate": float(self.rate),
            "price_steps": int(self.price_steps),
            "min_vol": float(self.min_vol),
            "vol_term": {
                "pivot_days": float(self.pivot_days),
                "short_power": float(self.short_power),
                "long_power": float(self.long_power),
            },
            "standard": {
                "option_imf": float(self.option_imf),
                "option_min": float(self.option_min),
                "option_mmf": float(self.option_mmf),
            },
            "underlyings": {
                row.underlying.symbol: row.to_form()
                for row in sorted(self.underlying_parameters.all(), key=lambda r: r.underlying.symbol)
            },
            "correlation": self.correlation,
            "assets": {
                row.asset.symbol: {
                    "underlying": row.asset.underlying.symbol if row.asset.underlying_id else None,
                    "liability_addon": float(row.liability_addon),
                    "haircuts": [
                        {"up_to": None if b.up_to is None else float(b.up_to), "haircut": float(b.haircut)}
                        for b in sorted(
                            brackets.get(row.asset_id, []), key=lambda b: (b.up_to is None, b.up_to or 0)
                        )
                    ],
                }
                for row in sorted(self.asset_parameters.all(), key=lambda r: r.asset.symbol)
            },
        }


def default_extreme_moves() -> list[dict]:
    """The methodology's default extreme scenarios (``DEFAULT_EXTREME``: ±2 price scan ranges at
    35 % coverage), a fresh list for each row."""
    return [dict(move) for move in DEFAULT_EXTREME]


class DraftRowMixin:
    """Rows of a set can be added, changed or deleted only while their set is a draft."""

    def _refuse_unless_draft(self) -> None:
        if not ParameterSet.objects.filter(pk=self.parameter_set_id, status=ParameterStatus.DRAFT).exists():
            raise FrozenParameterSet(f"{type(self).__name__}: its parameter set is not a draft")

    def save(self, *args, **kwargs):
        self._refuse_unless_draft()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._refuse_unless_draft()
        return super().delete(*args, **kwargs)


class UnderlyingParameters(DraftRowMixin, models.Model):
    """Scan, standard-rule and oracle parameters of one underlying within one set."""

    parameter_set = models.ForeignKey(
        ParameterSet, on_delete=models.CASCADE, related_name="underlying_parameters"
    )
    underlying = models.ForeignKey("clearing.Underlying", on_delete=models.PROTECT, related_name="+")
    psr = _decimal(help_text="Price scan range, a fraction of the index price.")
    vol_up = _decimal(default=0.5)
    vol_down = _decimal(default=0.25)
    extreme = models.JSONField(
        default=default_extreme_moves,
        help_text='Extreme moves: [{"multiple": -2, "coverage": 0.35}, {"multiple": 2, "coverage": 0.35}]',
    )
    min_basis = _decimal(default=0.01)
    basis_rate = _decimal(default=0.075)
    som_rate = _decimal(default=0.01)
    conc_threshold = _decimal(digits=28, places=2, default=20_000_000)
    conc_rate = _decimal(default=0.05)
    imf = _decimal(default=0.10)
    mmf = _decimal(default=0.05)
    # Oracle safety rules (market-data issue): freshness, outlier exclusion, quorum, circuit breaker,
    # and the move since the last sweep that triggers an event sweep of exposed accounts.
    max_age_seconds = models.PositiveIntegerField(default=60)
    max_deviation = _decimal(default=0.02)
    min_sources = models.PositiveSmallIntegerField(default=3)
    breaker_move = _decimal(default=0.15)
    breaker_window_seconds = models.PositiveIntegerField(default=300)
    event_move = _decimal(default=0.02)
    # The oracle's fields above, outside the methodology's parameters form.
    ORACLE_FIELDS = (
        "max_age_seconds",
        "max_deviation",
        "min_sources",
        "breaker_move",
        "breaker_window_seconds",
        "event_move",
    )

    class Meta:
        ordering = ["parameter_set", "underlying__symbol"]
        constraints = [
            models.UniqueConstraint(
                fields=["parameter_set", "underlying"], name="underlyingparameters_unique"
            ),
            models.CheckConstraint(name="underlyingparameters_psr_positive", condition=Q(psr__gt=0)),
            models.CheckConstraint(
                name="underlyingparameters_fractions_valid",
                condition=Q(
                    vol_up__gte=0, vol_down__gte=0, vol_down__lt=1, imf__gte=models.F("mmf"), mmf__gt=0
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.underlying} in {self.parameter_set.version}"

    def to_form(self) -> dict:
        return {
            "psr": float(self.psr),
            "vol_up": float(self.vol_up),
            "vol_down": float(self.vol_down),
            "extreme": [
                {"multiple": float(e["multiple"]), "coverage": float(e["coverage"])} for e in self.extreme
            ],
            "min_basis": float(self.min_basis),
            "basis_rate": float(self.basis_rate),
            "som_rate": float(self.som_rate),
            "conc_threshold": float(self.conc_threshold),
            "conc_rate": float(self.conc_rate),
            "imf": float(self.imf),
            "mmf": float(self.mmf),
        }


class AssetParameters(DraftRowMixin, models.Model):
    """A collateral asset's treatment within one set: its liability add-on (its haircut brackets
    are ``HaircutBracket`` rows of the same set)."""

    parameter_set = models.ForeignKey(ParameterSet, on_delete=models.CASCADE, related_name="asset_parameters")
    asset = models.ForeignKey("accounts.Asset", on_delete=models.PROTECT, related_name="+")
    liability_addon = _decimal(default=0.05)

    class Meta:
        ordering = ["parameter_set", "asset__symbol"]
        constraints = [
            models.UniqueConstraint(fields=["parameter_set", "asset"], name="assetparameters_unique"),
            models.CheckConstraint(
                name="assetparameters_addon_not_negative", condition=Q(liability_addon__gte=0)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.asset} in {self.parameter_set.version}"


class HaircutBracket(DraftRowMixin, models.Model):
    """One tax-bracket-like slice: collateral value up to ``up_to`` USD (``null`` = no upper bound)
    is worth ``1 − haircut`` of itself."""

    parameter_set = models.ForeignKey(ParameterSet, on_delete=models.CASCADE, related_name="haircut_brackets")
    asset = models.ForeignKey("accounts.Asset", on_delete=models.PROTECT, related_name="+")
    up_to = _decimal(digits=28, places=2, null=True, blank=True)
    haircut = _decimal()

    class Meta:
        ordering = ["parameter_set", "asset__symbol", "up_to"]
        constraints = [
            models.UniqueConstraint(fields=["parameter_set", "asset", "up_to"], name="haircutbracket_unique"),
            models.UniqueConstraint(
                fields=["parameter_set", "asset"],
                condition=Q(up_to__isnull=True),
                name="haircutbracket_one_open",
            ),
            models.CheckConstraint(
                name="haircutbracket_haircut_range", condition=Q(haircut__gte=0, haircut__lte=1)
            ),
            models.CheckConstraint(
                name="haircutbracket_up_to_positive", condition=Q(up_to__isnull=True) | Q(up_to__gt=0)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.asset} ≤ {self.up_to or '∞'}: {self.haircut}"


def _positive_factor(value, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < 1e6):
        raise ValidationError({field: f"A price factor must be a number > 0, got {value!r}."})


class StressScenario(DraftRowMixin, models.Model):
    """A hypothetical stress scenario of the set (methodology v1.1 section 8), governed with it:
    the price factors of the ``underlyings`` it names (``{"BTC": 0.7}``: −30 %), ``others`` for
    every underlying it does not name, every stablecoin (an asset linked to no underlying, USD
    excepted) at ``stablecoin_price`` USD when set, option ivs times ``iv_factor``. Linked assets
    move with their underlying (``riskengine.core.stress.hypothetical_scenarios``)."""

    parameter_set = models.ForeignKey(ParameterSet, on_delete=models.CASCADE, related_name="stress_scenarios")
    number = models.PositiveSmallIntegerField(default=0, help_text="Order in reports.")
    name = models.CharField(max_length=100)
    underlyings = models.JSONField(
        default=dict, blank=True, help_text='Price factors of named underlyings: {"BTC": 0.7, "ETH": 0.55}.'
    )
    others = _decimal(default=1, help_text="Price factor of every underlying not named (0.6: −40 %).")
    stablecoin_price = _decimal(
        null=True, blank=True, help_text="Every stablecoin at this USD price (blank: unchanged)."
    )
    iv_factor = _decimal(default=1, help_text="Option implied vols are multiplied by this.")

    class Meta:
        ordering = ["parameter_set", "number", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["parameter_set", "name"], name="stressscenario_unique_name"),
            models.CheckConstraint(
                name="stressscenario_factors_positive",
                condition=Q(others__gt=0, iv_factor__gt=0)
                & (Q(stablecoin_price__isnull=True) | Q(stablecoin_price__gt=0)),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        if not isinstance(self.underlyings, dict):
            raise ValidationError({"underlyings": 'Give {"SYMBOL": factor, ...}.'})
        for symbol, factor in self.underlyings.items():
            _positive_factor(factor, "underlyings")
            if not isinstance(symbol, str) or not symbol:
                raise ValidationError({"underlyings": f"Not an underlying's symbol: {symbol!r}."})

    def to_definition(self) -> HypotheticalScenario:
        """The engine's definition of this scenario."""
        return HypotheticalScenario(
            name=self.name,
            underlyings=tuple(sorted((symbol, float(f)) for symbol, f in self.underlyings.items())),
            others=float(self.others),
            stablecoin_price=None if self.stablecoin_price is None else float(self.stablecoin_price),
            iv_factor=float(self.iv_factor),
        )

    @classmethod
    def from_definition(cls, definition: HypotheticalScenario, **fields) -> StressScenario:
        return cls(
            name=definition.name,
            underlyings=dict(definition.underlyings),
            others=Decimal(repr(definition.others)),
            stablecoin_price=None
            if definition.stablecoin_price is None
            else Decimal(repr(definition.stablecoin_price)),
            iv_factor=Decimal(repr(definition.iv_factor)),
            **fields,
        )


class EventAction(models.TextChoices):
    CREATED = "created", "Created"
    EDITED = "edited", "Edited"
    PROPOSED = "proposed", "Proposed"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    ACTIVATED = "activated", "Activated"
    SUPERSEDED = "superseded", "Superseded"


class ParameterSetEvent(AppendOnlyModel):
    """The audit trail of parameter governance: who did what to which set, when and why.

    Append-only (the model and the database refuse updates and deletes). ``actor`` is null for the
    system (calibration proposals, scheduled activation, bootstrap).
    """

    parameter_set = models.ForeignKey(ParameterSet, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=12, choices=EventAction.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)
    from_status = models.CharField(max_length=12, blank=True)
    to_status = models.CharField(max_length=12, blank=True)
    note = models.TextField(blank=True)
    changes = models.JSONField(default=list, blank=True, help_text="What an edit changed.")

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["parameter_set", "at"], name="parametersetevent_set_at")]
        constraints = [
            models.CheckConstraint(
                name="parametersetevent_action_valid", condition=Q(action__in=[c.value for c in EventAction])
            ),
        ]

    def __str__(self) -> str:
        who = self.actor.username if self.actor_id else "system"
        return f"{self.parameter_set.version}: {self.action} by {who} at {self.at:%Y-%m-%d %H:%M:%S}"
