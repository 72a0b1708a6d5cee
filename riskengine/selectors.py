"""Reads of risk parameters, and the impact preview of a proposed set."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount
from clearing.marketdata.quotes import MarketQuotes
from riskengine.core import (
    STATUSES,
    Parameters,
    ScenarioGrid,
    compute_margin,
    parse_parameters,
    scenario_grid,
)
from riskengine.core.errors import DocumentError
from riskengine.loading import book_rows_fetch, margin_book_build
from riskengine.models import (
    AssetParameters,
    ParameterSet,
    ParameterStatus,
    UnderlyingParameters,
)


class NoActiveParameterSet(LookupError):
    """The venue has no active parameter set: nothing can be margined until one is approved."""


def parameter_sets_with_rows():
    """Parameter sets with every row ``to_parameters_form`` reads, in three extra queries."""
    return ParameterSet.objects.prefetch_related(
        Prefetch("underlying_parameters", UnderlyingParameters.objects.select_related("underlying")),
        Prefetch("asset_parameters", AssetParameters.objects.select_related("asset__underlying")),
        "haircut_brackets",
    )


@lru_cache(maxsize=16)
def _parameters_form(parameter_set_id: int, version: str) -> dict:
    # A set's parameters are frozen once proposed, so its form can be cached for the process;
    # the version is part of the key so a reused id (a re-created test database) never hits.
    return parameter_sets_with_rows().get(pk=parameter_set_id).to_parameters_form()


def parameters_form(*, parameter_set) -> dict:
    """The parameters form of ``parameter_set`` (cached per process: sets are frozen)."""
    return _parameters_form(parameter_set.pk, parameter_set.version)


@lru_cache(maxsize=16)
def _parameters_parsed(parameter_set_id: int, version: str) -> tuple[Parameters, ScenarioGrid]:
    parameters = parse_parameters(_parameters_form(parameter_set_id, version))
    return parameters, scenario_grid(parameters)


def parameters_parsed(*, parameter_set) -> tuple[Parameters, ScenarioGrid]:
    """``parameter_set``'s parsed parameters and their scenario grid (cached per process, like its
    form: sets are frozen). Read-only: callers share them."""
    return _parameters_parsed(parameter_set.pk, parameter_set.version)


def parameter_set_active() -> ParameterSet:
    """The active parameter set, its row only (one query); raises ``NoActiveParameterSet``.

    The one way to get the active set. Its parameters (form and parsed) come from
    ``riskengine.reference.reference_current()`` (cached per process, one probe query), or from
    ``riskengine.sweeps.selectors.parameters_form`` for a given set; its rows, for the admin and
    governance, from ``parameter_set_with_rows``."""
    parameter_set = ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).first()
    if parameter_set is None:
        raise NoActiveParameterSet("No active risk parameter set: approve one in the admin.")
    return parameter_set


def parameter_set_with_rows(*, pk: int) -> ParameterSet:
    return parameter_sets_with_rows().get(pk=pk)


def parameter_sets_pending():
    """Proposals awaiting a decision and approved sets awaiting their effective time."""
    return (
        ParameterSet.objects.filter(status__in=[ParameterStatus.PROPOSED, ParameterStatus.APPROVED])
        .select_related("proposed_by", "decided_by")
        .order_by("proposed_at", "pk")
    )


def parameter_set_version_suggest(*, today: date | None = None) -> str:
    """The next free version of the form ``YYYY-MM-DD.N``."""
    today = today or timezone.now().date()
    taken = set(
        ParameterSet.objects.filter(version__startswith=f"{today}.").values_list("version", flat=True)
    )
    number = 1
    while f"{today}.{number}" in taken:
        number += 1
    return f"{today}.{number}"


@dataclass(frozen=True)
class AccountImpact:
    """One account under the active (``*_active``) and the proposed (``*_proposed``) set, USD."""

    account_id: int
    code: str
    kind: str
    equity_active: float
    equity_proposed: float
    im_active: float
    im_proposed: float
    mm_active: float
    mm_proposed: float
    status_active: str
    status_proposed: str

    @property
    def im_change(self) -> float:
        return self.im_proposed - self.im_active

    @property
    def im_change_ratio(self) -> float | None:
        return self.im_change / self.im_active if self.im_active else None

    @property
    def worsens(self) -> bool:
        return STATUSES.index(self.status_proposed) > STATUSES.index(self.status_active)


@dataclass(frozen=True)
class Impact:
    """What approving ``proposed_version`` would do to every account, at ``valuation_time``.

    ``accounts`` in account order; ``largest_movers`` by absolute IM change (up to ``MOVERS``,
    unchanged accounts left out); ``entering_margin_call`` / ``entering_liquidation`` the accounts
    whose status would worsen to that status (member accounts only: the venue's house account and
    insurance fund are never margin-called nor liquidated).
    """

    proposed_version: str
    active_version: str
    valuation_time: datetime
    accounts: tuple[AccountImpact, ...]
    total_im_active: float
    total_im_proposed: float
    total_mm_active: float
    total_mm_proposed: float
    largest_movers: tuple[AccountImpact, ...]
    entering_margin_call: tuple[AccountImpact, ...]
    entering_liquidation: tuple[AccountImpact, ...]

    @property
    def total_im_change(self) -> float:
        return self.total_im_proposed - self.total_im_active


MOVERS = 20


def parameter_set_impact(
    *,
    proposed: ParameterSet,
    active: ParameterSet | None = None,
    quotes: MarketQuotes | None = None,
) -> Impact:
    """Every account's margin under the active set and under ``proposed``, on the same book and the
    same market (``quotes``, default the oracle's current view). Two engine runs over all
    accounts; raises ``ValidationError`` naming the field when a set cannot margin the book (an
    asset held as collateral that the proposed set does not cover, say)."""
    # circular: riskengine.reference reads parameter sets through this module
    from riskengine.reference import quotes_current

    quotes = quotes or quotes_current()
    proposed = parameter_set_with_rows(pk=proposed.pk)
    active = parameter_set_with_rows(pk=(active or parameter_set_active()).pk)
    rows = book_rows_fetch()
    kinds = dict(MarginAccount.objects.values_list("pk", "kind"))
    results = []
    for parameter_set in (active, proposed):
        try:
            book = margin_book_build(
                rows=rows, parameters_form=parameter_set.to_parameters_form(), quotes=quotes
            )
        except DocumentError as error:
            raise ValidationError({error.field: f"{parameter_set.version}: {error.message}"}) from None
        results.append(compute_margin(book.margin_input))
    before, after = results
    accounts = tuple(
        AccountImpact(
            account_id=int(rows.account_ids[k]),
            code=rows.account_codes[k],
            kind=kinds[int(rows.account_ids[k])],
            equity_active=float(before.equity[k]),
            equity_proposed=float(after.equity[k]),
            im_active=float(before.initial_margin[k]),
            im_proposed=float(after.initial_margin[k]),
            mm_active=float(before.maintenance_margin[k]),
            mm_proposed=float(after.maintenance_margin[k]),
            status_active=STATUSES[int(before.status[k])],
            status_proposed=STATUSES[int(after.status[k])],
        )
        for k in range(rows.account_ids.size)
    )
    members = [a for a in accounts if a.kind == AccountKind.MEMBER]
    change = np.abs(after.initial_margin - before.initial_margin)
    order = np.argsort(-change, kind="stable")
    movers = tuple(accounts[k] for k in order[:MOVERS] if change[k] > 0)
    return Impact(
        proposed_version=proposed.version,
        active_version=active.version,
        valuation_time=quotes.valuation_time,
        accounts=accounts,
        total_im_active=float(before.initial_margin.sum()),
        total_im_proposed=float(after.initial_margin.sum()),
        total_mm_active=float(before.maintenance_margin.sum()),
        total_mm_proposed=float(after.maintenance_margin.sum()),
        largest_movers=movers,
        entering_margin_call=tuple(a for a in members if a.worsens and a.status_proposed == "margin_call"),
        entering_liquidation=tuple(a for a in members if a.worsens and a.status_proposed == "liquidation"),
    )


def underlying_oracle_rules(symbols: set[str]) -> list[tuple]:
    """The oracle's rules of the active underlyings among ``symbols`` in the active parameter set:
    ``(symbol, *UnderlyingParameters.ORACLE_FIELDS)`` rows (one query). Registered with
    the oracle by ``RiskEngineConfig.ready``."""
    return list(
        UnderlyingParameters.objects.filter(
            parameter_set__status=ParameterStatus.ACTIVE,
            underlying__symbol__in=symbols,
            underlying__is_active=True,
        ).values_list("underlying__symbol", *UnderlyingParameters.ORACLE_FIELDS)
    )
