"""Writing risk parameter sets, and their governance (methodology section 6).

Life of a set: ``draft`` (editable in the admin) → ``proposed`` (frozen, validated by the engine)
→ ``approved`` by a risk approver who is not the proposer → ``active`` at its effective time (the
previous active set becomes ``superseded``); or ``rejected`` / ``withdrawn``. Nothing is deleted;
every step is an append-only ``ParameterSetEvent`` with who, when and why. Activation sends
``riskengine.signals.parameter_set_activated`` once the transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Asset, User
from clearing.models import Underlying
from clearing.ops.alerts import ops_alerts_raise
from clearing.validation import decimal_plain
from riskengine.core.errors import DocumentError
from riskengine.core.params import parse_parameters
from riskengine.core.stress import DEFAULT_HYPOTHETICAL, HypotheticalScenario
from riskengine.models import (
    FORESIGHT_FIELDS,
    AssetParameters,
    EventAction,
    HaircutBracket,
    ParameterOrigin,
    ParameterSet,
    ParameterSetEvent,
    ParameterStatus,
    StressScenario,
    UnderlyingParameters,
    default_extreme_moves,
)
from riskengine.selectors import parameter_sets_with_rows
from riskengine.signals import parameter_set_activated
from riskengine.validation.selectors import proposal_validation, validation_summary
from riskengine.validation.services import validation_proposal_start

logger = logging.getLogger(__name__)

ADD_PERMISSION = "riskengine.add_parameterset"
EDIT_PERMISSION = "riskengine.change_parameterset"
APPROVE_PERMISSION = "riskengine.approve_parameterset"

GLOBAL_FIELDS = ("mm_ratio", "offset_cap", "lookahead_days", "rate", "price_steps", "min_vol")


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
    stress_scenarios: Sequence[HypotheticalScenario] | None = None,
) -> ParameterSet:
    """Create a draft set from a methodology ``parameters`` form (validated by the engine first).

    ``underlying_settings`` carries per-underlying fields outside the form (the oracle thresholds,
    by symbol); ``operational`` the set-wide operational settings; ``stress_scenarios`` the
    hypothetical stress scenarios of model validation (section 8). All default to ``based_on``'s
    values, then to the model defaults (for the scenarios, section 8's ``DEFAULT_HYPOTHETICAL``).
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
        "insurance_fund_floor": based_on.insurance_fund_floor if based_on else Decimal(0),
        **({name: getattr(based_on, name) for name in FORESIGHT_FIELDS} if based_on else {}),
    } | (operational or {})
    parameter_set = ParameterSet.objects.create(
        version=form["version"],
        origin=origin,
        reason=reason,
        based_on=based_on,
        created_by=created_by,
        correlation=form["correlation"],
        **{
            name: decimal_plain(form[name], field=name)
            for name in GLOBAL_FIELDS
            if name in form and name != "price_steps"
        },
        **({"price_steps": int(form["price_steps"])} if "price_steps" in form else {}),
        **{
            name: decimal_plain(vol_term[name], field=f"vol_term.{name}")
            for name in ("pivot_days", "short_power", "long_power")
            if name in vol_term
        },
        **{
            name: decimal_plain(standard[name], field=f"standard.{name}")
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
    oracle_fields = UnderlyingParameters.ORACLE_FIELDS
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
                extreme=values.get("extreme", default_extreme_moves()),
                **{
                    name: decimal_plain(value, field=f"underlyings.{symbol}.{name}")
                    for name, value in values.items()
                    if name != "extreme"
                },
                **oracle,
            )
        )
    UnderlyingParameters.objects.bulk_create(rows)
    AssetParameters.objects.bulk_create(
        AssetParameters(
            parameter_set=parameter_set,
            asset=assets[symbol],
            liability_addon=decimal_plain(
                values.get("liability_addon", 0), field=f"assets.{symbol}.liability_addon"
            ),
        )
        for symbol, values in form.get("assets", {}).items()
    )
    if stress_scenarios is None:
        stress_scenarios = (
            [row.to_definition() for row in based_on.stress_scenarios.all()]
            if based_on is not None
            else DEFAULT_HYPOTHETICAL
        )
    StressScenario.objects.bulk_create(
        StressScenario.from_definition(definition, parameter_set=parameter_set, number=number)
        for number, definition in enumerate(stress_scenarios)
    )
    HaircutBracket.objects.bulk_create(
        HaircutBracket(
            parameter_set=parameter_set,
            asset=assets[symbol],
            up_to=None
            if bracket["up_to"] is None
            else decimal_plain(bracket["up_to"], field=f"assets.{symbol}.haircuts.up_to"),
            haircut=decimal_plain(bracket["haircut"], field=f"assets.{symbol}.haircuts.haircut"),
        )
        for symbol, values in form.get("assets", {}).items()
        for bracket in values.get("haircuts", [])
    )
    parameter_set_event_record(
        parameter_set=parameter_set,
        action=EventAction.CREATED,
        actor=created_by,
        note=reason or (f"Copied from {based_on.version}" if based_on else ""),
        to_status=ParameterStatus.DRAFT,
    )
    return parameter_set


