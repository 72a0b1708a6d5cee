"""Per-process cache of the versioned reference data a request-time margin computation needs.

A what-if re-margins one account: its own rows must be read every time, but the active parameter
set (its form *and* the parsed ``Parameters``), the instruments (with their underlyings), the
assets and the settlement asset change rarely and are the same for every request. Reading and
parsing them each time cost more than the engine run itself, so they are kept per process and
validated by **one** probe query per request that returns:

- the active set's id and version (a set's parameters are frozen once it is proposed, so
  ``(id, version)`` identifies its content; the version guards against a reused id after the
  database was re-created);
- ``count(*)`` and ``max(id)`` of instruments and of assets (a listing or a delisted-and-recreated
  symbol changes them).

The cache is also dropped in this process when a set is activated
(``riskengine.signals.parameter_set_activated``) or an instrument, underlying or asset is saved or
deleted here (``post_save``/``post_delete``). An edit of an *existing* instrument or asset made in
another process (say ``is_active`` switched off in the admin of another web worker) and done
without a new row is seen after at most ``MAX_AGE_SECONDS``. Consumers: what-if (read-only) and
event sweeps (``riskengine.sweeps.services.sweep_accounts_run``, for the parsed parameters,
instruments and asset symbols only, and only when the cached set is the active one it just read);
full sweeps read instruments fresh, so a periodic full sweep corrects within one interval what an
in-place edit of an instrument's terms (not a normal operation: listed terms do not change) could
have left stale in an event sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import Asset
from clearing.bulk import datetime_aware
from clearing.marketdata.aggregation import DEGRADED, OK
from clearing.marketdata.models import IndexPrice, IndexState, VolMark
from clearing.marketdata.quotes import MarketQuotes
from clearing.marketdata.selectors import market_quotes_current
from clearing.models import Instrument
from riskengine.core import parse_parameters
from riskengine.core.params import Parameters
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.selectors import NoActiveParameterSet, parameters_form

MAX_AGE_SECONDS = 60.0


@dataclass(frozen=True, eq=False)
class Reference:
    """The active set and the reference rows, as of ``key`` (the probe's answer)."""

    key: tuple
    loaded_at: float
    parameter_set_id: int
    parameters_form: dict
    parameters: Parameters
    instruments: dict[int, Instrument]  # by pk, ``underlying`` already loaded
    instruments_by_symbol: dict[str, Instrument]
    asset_symbols: dict[int, str]  # by pk
    assets_by_symbol: dict[str, Asset]
    settlement_asset_id: int | None


_current: Reference | None = None


def reference_clear(**_kwargs) -> None:
    """Drop this process's caches (signal receiver; also handy in tests)."""
    global _current, _quotes
    _current = None
    _quotes = None


def _probe() -> tuple:
    parameter_sets = ParameterSet._meta.db_table
    instruments = Instrument._meta.db_table
    assets = Asset._meta.db_table
    sql = (
        f"SELECT (SELECT id FROM {parameter_sets} WHERE status = %s),"
        f" (SELECT version FROM {parameter_sets} WHERE status = %s),"
        f" (SELECT count(*) FROM {instruments}), (SELECT max(id) FROM {instruments}),"
        f" (SELECT count(*) FROM {assets}), (SELECT max(id) FROM {assets})"
    )
    with connection.cursor() as cursor:
        # At most one set is active (constraint ``parameterset_one_active``).
        cursor.execute(sql, [ParameterStatus.ACTIVE, ParameterStatus.ACTIVE])
        return tuple(cursor.fetchone())


def _load(key: tuple) -> Reference:
    parameter_set = ParameterSet.objects.only("pk", "version").get(pk=key[0])
    form = parameters_form(parameter_set=parameter_set)
    instruments = {i.pk: i for i in Instrument.objects.select_related("underlying")}
    assets = list(Asset.objects.all())
    settlement = next((a.pk for a in assets if a.symbol == settings.SETTLEMENT_ASSET), None)
    return Reference(
        key=key,
        loaded_at=time.monotonic(),
        parameter_set_id=key[0],
        parameters_form=form,
        parameters=parse_parameters(form),
        instruments=instruments,
        instruments_by_symbol={i.symbol: i for i in instruments.values()},
        asset_symbols={a.pk: a.symbol for a in assets},
        assets_by_symbol={a.symbol: a for a in assets},
        settlement_asset_id=settlement,
    )


def reference_current() -> Reference:
    """The active set and the reference rows: one probe query, plus a reload when they changed.

    Raises ``NoActiveParameterSet`` when no set is active.
    """
    global _current
    key = _probe()
    if key[0] is None:
        raise NoActiveParameterSet("No active risk parameter set: approve one in the admin.")
    current = _current
    if current is None or current.key != key or time.monotonic() - current.loaded_at > MAX_AGE_SECONDS:
        # One assignment of an immutable object: threads sharing the process see old or new, whole.
        current = _current = _load(key)
    return current


# --- Current quotes -------------------------------------------------------------------------------
#
# The oracle's ``market_quotes_current()`` reads every index state and every mark volatility (two
# queries, ~130 rows): for a what-if that is more work than the engine run. ``quotes_current`` is
# the one way every consumer reads the quotes, sweeps included: its answer is the uncached one. The
# market only moves when the oracle writes, and every change of an index state that matters (a new
# price, a status change, a confirmation) appends an ``IndexPrice`` row; every new mark volatility
# rewrites its ``VolMark`` with ``received_at`` = now. So the quotes are kept per process and
# re-read when the probe's answer (latest index price row id; mark count and latest ``received_at``;
# instrument count and latest id, for the active-instrument filter) changes. Staleness depends on
# the clock: the cached quotes also expire at the earliest ``fresh_until`` of a symbol reading
# ok/degraded (after it that symbol reads stale) or ``quorum_until`` of one reading ok (after it,
# degraded), and in any case after ``QUOTES_MAX_AGE_SECONDS``.

QUOTES_MAX_AGE_SECONDS = 2.0


@dataclass(frozen=True, eq=False)
class _CachedQuotes:
    key: tuple
    quotes: MarketQuotes
    valid_until: datetime  # wall clock: the earliest moment a symbol's status changes with the clock
    loaded_at: float


_quotes: _CachedQuotes | None = None


def _quotes_probe(*, now: datetime) -> tuple:
    prices, states, marks = IndexPrice._meta.db_table, IndexState._meta.db_table, VolMark._meta.db_table
    instruments = Instrument._meta.db_table
    sql = (
        f"SELECT (SELECT max(id) FROM {prices}), (SELECT count(*) FROM {states}),"
        f" (SELECT count(*) FROM {marks}), (SELECT max(received_at) FROM {marks}),"
        f" (SELECT count(*) FROM {instruments}), (SELECT max(id) FROM {instruments}),"
        # A symbol already past its fresh_until reads stale (past its quorum_until, degraded) until
        # the oracle writes again.
        f" (SELECT min(fresh_until) FROM {states} WHERE status IN (%s, %s) AND fresh_until >= %s),"
        f" (SELECT min(quorum_until) FROM {states} WHERE status = %s AND quorum_until >= %s)"
    )
    # ``now`` as the ORM stores datetimes (SQLite: naive UTC text, compared as text).
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(sql, [OK, DEGRADED, at, OK, at])
        *key, fresh_until, quorum_until = cursor.fetchone()
    changes = [datetime_aware(moment) for moment in (fresh_until, quorum_until) if moment is not None]
    return tuple(key), min(changes) if changes else None


def quotes_current() -> MarketQuotes:
    """The oracle's current market: the one way every consumer (sweeps, liquidations, what-if,
    withdrawals, the API, the web app, the impact preview, the dashboards) reads the quotes.

    It is ``clearing.marketdata.selectors.market_quotes_current()`` valued now, from the
    per-process cache while the oracle has written nothing new (one probe query), so it gives the
    same statuses, hence the same fail-closed answer (``unsafe_for_liquidation``), as an uncached
    read at the same moment."""
    global _quotes
    now = timezone.now()
    key, changes_at = _quotes_probe(now=now)
    cached = _quotes
    if (
        cached is None
        or cached.key != key
        or now > cached.valid_until
        or time.monotonic() - cached.loaded_at > QUOTES_MAX_AGE_SECONDS
    ):
        quotes = market_quotes_current(at=now)
        valid_until = changes_at if changes_at is not None else now + timedelta(days=1)
        _quotes = _CachedQuotes(key=key, quotes=quotes, valid_until=valid_until, loaded_at=time.monotonic())
        return quotes
    return replace(cached.quotes, valuation_time=now)
