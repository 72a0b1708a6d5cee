"""Reads of model validation: the proposal's verdict (governance), the venue's latest results (ops
dashboard, disclosure page) and an account's backtest (member page, API). Each reads a bounded
number of rows whatever the size of the venue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from accounts.models import MarginAccount
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.validation import storage
from riskengine.validation.models import (
    AccountBacktest,
    AccountStress,
    Light,
    ValidationKind,
    ValidationMode,
    ValidationRun,
    ValidationStatus,
)

WORST_ACCOUNTS = 10
EXCEPTIONS_SHOWN = 30
# The run columns a report reads: the stored history and market are left in the database.
RUN_FIELDS = (
    "kind",
    "mode",
    "mpor_days",
    "parameter_set__version",
    "proposal_id",
    "cause",
    "status",
    "error",
    "valuation_time",
    "first_day",
    "last_day",
    "observations",
    "accounts",
    "backtested",
    "fund_value",
    "fund_unpriced",
    "light",
    "report",
    "started_at",
    "finished_at",
)


def _runs():
    return ValidationRun.objects.select_related("parameter_set").only(*RUN_FIELDS)


@dataclass(frozen=True)
class ProposalValidation:
    """What a proposal's validation says: ``state`` ``done`` (both runs complete), ``running``,
    ``failed`` or ``missing``; ``message`` why it is not done; ``proposed`` and ``current`` the
    runs of the proposed set and of the active set beside it (None when absent)."""

    state: str
    message: str
    proposed: ValidationRun | None
    current: ValidationRun | None

    @property
    def red(self) -> bool:
        return self.proposed is not None and self.proposed.light == Light.RED


def proposal_validation(*, proposed: ParameterSet) -> ProposalValidation:
    """The latest validation of ``proposed`` and of the active set beside it (2–3 queries). The
    active set's run must be of the set active now: a proposal validated against a set since
    replaced is validated again."""
    runs = list(_runs().filter(proposal=proposed, kind=ValidationKind.PROPOSAL).order_by("-pk")[:20])
    own = next((run for run in runs if run.parameter_set_id == proposed.pk), None)
    active = ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).exclude(pk=proposed.pk).first()
    current = None
    if active is not None:
        current = next((run for run in runs if run.parameter_set_id == active.pk), None)
    needed = [own] + ([current] if active is not None else [])
    if own is None or (active is not None and current is None):
        beside = f" and of the active set {active.version}" if active is not None else ""
        return ProposalValidation(
            "missing",
            f"No backtest and stress of {proposed.version}{beside} yet: run the validation.",
            own,
            current,
        )
    failed = [run for run in needed if run.status == ValidationStatus.FAILED]
    if failed:
        reasons = "; ".join(f"{run.parameter_set.version}: {run.error}" for run in failed)
        return ProposalValidation("failed", f"The validation failed ({reasons}): run it again.", own, current)
    if any(run.status == ValidationStatus.RUNNING for run in needed):
        return ProposalValidation(
            "running", "The backtest and stress of this proposal are still running.", own, current
        )
    return ProposalValidation("done", "", own, current)


def validation_summary(run: ValidationRun) -> str:
    """One line for the audit log and the alerts: the venue's traffic light and its figures."""
    parts = []
    for name, key in (("accounts pooled", "pooled"), ("aggregate book", "aggregate")):
        section = run.report.get(key)
        if section is not None:
            parts.append(
                f"{name}: {section['exceptions']} exceptions in {section['observations']} observations, "
                f"coverage {section['coverage']:.2%}, {section['traffic_light']}"
            )
    cover_2 = run.report.get("cover_2") or {}
    fund = "no fund" if run.fund_value is None else f"fund {float(run.fund_value):,.0f} USD"
    return (
        f"Venue backtest {run.light or 'empty'} ({run.parameter_set.version}, {run.mode}, "
        f"{run.first_day}..{run.last_day}; "
        + "; ".join(parts)
        + f"); Cover-2 {cover_2.get('amount', 0):,.0f} USD, {fund}"
    )


def worst_account_backtests(*, run: ValidationRun, limit: int = WORST_ACCOUNTS) -> list[AccountBacktest]:
    """The accounts with the most exceptions in ``run`` (lowest coverage first on ties), with
    their account and member (one query)."""
    return list(
        AccountBacktest.objects.filter(run=run, exceptions__gt=0)
        .select_related("account__member")
        .defer("series")
        .order_by("-exceptions", "account_id")[:limit]
    )


def worst_account_stresses(*, run: ValidationRun, limit: int = WORST_ACCOUNTS) -> list[AccountStress]:
    """The accounts with the largest uncovered stressed loss in ``run`` (one query)."""
    return list(
        AccountStress.objects.filter(run=run, worst_uncovered__gt=0)
        .select_related("account", "member")
        .order_by("-worst_uncovered", "account_id")[:limit]
    )