@transaction.atomic
def parameter_set_bootstrap(*, form: dict, reason: str = "Initial parameter set") -> ParameterSet:
    """Install the venue's first set, active at once. Refused when any set is active: every later
    change goes through proposal and approval by a second person."""
    if ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).exists():
        raise ValidationError("A parameter set is already active; propose a change instead.")
    parameter_set = parameter_set_create(
        form=form, created_by=None, origin=ParameterOrigin.BOOTSTRAP, reason=reason
    )
    parameter_set.effective_at = timezone.now()
    parameter_set.save(update_fields=["effective_at"])
    _activate(parameter_set=parameter_set, now=parameter_set.effective_at, actor=None, note=reason)
    return parameter_set


def parameter_set_event_record(
    *,
    parameter_set: ParameterSet,
    action: str,
    actor: User | None,
    note: str = "",
    from_status: str = "",
    to_status: str = "",
    changes: list | None = None,
    at: datetime | None = None,
) -> ParameterSetEvent:
    """Append one entry to the audit trail (``actor=None``: the system)."""
    return ParameterSetEvent.objects.create(
        parameter_set=parameter_set,
        action=action,
        actor=actor,
        note=note,
        from_status=from_status,
        to_status=to_status,
        changes=changes or [],
        at=at or timezone.now(),
    )


def _require(user: User | None, permission: str, field: str, what: str) -> None:
    if user is None or not user.is_active or not user.has_perm(permission):
        raise ValidationError({field: f"{getattr(user, 'username', 'Nobody')} may not {what}."})


@dataclass(frozen=True)
class Transition:
    """One governance action on a parameter set: the statuses it starts from and the one it leads
    to (also the action recorded in the history), the permission it needs, the service keyword
    naming the actor (refusals name it), and:

    - ``reason_field``/``reason_missing``: the reason it requires, and the refusal without one;
    - ``validates``: the engine validates the set first (a set heading for activation);
    - ``system_may``: the system (actor None) may take it, as calibration proposes;
    - ``not_by_proposer``: the refusal when the set's proposer tries it (four eyes);
    - ``needs_validation``: the set's backtest and stress, and the active set's beside them, must
      be complete (``riskengine.validation``), and a red venue backtest needs a written reason."""

    from_statuses: tuple[str, ...]
    to_status: str
    permission: str
    actor_field: str
    reason_field: str = "note"
    reason_missing: str = ""
    validates: bool = False
    system_may: bool = False
    not_by_proposer: str = ""
    needs_validation: bool = False


# The one table of who may move a set where: the services take every transition through it
# (``_take``) and the admin's buttons follow it (``parameter_set_refusal``).
TRANSITIONS: dict[str, Transition] = {
    "propose": Transition(
        (ParameterStatus.DRAFT,),
        ParameterStatus.PROPOSED,
        EDIT_PERMISSION,
        "proposed_by",
        reason_field="reason",
        reason_missing="Say why this change is proposed.",
        validates=True,
        system_may=True,
    ),
    # Approval validates again: a set proposed before a rule existed (psr * max(1, |multiple|) < 1,
    # say) must not be approved into effect; refused naming the field, nothing changed.
    "approve": Transition(
        (ParameterStatus.PROPOSED,),
        ParameterStatus.APPROVED,
        APPROVE_PERMISSION,
        "approved_by",
        validates=True,
        not_by_proposer="The proposer of a parameter set cannot approve it.",
        needs_validation=True,
    ),
    "reject": Transition(
        (ParameterStatus.PROPOSED,),
        ParameterStatus.REJECTED,
        APPROVE_PERMISSION,
        "rejected_by",
        reason_missing="Say why the proposal is rejected.",
        not_by_proposer="The proposer cannot reject their own set; withdraw it instead.",
    ),
    "withdraw": Transition(
        (ParameterStatus.DRAFT, ParameterStatus.PROPOSED, ParameterStatus.APPROVED),
        ParameterStatus.WITHDRAWN,
        EDIT_PERMISSION,
        "withdrawn_by",
        reason_missing="Say why the set is withdrawn.",
    ),
}


def parameter_set_refusal(
    *, parameter_set: ParameterSet, action: str, user: User | None, validation: bool = True
) -> ValidationError | None:
    """Why ``user`` (None: the system) may not take ``action`` on ``parameter_set`` as it stands,
    as the error the service raises (naming the actor's field or ``status``, or ``validation``
    for an approval whose backtest and stress are not complete), or None when it may. The service
    checks the validation last (``validation=False`` here), after the engine's own checks: a set
    the engine refuses is refused naming its field."""
    transition = TRANSITIONS[action]
    refusal = _actor_refusal(action=action, user=user)
    if refusal is not None:
        return refusal
    if parameter_set.status not in transition.from_statuses:
        allowed = " or ".join(transition.from_statuses)
        return ValidationError(
            {
                "status": f"Only a {allowed} set can be {transition.to_status}; "
                f"this set is {parameter_set.status}."
            }
        )
    if transition.not_by_proposer and user is not None and parameter_set.proposed_by_id == user.pk:
        return ValidationError({transition.actor_field: transition.not_by_proposer})
    if transition.needs_validation and validation:
        return _validation_refusal(parameter_set=parameter_set)
    return None


def _validation_refusal(*, parameter_set: ParameterSet) -> ValidationError | None:
    verdict = proposal_validation(proposed=parameter_set)
    if verdict.state != "done":
        return ValidationError({"validation": verdict.message})
    return None


def _actor_refusal(*, action: str, user: User | None) -> ValidationError | None:
    transition = TRANSITIONS[action]
    if user is None:
        if transition.system_may:
            return None
        return ValidationError({transition.actor_field: f"Nobody may not {action} parameter sets."})
    if not user.is_active or not user.has_perm(transition.permission):
        return ValidationError({transition.actor_field: f"{user.username} may not {action} parameter sets."})
    return None


def _refuse(*, parameter_set: ParameterSet | None, action: str, user: User | None) -> None:
    """Raise the refusal of ``action``: before the set is locked, of the actor alone (``None``);
    once it is, of the actor on the set as it stands."""
    if parameter_set is None:
        refusal = _actor_refusal(action=action, user=user)
    else:
        refusal = parameter_set_refusal(
            parameter_set=parameter_set, action=action, user=user, validation=False
        )
    if refusal is not None:
        raise refusal