def latest_runs(*, parameter_set: ParameterSet | None = None) -> dict[str, ValidationRun | None]:
    """The latest completed nightly or on-demand run of each mode (of ``parameter_set``, default
    the active set): ``{"fixed": run, "calibrated": run}`` (two queries)."""
    if parameter_set is None:
        parameter_set = ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).first()
    if parameter_set is None:
        return dict.fromkeys(ValidationMode.values)
    return {
        mode: _runs()
        .filter(
            parameter_set=parameter_set,
            mode=mode,
            kind__in=[ValidationKind.NIGHTLY, ValidationKind.ON_DEMAND],
            status=ValidationStatus.DONE,
        )
        .order_by("-pk")
        .first()
        for mode in ValidationMode.values
    }


def run_series(*, run: ValidationRun) -> dict:
    """The venue's series of a completed run: ``days`` (datetimes at midnight UTC), ``venue_im``
    (the accounts' total IM), ``aggregate_im``, ``aggregate_loss`` (USD) and ``exceptions`` (the
    accounts with an exception that day) per observation day (one query)."""
    blob = ValidationRun.objects.filter(pk=run.pk).values_list("series", "history").get()
    series = storage.decode(storage.RUN_SERIES, blob[0])
    days = _observation_days(run=run, history_days=blob[1].get("days", []))
    return {
        "days": days,
        "venue_im": series["venue_im"].tolist(),
        "aggregate_im": series["aggregate_im"].tolist(),
        "aggregate_loss": series["aggregate_loss"].tolist(),
        "exceptions": series["exceptions"].tolist(),
    }


def _observation_days(*, run: ValidationRun, history_days: list[str]) -> list[datetime]:
    """The observation days ``t`` of ``run``: the history's days whose ``t + h`` it holds."""
    days = np.array(history_days, dtype="datetime64[D]")
    later = np.searchsorted(days, days + np.timedelta64(run.mpor_days, "D"))
    found = later < days.size
    found[found] = days[later[found]] == days[found] + np.timedelta64(run.mpor_days, "D")
    return [datetime.combine(d, datetime.min.time(), tzinfo=UTC) for d in days[found].tolist()]


@dataclass(frozen=True)
class AccountValidation:
    """An account's latest backtest: the ``run`` (nightly or on demand, completed, of the active
    set), its ``backtest`` row and its ``stress`` row (None when absent), and its ``days``,
    ``initial_margin`` and ``loss`` series (USD)."""

    run: ValidationRun
    backtest: AccountBacktest | None
    stress: AccountStress | None
    days: list[datetime]
    initial_margin: list[float]
    loss: list[float]


def account_validation(
    *, account: MarginAccount, mode: str = ValidationMode.FIXED
) -> AccountValidation | None:
    """``account``'s results in the latest completed nightly or on-demand run of ``mode`` of the
    active set, or None when there is no such run (four queries)."""
    run = latest_runs()[mode]
    if run is None:
        return None
    backtest = AccountBacktest.objects.filter(run=run, account=account).first()
    stress = AccountStress.objects.filter(run=run, account=account).first()
    days, initial_margin, loss = [], [], []
    if backtest is not None:
        series = storage.decode(storage.ACCOUNT_SERIES, backtest.series)
        history_days = ValidationRun.objects.filter(pk=run.pk).values_list("history", flat=True).get()
        days = _observation_days(run=run, history_days=history_days.get("days", []))
        initial_margin = series["initial_margin"].astype(float).tolist()
        loss = series["loss"].astype(float).tolist()
    return AccountValidation(run, backtest, stress, days, initial_margin, loss)


@dataclass(frozen=True)
class ComparisonRow:
    """One line of a proposal's comparison: the ``label`` and each run's text (``""`` absent)."""

    label: str
    current: str
    proposed: str
    bad: bool = False  # the proposed figure is red, or a fund below Cover-2


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _section_rows(label: str, current: dict | None, proposed: dict | None) -> list[ComparisonRow]:
    def cell(section, text):
        return "—" if section is None else text(section)

    return [
        ComparisonRow(
            f"{label}: exceptions / observations",
            cell(current, lambda s: f"{s['exceptions']:,} / {s['observations']:,}"),
            cell(proposed, lambda s: f"{s['exceptions']:,} / {s['observations']:,}"),
        ),
        ComparisonRow(
            f"{label}: coverage (target 99 %)",
            cell(current, lambda s: _percent(s["coverage"])),
            cell(proposed, lambda s: _percent(s["coverage"])),
        ),
        ComparisonRow(
            f"{label}: traffic light",
            cell(current, lambda s: s["traffic_light"]),
            cell(proposed, lambda s: s["traffic_light"]),
            bad=proposed is not None and proposed["traffic_light"] == Light.RED,
        ),
        ComparisonRow(f"{label}: IM peak / trough", cell(current, _peak), cell(proposed, _peak)),
    ]