def _take(
    *, action: str, parameter_set: ParameterSet, user: User | None, note: str, now: datetime | None = None
) -> ParameterSet:
    """Take ``action`` on ``parameter_set`` as ``TRANSITIONS`` says: the actor checked, the reason
    required where it is, the set locked and checked as it stands, validated by the engine where
    the action heads for activation, then moved and the move recorded. Returns the set, fresh."""
    transition = TRANSITIONS[action]
    _refuse(parameter_set=None, action=action, user=user)
    if transition.reason_missing and not note.strip():
        raise ValidationError({transition.reason_field: transition.reason_missing})
    parameter_set = _lock(parameter_set=parameter_set)
    _refuse(parameter_set=parameter_set, action=action, user=user)
    if transition.validates:
        parameter_set_validate(parameter_set=parameter_set)
    if transition.needs_validation:
        if (refusal := _validation_refusal(parameter_set=parameter_set)) is not None:
            raise refusal
        note = _validation_gate(parameter_set=parameter_set, note=note)
    now = now or timezone.now()
    if transition.to_status == ParameterStatus.PROPOSED:
        fields = {"proposed_by": user, "proposed_at": now, "reason": note}
    else:
        fields = {"decided_by": user, "decided_at": now, "decision_note": note}
    _transition(
        parameter_set=parameter_set,
        to_status=transition.to_status,
        actor=user,
        note=note,
        now=now,
        fields=fields,
    )
    return parameter_set


def _validation_gate(*, parameter_set: ParameterSet, note: str) -> str:
    """Once the validation is complete (``_validation_refusal`` refuses before, naming
    ``validation``): refuse to approve a set whose venue backtest is red without a written reason
    (naming ``note``). Returns the note to keep in the history: for a red set, the backtest's
    figures and the approver's reason together."""
    verdict = proposal_validation(proposed=parameter_set)
    if not verdict.red:
        return note
    if not note.strip():
        raise ValidationError(
            {
                "note": f"The venue backtest of {parameter_set.version} is red: approving it needs a written "
                "reason, kept in the history."
            }
        )
    return f"{validation_summary(verdict.proposed)}. Approved with a red backtest because: {note.strip()}"


def _lock(*, parameter_set: ParameterSet) -> ParameterSet:
    """Lock ``parameter_set`` and the active set in primary-key order; return ``parameter_set`` fresh."""
    rows = list(
        ParameterSet.objects.filter(Q(pk=parameter_set.pk) | Q(status=ParameterStatus.ACTIVE))
        .order_by("pk")
        .select_for_update()
    )
    return next(row for row in rows if row.pk == parameter_set.pk)


def _transition(
    *,
    parameter_set: ParameterSet,
    to_status: str,
    actor: User | None,
    note: str,
    now: datetime,
    fields: dict | None = None,
) -> None:
    """Move the set to ``to_status`` (setting ``fields`` too) and record it in the history as the
    action of that name ("activated" for ``active``)."""
    fields = fields or {}
    action = EventAction.ACTIVATED if to_status == ParameterStatus.ACTIVE else EventAction(to_status)
    from_status = parameter_set.status
    parameter_set.status = to_status
    for name, value in fields.items():
        setattr(parameter_set, name, value)
    parameter_set.save(update_fields=["status", *fields])
    parameter_set_event_record(
        parameter_set=parameter_set,
        action=action,
        actor=actor,
        note=note,
        from_status=from_status,
        to_status=to_status,
        at=now,
    )


def _activate(*, parameter_set: ParameterSet, now: datetime, actor: User | None, note: str = "") -> None:
    """Make ``parameter_set`` the active set; the caller holds the locks (``_lock``)."""
    for previous in ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).exclude(pk=parameter_set.pk):
        _transition(
            parameter_set=previous,
            to_status=ParameterStatus.SUPERSEDED,
            actor=actor,
            note=f"Superseded by {parameter_set.version}",
            now=now,
        )
    _transition(
        parameter_set=parameter_set,
        to_status=ParameterStatus.ACTIVE,
        actor=actor,
        note=note,
        now=now,
        fields={"activated_at": now},
    )
    transaction.on_commit(lambda: _announce_activation(parameter_set))


def _announce_activation(parameter_set: ParameterSet) -> None:
    # The set is committed and active whatever a receiver does; a failing receiver (say, the broker
    # is down when the sweep is enqueued) is logged, not turned into an error of the approval.
    for receiver, result in parameter_set_activated.send_robust(
        sender=ParameterSet, parameter_set=parameter_set
    ):
        if isinstance(result, Exception):
            logger.error(
                "parameter_set_activated receiver %r failed for %s",
                receiver,
                parameter_set.version,
                exc_info=result,
            )


def parameter_set_validate(*, parameter_set: ParameterSet):
    """Check a whole set: every row against the model's rules, then the parameters form through the
    engine (``parse_parameters``). Returns the engine's ``Parameters``; raises ``ValidationError``
    naming the field."""
    parameter_set = parameter_sets_with_rows().get(pk=parameter_set.pk)
    errors: dict[str, list[str]] = {}
    try:
        parameter_set.full_clean(validate_unique=False)
    except ValidationError as error:
        errors.update(error.message_dict)
    for row in parameter_set.underlying_parameters.all():
        try:
            row.full_clean(exclude=["parameter_set"], validate_unique=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors[f"underlyings.{row.underlying.symbol}.{field}"] = messages
    for row in parameter_set.stress_scenarios.all():
        try:
            row.full_clean(exclude=["parameter_set"], validate_unique=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors[f"stress_scenarios.{row.name}.{field}"] = messages
    asset_ids = {row.asset_id for row in parameter_set.asset_parameters.all()}
    for bracket in parameter_set.haircut_brackets.all():
        if bracket.asset_id not in asset_ids:
            errors["haircut_brackets"] = [
                "Every haircut bracket's asset needs an asset row (its liability add-on) in the set."
            ]
    if errors:
        raise ValidationError(errors)
    try:
        return parse_parameters(parameter_set.to_parameters_form())
    except DocumentError as error:
        raise ValidationError({error.field: error.message}) from None


@transaction.atomic
def parameter_set_draft_from(
    *, base: ParameterSet, created_by: User | None, version: str, reason: str = ""
) -> ParameterSet:
    """A new editable draft holding a copy of every parameter of ``base`` (``created_by=None``: the
    system)."""
    if created_by is not None:
        _require(created_by, ADD_PERMISSION, "created_by", "create parameter sets")
    version = version.strip()
    if not version:
        raise ValidationError({"version": "A version is required."})
    base = parameter_sets_with_rows().get(pk=base.pk)
    return parameter_set_create(
        form=base.to_parameters_form() | {"version": version},
        created_by=created_by,
        origin=ParameterOrigin.MANUAL if created_by is not None else ParameterOrigin.CALIBRATION,
        reason=reason or f"Copied from {base.version}",
        based_on=base,
    )


@transaction.atomic
def parameter_set_edit_record(*, parameter_set: ParameterSet, edited_by: User, changes: list) -> None:
    """Record an edit of a draft (the admin saves drafts, then calls this with what changed)."""
    if parameter_set.status != ParameterStatus.DRAFT:
        raise ValidationError({"status": "Only a draft can be edited."})
    parameter_set_event_record(
        parameter_set=parameter_set,
        action=EventAction.EDITED,
        actor=edited_by,
        changes=changes,
        from_status=ParameterStatus.DRAFT,
        to_status=ParameterStatus.DRAFT,
    )


@transaction.atomic
def parameter_set_propose(
    *, parameter_set: ParameterSet, proposed_by: User | None, reason: str
) -> ParameterSet:
    """Freeze a validated draft as a proposal (``proposed_by=None``: proposed by the system, as
    calibration does). Invalid sets are refused with the engine's error, nothing changed. Starts
    the proposal's validation (its backtest and stress beside the active set's), which approval
    waits for: here and now on a small venue, on the workers on a large one."""
    parameter_set = _take(action="propose", parameter_set=parameter_set, user=proposed_by, note=reason)
    validation_proposal_start(proposed=parameter_set, requested_by=proposed_by)
    return parameter_set


@transaction.atomic
def parameter_set_approve(
    *, parameter_set: ParameterSet, approved_by: User, note: str = "", now: datetime | None = None
) -> ParameterSet:
    """Approve a proposal (a risk approver who did not propose it). It becomes active at once when its
    effective time has come (or is unset), else at that time through ``parameter_set_activate_due``."""
    parameter_set = _take(action="approve", parameter_set=parameter_set, user=approved_by, note=note, now=now)
    now = parameter_set.decided_at
    if parameter_set.effective_at is None or parameter_set.effective_at <= now:
        if parameter_set.effective_at is None:
            parameter_set.effective_at = now
            parameter_set.save(update_fields=["effective_at"])
        _activate(parameter_set=parameter_set, now=now, actor=approved_by, note="Approved and effective")
    return parameter_set


@transaction.atomic
def parameter_set_reject(*, parameter_set: ParameterSet, rejected_by: User, note: str) -> ParameterSet:
    """Refuse a proposal, with the reason (a risk approver who did not propose it)."""
    return _take(action="reject", parameter_set=parameter_set, user=rejected_by, note=note)


@transaction.atomic
def parameter_set_withdraw(*, parameter_set: ParameterSet, withdrawn_by: User, note: str) -> ParameterSet:
    """Abandon a draft, a proposal or an approved set that is not yet active (ops staff)."""
    return _take(action="withdraw", parameter_set=parameter_set, user=withdrawn_by, note=note)


INVALID_SET_ALERT = "parameter_set_invalid"


def _valid_for_activation(*, parameter_set: ParameterSet, now: datetime) -> bool:
    """Whether an approved set still passes the engine's validation at its effective time. One that
    does not (approved before a rule existed) is not activated: it stays approved, the active set
    stays in force, and a critical ops alert names the set and the field until ops withdraw it."""
    try:
        parameter_set_validate(parameter_set=parameter_set)
    except ValidationError as error:
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
        )
        logger.critical("parameter set %s not activated: %s", parameter_set.version, problems)
        ops_alerts_raise(
            kind=INVALID_SET_ALERT,
            messages={
                parameter_set.version: f"CRITICAL: approved parameter set {parameter_set.version} fails "
                f"validation and was not activated ({problems}); withdraw it."
            },
            now=now,
        )
        return False
    return True


@transaction.atomic
def parameter_set_activate_due(*, now: datetime | None = None) -> list[ParameterSet]:
    """Activate approved sets whose effective time has come (Celery beat runs this every ~15 s).

    When several are due at once only the latest takes effect; the earlier ones are superseded
    without ever being active, so one activation (and one full sweep) happens. A due set that fails
    the engine's validation is skipped (``_valid_for_activation``: it stays approved, with a
    critical ops alert). Returns the sets activated (at most one). Safe to run concurrently: rows
    are locked and re-read.
    """
    now = now or timezone.now()
    due = list(
        ParameterSet.objects.filter(
            Q(status=ParameterStatus.APPROVED, effective_at__lte=now) | Q(status=ParameterStatus.ACTIVE)
        )
        .order_by("pk")
        .select_for_update()
    )
    due = sorted(
        (row for row in due if row.status == ParameterStatus.APPROVED), key=lambda r: (r.effective_at, r.pk)
    )
    due = [row for row in due if _valid_for_activation(parameter_set=row, now=now)]
    if not due:
        return []
    *skipped, latest = due
    for parameter_set in skipped:
        note = f"Superseded by {latest.version} before taking effect"
        _transition(
            parameter_set=parameter_set, to_status=ParameterStatus.SUPERSEDED, actor=None, note=note, now=now
        )
    _activate(parameter_set=latest, now=now, actor=None, note="Effective time reached")
    return [latest]