def _peak(section: dict) -> str:
    ratio = section["procyclicality"]["peak_to_trough"]
    return "—" if ratio is None else f"{ratio:.2f}"


def _cover_text(run: ValidationRun | None, key: str) -> str:
    if run is None:
        return "—"
    cover = run.report.get(key) or {}
    scenario = cover.get("scenario")
    members = ", ".join(cover.get("members", [])) or "nobody uncovered"
    return f"{cover.get('amount', 0):,.0f} USD" + (f" ({scenario}; {members})" if scenario else "")


def proposal_comparison(*, verdict: ProposalValidation) -> list[ComparisonRow]:
    """The venue-level lines of a proposal's validation beside the active set's."""
    current, proposed = verdict.current, verdict.proposed

    def report(run, key):
        return None if run is None else run.report.get(key)

    fund = "—"
    run = proposed or current
    if run is not None:
        fund = "no insurance fund" if run.fund_value is None else f"{float(run.fund_value):,.0f} USD"
    cover_2 = (proposed.report.get("cover_2") or {}).get("amount", 0.0) if proposed is not None else 0.0
    below = proposed is not None and (proposed.fund_value is None or float(proposed.fund_value) < cover_2)
    return [
        ComparisonRow(
            "Period (observation days t)",
            "—" if current is None else f"{current.first_day} … {current.last_day}",
            "—" if proposed is None else f"{proposed.first_day} … {proposed.last_day}",
        ),
        ComparisonRow(
            "Venue traffic light",
            "—" if current is None else current.light or "no book",
            "—" if proposed is None else proposed.light or "no book",
            bad=proposed is not None and proposed.light == Light.RED,
        ),
        *_section_rows("Accounts pooled", report(current, "pooled"), report(proposed, "pooled")),
        *_section_rows("Aggregate book", report(current, "aggregate"), report(proposed, "aggregate")),
        ComparisonRow("Cover-1", _cover_text(current, "cover_1"), _cover_text(proposed, "cover_1")),
        ComparisonRow(
            "Cover-2", _cover_text(current, "cover_2"), _cover_text(proposed, "cover_2"), bad=below
        ),
        ComparisonRow("Insurance fund at the run's prices", fund, fund, bad=below),
    ]


def venue_disclosure() -> dict | None:
    """What every member may read of the venue's model validation, in the spirit of the
    CPMI-IOSCO quantitative disclosures (PQD 6.5): aggregate figures only — the period, the pooled
    and aggregate backtests (observations, exceptions, coverage, traffic light, procyclicality) of
    the active set in both modes, and Cover-1 and Cover-2 against the insurance fund with the
    scenario that sets them. Never an account's or a member's result, nor which members set a
    cover: the dict is built from named fields, not from the stored report (two queries). None
    before the first completed run."""
    runs = latest_runs()
    fixed = runs[ValidationMode.FIXED]
    if fixed is None:
        return None

    def backtest(section: dict | None) -> dict | None:
        if section is None:
            return None
        return {
            "observations": section["observations"],
            "exceptions": section["exceptions"],
            "coverage": section["coverage"],
            "traffic_light": section["traffic_light"],
            "peak_to_trough": section["procyclicality"]["peak_to_trough"],
            "max_increase_30": section["procyclicality"]["max_increase"]["30"],
        }

    def cover(key: str) -> dict:
        value = fixed.report.get(key) or {}
        return {"amount": value.get("amount", 0.0), "scenario": value.get("scenario")}

    modes = {}
    for mode, run in runs.items():
        if run is not None:
            modes[mode] = {
                "pooled": backtest(run.report.get("pooled")),
                "aggregate": backtest(run.report.get("aggregate")),
            }
    fund = None if fixed.fund_value is None or fixed.fund_unpriced else float(fixed.fund_value)
    cover_2 = cover("cover_2")
    return {
        "parameter_set": fixed.parameter_set.version,
        "finished_at": fixed.finished_at,
        "start": fixed.first_day,
        "end": fixed.last_day,
        "mpor_days": fixed.mpor_days,
        "accounts": fixed.backtested,
        "light": fixed.light,
        "modes": modes,
        "cover_1": cover("cover_1"),
        "cover_2": cover_2,
        "fund": fund,
        "fund_covers_cover_2": fund is not None and fund >= cover_2["amount"],
    }
