"""Writes of the oracle: observations in, index prices out.

``price_observations_submit`` is the one writer of index prices. In one transaction it validates
every observation (nothing is stored if any is bad), appends them, and aggregates the symbol after
each observation (``clearing.marketdata.aggregation``), storing one ``IndexPrice`` per observation.
The per-symbol ``IndexState`` rows are locked in symbol order first, so concurrent sources queue per
symbol and never deadlock. Event-sweep signals go out only after the commit.

Oracle thresholds come from the active parameter set (``UnderlyingParameters``) for underlyings
and from ``ASSET_ORACLE_RULES`` for collateral assets not linked to an underlying (stablecoins):
assets have no parameter rows of their own for these, and a stablecoin's tolerance is tighter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.base import ModelState
from django.utils import timezone

from accounts.models import Asset, Role, User
from clearing.bulk import COPY_MIN_ROWS, ids_draw, pipeline, rows_copy, rows_update, rows_upsert
from clearing.marketdata.aggregation import (
    DEGRADED,
    OK,
    PRICE_PLACES,
    STALE,
    UNCONFIRMED,
    Exclusion,
    OracleRules,
    PriorState,
    Quote,
    index_aggregate,
)
from clearing.marketdata.models import (
    IndexClose,
    IndexPrice,
    IndexState,
    IndexStatus,
    PriceObservation,
    PriceSource,
    SourceQuote,
    SymbolKind,
    VolMark,
    VolObservation,
)
from clearing.marketdata.signals import index_moved, price_status_changed
from clearing.models import Instrument, InstrumentKind
from clearing.ops.alerts import ops_alert_raise, ops_alert_resolve
from clearing.validation import decimal_finite, decimal_positive, errors_prefixed

# How far in the future a source's clock may be before its observation is refused.
MAX_CLOCK_SKEW = timedelta(seconds=5)
# Mark implied volatilities outside [1 %, 500 %] are refused as nonsense.
IV_MIN, IV_MAX = Decimal("0.01"), Decimal("5")
# Unlinked collateral assets (stablecoins): fresh within a minute, 0.5 % tolerance between
# sources, a 5 % move within 5 minutes is held for confirmation, a 0.5 % move since the last sweep
# triggers an event sweep of the accounts holding it.
ASSET_ORACLE_RULES = OracleRules(
    max_age=timedelta(seconds=60),
    max_deviation=Decimal("0.005"),
    min_sources=3,
    breaker_move=Decimal("0.05"),
    breaker_window=timedelta(seconds=300),
    event_move=Decimal("0.005"),
)
ALERT_FOR_STATUS = {
    STALE: "price_stale",
    UNCONFIRMED: "price_unconfirmed",
    DEGRADED: "price_degraded",
}


@dataclass(frozen=True)
class PriceIn:
    """One observation of a batch."""

    source_user: User
    symbol: str
    price: object
    source_time: datetime


@dataclass(frozen=True)
class VolIn:
    source_user: User
    instrument: str
    iv: object
    source_time: datetime


# --- Sources -------------------------------------------------------------------------------------


@transaction.atomic
def price_source_register(*, user: User, name: str | None = None) -> PriceSource:
    """Make a ``price_source`` system user an oracle source (idempotent)."""
    if user.role != Role.PRICE_SOURCE:
        raise ValidationError({"user": "Only price_source users can be price sources."})
    source, _ = PriceSource.objects.get_or_create(user=user, defaults={"name": name or user.username})
    return source


def _sources_resolve(users: Sequence[User], field: Callable[[int], str]) -> dict[int, PriceSource]:
    """``user id → PriceSource`` in one query; ``field(i)`` names the field of the i-th user."""
    sources = {
        s.user_id: s
        for s in PriceSource.objects.filter(
            user_id__in={user.pk for user in users}, is_active=True, user__is_active=True
        )
    }
    for index, user in enumerate(users):
        if user is None or user.pk not in sources:
            raise ValidationError({field(index): f"{user} is not an active price source."})
    return sources


# --- Rules ---------------------------------------------------------------------------------------


# The rules of underlyings are governed in the risk parameter set, which the risk engine owns: it
# registers their reader here in its ``AppConfig.ready()`` (``riskengine.selectors.
# underlying_oracle_rules``), so the oracle reads them without importing the engine. The reader
# takes a set of symbols and returns ``(symbol, *UnderlyingParameters.ORACLE_FIELDS)`` rows (see
# ``riskengine.models``) of the active set's active
# underlyings among them.
UnderlyingRulesReader = Callable[[set[str]], Iterable[tuple]]
_underlying_rules_readers: list[UnderlyingRulesReader] = []


def oracle_underlying_rules_register(read: UnderlyingRulesReader) -> None:
    """Make ``read`` the source of the underlyings' oracle rules (replacing any earlier one)."""
    _underlying_rules_readers[:] = [read]


def _underlying_rules_read(symbols: set[str]) -> Iterable[tuple]:
    if not _underlying_rules_readers:
        raise RuntimeError("no reader of the underlyings' oracle rules is registered (riskengine app)")
    return _underlying_rules_readers[0](symbols)


def oracle_rules(*, symbols: Iterable[str]) -> dict[str, tuple[str, OracleRules]]:
    """``symbol → (kind, rules)`` for the known symbols among ``symbols`` (two queries).

    Underlyings take their rules from the active parameter set; an underlying without a row in it
    is left out (it cannot be priced). Unlinked assets other than the settlement asset take
    ``ASSET_ORACLE_RULES``.
    """
    wanted = set(symbols)
    found: dict[str, tuple[str, OracleRules]] = {}
    rows = _underlying_rules_read(wanted)
    for symbol, max_age, max_dev, min_sources, breaker, window, event in rows:
        found[symbol] = (
            SymbolKind.UNDERLYING,
            OracleRules(
                max_age=timedelta(seconds=max_age),
                max_deviation=max_dev,
                min_sources=min_sources,
                breaker_move=breaker,
                breaker_window=timedelta(seconds=window),
                event_move=event,
            ),
        )
    rest = wanted - set(found) - {settings.SETTLEMENT_ASSET}
    if rest:
        for symbol in Asset.objects.filter(symbol__in=rest, underlying__isnull=True).values_list(
            "symbol", flat=True
        ):
            found[symbol] = (SymbolKind.ASSET, ASSET_ORACLE_RULES)
    return found


def _symbol_error(symbol: str) -> str:
    if symbol == settings.SETTLEMENT_ASSET:
        return f"{symbol} is the settlement asset: its price is always 1 and is never fed."
    return (
        f"Unknown symbol {symbol!r}: neither an underlying priced by the active parameter set "
        "nor an unlinked collateral asset."
    )


def _source_time_check(value: object, *, now: datetime, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError({field: "Must be a date and time."})
    if timezone.is_naive(value):
        raise ValidationError({field: "Must carry a time zone."})
    if value > now + MAX_CLOCK_SKEW:
        raise ValidationError({field: f"In the future beyond the allowed clock skew of {MAX_CLOCK_SKEW}."})
    return value


# --- Prices --------------------------------------------------------------------------------------

# Column order of the oracle's in-memory rows: the models' concrete field order (a test checks
# it), so the hot path builds plain tuples and model instances only for what it returns.
OBSERVATION_COLUMNS = ("id", "source_id", "symbol", "price", "source_time", "received_at")
INDEX_PRICE_COLUMNS = (
    "id",
    "symbol",
    "status",
    "price",
    "last_good_price",
    "sources",
    "exclusions",
    "note",
    "observation_id",
    "confirmed_by_id",
    "computed_at",
)
STATE_FIELDS = (
    "status",
    "price",
    "last_good_price",
    "last_good_at",
    "pending_price",
    "pending_status",
    "pending_since",
    "pending_sources",
    "fresh_until",
    "quorum_until",
    "last_index_price_id",
    "last_good_index_price_id",
    "reference_price",
    "reference_at",
    "updated_at",
)


@dataclass
class _Move:
    symbol: str
    kind: str
    reference_price: Decimal
    price: Decimal
    position: int  # of its index price among the run's rows
    index_price_id: int | None = None


class _Run:
    """One aggregation run (a batch, a refresh or a confirmation) with the per-symbol state in
    memory: the locked ``IndexState`` rows and each source's latest quote are read once, every
    aggregation updates them in place and appends its index price as a plain tuple
    (``INDEX_PRICE_COLUMNS`` without the id). ``_run_save`` writes it all at the end."""

    def __init__(
        self,
        *,
        rules: dict[str, tuple[str, OracleRules]],
        now: datetime,
        states: dict[str, IndexState],
        quotes: dict[str, dict[int, Quote]],
        previous_status: dict[str, str] | None = None,
    ):
        self.rules = rules
        self.now = now
        self.states = states
        self.quotes = quotes
        self.previous_status = previous_status or {s: state.status for s, state in states.items()}
        self.rows: list[tuple] = []
        self.moves: list[_Move] = []
        self.last_row: dict[str, int] = {}  # symbol → position of its latest row
        self.last_good_row: dict[str, int] = {}

    def aggregate(self, symbol: str, observation_id: int | None) -> None:
        state = self.states[symbol]
        rules = self.rules[symbol][1]
        now = self.now
        result = index_aggregate(
            list(self.quotes.get(symbol, {}).values()),
            rules=rules,
            prior=PriorState(
                state.last_good_price,
                state.last_good_at,
                state.pending_price,
                frozenset(state.pending_sources or ()) if state.pending_price is not None else frozenset(),
            ),
            now=now,
        )
        position = len(self.rows)
        self.rows.append(
            (
                symbol,
                result.status,
                result.price,
                result.last_good_price,
                result.sources,
                result.exclusions,
                result.note,
                observation_id,
                None,
                now,
            )
        )
        self.last_row[symbol] = position
        state.status = result.status
        state.price = result.price
        state.last_good_price = result.last_good_price
        state.last_good_at = result.last_good_at
        state.pending_price = result.pending_price
        state.pending_status = result.pending_status
        state.pending_since = (state.pending_since or now) if result.pending_price is not None else None
        state.pending_sources = list(result.pending_sources)
        state.fresh_until = result.fresh_until
        state.quorum_until = result.quorum_until
        if result.is_good:
            self.good(symbol, position)

    def good(self, symbol: str, position: int) -> None:
        """The row at ``position`` set ``symbol``'s last good price: event check."""
        self.last_good_row[symbol] = position
        if symbol not in self.rules:
            return
        state = self.states[symbol]
        price, reference = state.last_good_price, state.reference_price
        if reference is None:
            # First good price: it is the reference until the first sweep sets one.
            state.reference_price, state.reference_at = price, self.now
        elif abs(price / reference - 1) > self.rules[symbol][1].event_move:
            self.moves.append(_Move(symbol, state.kind, reference, price, position))
            state.reference_price, state.reference_at = price, self.now


def _states_lock(rules: dict[str, tuple[str, OracleRules]]) -> dict[str, IndexState]:
    """Lock the symbols' state rows in symbol order, creating missing ones first (only the first
    time a symbol is priced; usually this is one query)."""
    locked = IndexState.objects.select_for_update().filter(symbol__in=list(rules)).order_by("symbol")
    states = {s.symbol: s for s in locked}
    missing = sorted(set(rules) - set(states))
    if missing:
        # Inserted in symbol order, as locks are taken, so first-time writers queue.
        IndexState.objects.bulk_create(
            [IndexState(symbol=symbol, kind=rules[symbol][0]) for symbol in missing], ignore_conflicts=True
        )
        states = {s.symbol: s for s in locked.all()}
    return states


def _quotes_load(symbols: Iterable[str]) -> dict[str, dict[int, Quote]]:
    """``symbol → source id → Quote``: each source's latest quote (one query)."""
    by_symbol: dict[str, dict[int, Quote]] = {}
    rows = SourceQuote.objects.filter(symbol__in=list(symbols)).values_list(
        "symbol", "source_id", "source__name", "price", "source_time"
    )
    for symbol, source_id, name, price, source_time in rows:
        by_symbol.setdefault(symbol, {})[source_id] = Quote(name, price, source_time)
    return by_symbol


def _run_start(rules: dict[str, tuple[str, OracleRules]], now: datetime) -> _Run:
    return _Run(rules=rules, now=now, states=_states_lock(rules), quotes=_quotes_load(rules))


def _json_cached(cache: dict, value: tuple) -> str:
    """JSON of a row's ``sources`` or ``exclusions``: the same few values repeat across a batch."""
    text = cache.get(value)
    if text is None:
        text = cache[value] = json.dumps([v.as_json() if isinstance(v, Exclusion) else v for v in value])
    return text


def _index_price(pk: int, row: tuple) -> IndexPrice:
    symbol, status, price, last_good, sources, exclusions, *rest = row
    values = (pk, symbol, status, price, last_good, list(sources), [e.as_json() for e in exclusions], *rest)
    # A stored row, materialised as unpickling does (state and field values, no ``__init__``):
    # a batch returns hundreds of them and ``Model.__init__`` was a tenth of its time.
    row = IndexPrice.__new__(IndexPrice)
    row.__dict__.update(zip(INDEX_PRICE_COLUMNS, values, strict=True))
    row._state = ModelState()
    row._state.adding, row._state.db = False, connection.alias
    return row


def _run_save(
    run: _Run,
    *,
    observations: Sequence[tuple] = (),
    index_ids: list[int] | None = None,
    quotes: Sequence[tuple] = (),
) -> list[IndexPrice]:
    """Write a run: its ``observations`` (``OBSERVATION_COLUMNS`` tuples), its index prices (with
    ``index_ids`` drawn beforehand, or drawn here), the changed source ``quotes`` (``(symbol,
    source_id, price, source_time, received_at, observation_id)``), the states, the day's
    closes, alerts and signals. Returns the stored index prices, in order."""
    now, rows = run.now, run.rows
    if index_ids is None:
        index_ids = [pk for (pk,) in ids_draw(models=[IndexPrice], count=len(rows))]
    cache: dict = {}
    index_rows = [
        (pk, symbol, status, price, good, _json_cached(cache, sources), _json_cached(cache, excl), *rest)
        for pk, (symbol, status, price, good, sources, excl, *rest) in zip(index_ids, rows, strict=True)
    ]
    touched = [run.states[symbol] for symbol in sorted(run.last_row)]
    closes = []
    for state in touched:
        state.last_index_price_id = index_ids[run.last_row[state.symbol]]
        if state.symbol in run.last_good_row:
            state.last_good_index_price_id = index_ids[run.last_good_row[state.symbol]]
            closes.append((state.symbol, now.date(), state.last_good_price, "oracle", now))
        state.updated_at = now
    for move in run.moves:
        move.index_price_id = index_ids[move.position]
    _run_write(observations=observations, index_rows=index_rows, quotes=quotes, states=touched, closes=closes)
    for state in touched:
        if state.status != run.previous_status.get(state.symbol):
            _status_alerts(state)
    # Members exposed to a symbol hear of its status change live, through the outbox (same transaction).
    price_status_changed.send(
        sender=__name__,
        changes=[(s.symbol, run.previous_status.get(s.symbol, ""), s.status) for s in touched],
    )
    if run.moves:
        transaction.on_commit(partial(_moves_send, list(run.moves)))
    return [_index_price(pk, row) for pk, row in zip(index_ids, rows, strict=True)]


QUOTE_COLUMNS = ("symbol", "source_id", "price", "source_time", "received_at", "observation_id")
# The day's close is the last good price of the day (calibration reads it).
CLOSE_COLUMNS = ("symbol", "day", "price", "origin", "updated_at")
STATE_JSON_FIELDS = {"pending_sources"}


def _run_write(*, observations, index_rows, quotes, states, closes) -> None:
    # COPY cannot run inside a pipeline: large appends go first, the rest in one round trip.
    large = len(index_rows) >= COPY_MIN_ROWS
    if large:
        rows_copy(model=PriceObservation, columns=OBSERVATION_COLUMNS, rows=observations)
        rows_copy(model=IndexPrice, columns=INDEX_PRICE_COLUMNS, rows=index_rows)
    with pipeline():
        if not large:
            rows_copy(model=PriceObservation, columns=OBSERVATION_COLUMNS, rows=observations)
            rows_copy(model=IndexPrice, columns=INDEX_PRICE_COLUMNS, rows=index_rows)
        rows_upsert(
            model=SourceQuote,
            columns=QUOTE_COLUMNS,
            rows=quotes,
            conflict=("symbol", "source_id"),
            update=QUOTE_COLUMNS[2:],
        )
        rows_update(
            model=IndexState,
            columns=STATE_FIELDS,
            rows=[
                [
                    json.dumps(getattr(s, name)) if name in STATE_JSON_FIELDS else getattr(s, name)
                    for name in STATE_FIELDS
                ]
                + [s.pk]
                for s in states
            ],
        )
        rows_upsert(
            model=IndexClose,
            columns=CLOSE_COLUMNS,
            rows=closes,
            conflict=("symbol", "day"),
            update=CLOSE_COLUMNS[2:],
        )


def _status_alerts(state: IndexState) -> None:
    for status, kind in ALERT_FOR_STATUS.items():
        if status == state.status:
            what = {
                STALE: "no fresh price source; sweeps use the last good price "
                f"{state.last_good_price} and liquidations of exposed accounts are suspended",
                UNCONFIRMED: f"a move to {state.pending_price} from the last good price "
                f"{state.last_good_price}, reported by {', '.join(state.pending_sources) or 'its sources'}, "
                "is held by the circuit breaker; confirm it in the oracle or wait for another source "
                "to agree",
                DEGRADED: "fewer fresh price sources than required; liquidations of exposed accounts "
                "are suspended until the quorum is back",
            }[status]
            ops_alert_raise(kind=kind, key=state.symbol, message=f"{state.symbol}: {what}.")
        else:
            ops_alert_resolve(kind=kind, key=state.symbol)


def _moves_send(moves: list[_Move]) -> None:
    for move in moves:
        index_moved.send(
            sender=IndexPrice,
            underlying=move.symbol,
            kind=move.kind,
            reference_price=move.reference_price,
            price=move.price,
            index_price_id=move.index_price_id,
        )


@transaction.atomic
def price_observations_submit(*, observations: Sequence[PriceIn]) -> list[IndexPrice]:
    """Store a batch of observations and aggregate after each; one ``IndexPrice`` per observation,
    in order. Any bad observation refuses the whole batch (``observations[i].<field>``).

    A batch gives exactly the index prices that submitting its observations one by one (at the
    same time) would: the per-symbol state is kept in memory across the batch, and the writes
    (observations, index prices, latest quotes, states, closes) happen once per batch at the end.
    """
    now = timezone.now()
    checked = []
    for index, item in enumerate(observations):
        try:
            # At the column's scale (exact: at most 10 places are accepted), so a price held in
            # memory during a batch is the very value a later transaction reads back.
            price = decimal_positive(item.price, field="price").quantize(PRICE_PLACES)
            source_time = _source_time_check(item.source_time, now=now, field="source_time")
            if not isinstance(item.symbol, str) or not item.symbol:
                raise ValidationError({"symbol": "Required."})
        except ValidationError as error:
            raise (
                errors_prefixed(error, f"observations[{index}]") if len(observations) > 1 else error
            ) from None
        checked.append((item.source_user, item.symbol, price, source_time))
    if not checked:
        return []
    single = len(checked) == 1

    def field(index: int, name: str) -> str:
        return name if single else f"observations[{index}].{name}"

    sources = _sources_resolve([user for user, *_ in checked], lambda i: field(i, "source"))
    rules = oracle_rules(symbols={symbol for _, symbol, _, _ in checked})
    for index, (_, symbol, _, _) in enumerate(checked):
        if symbol not in rules:
            raise ValidationError({field(index, "symbol"): _symbol_error(symbol)})

    run = _run_start(rules, now)
    ids = ids_draw(models=[PriceObservation, IndexPrice], count=len(checked))
    observation_ids = [pk for pk, _ in ids]
    index_ids = [pk for _, pk in ids]
    stored = [
        (pk, sources[user.pk].pk, symbol, price, source_time, now)
        for pk, (user, symbol, price, source_time) in zip(observation_ids, checked, strict=True)
    ]
    changed: dict[tuple[str, int], tuple] = {}
    all_quotes = run.quotes
    for observation_id, (user, symbol, price, source_time) in zip(observation_ids, checked, strict=True):
        source = sources[user.pk]
        symbol_quotes = all_quotes.setdefault(symbol, {})
        current = symbol_quotes.get(source.pk)
        # A late observation (older source time than the source's latest) is kept in the ledger
        # but does not replace the newer quote.
        if current is None or source_time >= current.source_time:
            symbol_quotes[source.pk] = Quote(source.name, price, source_time)
            changed[(symbol, source.pk)] = (symbol, source.pk, price, source_time, now, observation_id)
        run.aggregate(symbol, observation_id)
    return _run_save(run, observations=stored, index_ids=index_ids, quotes=list(changed.values()))


def price_observation_submit(
    *, source_user: User, symbol: str, price: object, source_time: datetime
) -> IndexPrice:
    """Store one observation and aggregate its symbol; returns the new ``IndexPrice``.

    Refused with a ValidationError naming ``price``, ``source_time``, ``symbol`` or ``source``
    (nothing stored) for a non-positive/NaN/infinite price, a source time beyond the clock skew,
    an unknown symbol or a user that is not an active price source.
    """
    return price_observations_submit(
        observations=[PriceIn(source_user=source_user, symbol=symbol, price=price, source_time=source_time)]
    )[0]


@transaction.atomic
def index_prices_refresh(*, symbols: Iterable[str] | None = None) -> list[IndexPrice]:
    """Re-aggregate symbols whose sources went quiet (beat, every few seconds): a symbol past its
    ``fresh_until`` is recorded ``stale``, an ``ok`` one past its ``quorum_until`` ``degraded``
    (history row, ops alert) even if no observation arrives. Only symbols that need it are written."""
    now = timezone.now()
    # Sources went quiet: all of them (stale) or enough to lose the quorum (degraded).
    due = IndexState.objects.filter(
        (Q(fresh_until__lt=now) & ~Q(status=STALE)) | Q(status=OK, quorum_until__lt=now)
    )
    if symbols is not None:
        due = due.filter(symbol__in=list(symbols))
    wanted = list(due.values_list("symbol", flat=True))
    if not wanted:
        return []
    run = _run_start(oracle_rules(symbols=wanted), now)
    for symbol in sorted(run.rules):
        state = run.states[symbol]
        quiet = state.fresh_until is not None and state.fresh_until < now
        short = state.status == OK and state.quorum_until is not None and state.quorum_until < now
        if quiet or short:
            run.aggregate(symbol, None)
    return _run_save(run)


@transaction.atomic
def index_price_confirm(*, symbol: str, confirmed_by: User) -> IndexPrice:
    """Confirm the move the circuit breaker holds for ``symbol``: the held price becomes the last
    good price (with the status it would have had), recorded with who confirmed.

    Venue ops may confirm, and so may an active price source *other than* those that reported
    the move (``IndexState.pending_sources``): a source confirming its own move is refused with
    ``PermissionDenied`` and nothing changes. Other roles are refused naming ``confirmed_by``; a
    symbol without a held move naming ``symbol``."""
    source = None
    if confirmed_by.role == Role.PRICE_SOURCE:
        source = PriceSource.objects.filter(user=confirmed_by, is_active=True, user__is_active=True).first()
        if source is None:
            raise ValidationError({"confirmed_by": f"{confirmed_by} is not an active price source."})
    elif confirmed_by.role != Role.OPS:
        raise ValidationError(
            {"confirmed_by": "Only venue ops or another price source can confirm a held price."}
        )
    state = IndexState.objects.select_for_update().filter(symbol=symbol).first()
    if state is None:
        raise ValidationError({"symbol": f"Unknown symbol {symbol!r}."})
    if state.status != UNCONFIRMED or state.pending_price is None:
        raise ValidationError(
            {"symbol": f"{symbol} has no move held for confirmation (status {state.status})."}
        )
    if source is not None and source.name in (state.pending_sources or ()):
        raise PermissionDenied(
            f"{symbol}: the held move to {state.pending_price} was reported by "
            f"{', '.join(state.pending_sources)}; a price source cannot confirm its own move "
            "(another price source or venue ops must)."
        )
    now = timezone.now()
    last = state.last_index_price
    previous = state.last_good_price
    run = _Run(rules=oracle_rules(symbols=[symbol]), now=now, states={symbol: state}, quotes={})
    run.rows.append(
        (
            symbol,
            state.pending_status or OK,
            state.pending_price,
            state.pending_price,
            tuple(last.sources) if last else (),
            tuple(Exclusion(e["source"], Decimal(e["price"]), e["reason"]) for e in last.exclusions)
            if last
            else (),
            f"move from {previous} to {state.pending_price} confirmed by {confirmed_by.username}",
            None,
            confirmed_by.pk,
            now,
        )
    )
    state.status = state.pending_status or OK
    state.price = state.last_good_price = state.pending_price
    state.last_good_at = now
    state.pending_price, state.pending_status, state.pending_since = None, "", None
    state.pending_sources = []
    run.last_row[symbol] = 0
    run.good(symbol, 0)
    return _run_save(run)[0]


@transaction.atomic
def index_sweep_reference_set(*, prices: dict[str, Decimal]) -> int:
    """Record the prices a full sweep used: event sweeps fire on moves from these. Returns the
    number of symbols updated (unknown symbols are ignored: they have no oracle state)."""
    now = timezone.now()
    states = list(IndexState.objects.select_for_update().filter(symbol__in=list(prices)).order_by("symbol"))
    for state in states:
        state.reference_price = decimal_positive(prices[state.symbol], field=f"prices.{state.symbol}")
        state.reference_at = now
    IndexState.objects.bulk_update(states, ["reference_price", "reference_at"])
    return len(states)


# --- Implied volatilities ------------------------------------------------------------------------


@transaction.atomic
def vol_observations_submit(*, observations: Sequence[VolIn]) -> list[VolObservation]:
    """Store mark implied volatilities; each becomes its option's current mark (the latest source
    time wins). Refused as a whole, naming ``instrument``, ``iv`` or ``source_time``."""
    now = timezone.now()
    single = len(observations) == 1

    def field(index: int, name: str) -> str:
        return name if single else f"observations[{index}].{name}"

    instruments = Instrument.objects.in_bulk({o.instrument for o in observations}, field_name="symbol")
    checked = []
    for index, item in enumerate(observations):
        iv = decimal_finite(item.iv, field=field(index, "iv"))
        if not IV_MIN <= iv <= IV_MAX:
            raise ValidationError(
                {field(index, "iv"): f"Implied volatility must be within [{IV_MIN}, {IV_MAX}]."}
            )
        instrument = instruments.get(item.instrument)
        if instrument is None or instrument.kind != InstrumentKind.OPTION or not instrument.is_active:
            raise ValidationError(
                {field(index, "instrument"): f"{item.instrument!r} is not an active option."}
            )
        source_time = _source_time_check(item.source_time, now=now, field=field(index, "source_time"))
        checked.append((item, instrument, iv.quantize(Decimal("1e-8")), source_time))
    sources = _sources_resolve([o.source_user for o in observations], lambda i: field(i, "source"))
    stored = VolObservation.objects.bulk_create(
        [
            VolObservation(
                source=sources[item.source_user.pk],
                instrument=instrument,
                iv=iv,
                source_time=source_time,
                received_at=now,
            )
            for item, instrument, iv, source_time in checked
        ]
    )
    current = {
        m.instrument_id: m for m in VolMark.objects.filter(instrument__in=[o.instrument for o in stored])
    }
    latest: dict[int, VolObservation] = {}
    for observation in stored:
        mark = current.get(observation.instrument_id)
        best = latest.get(observation.instrument_id)
        if (mark is None or observation.source_time >= mark.source_time) and (
            best is None or observation.source_time >= best.source_time
        ):
            latest[observation.instrument_id] = observation
    if latest:
        VolMark.objects.bulk_create(
            [
                VolMark(
                    instrument_id=o.instrument_id,
                    iv=o.iv,
                    source_time=o.source_time,
                    received_at=now,
                    observation=o,
                )
                for o in latest.values()
            ],
            update_conflicts=True,
            unique_fields=["instrument"],
            update_fields=["iv", "source_time", "received_at", "observation"],
        )
    return stored


def vol_observation_submit(
    *, source_user: User, instrument: str, iv: object, source_time: datetime
) -> VolObservation:
    return vol_observations_submit(
        observations=[VolIn(source_user=source_user, instrument=instrument, iv=iv, source_time=source_time)]
    )[0]


__all__ = [
    "ASSET_ORACLE_RULES",
    "DEGRADED",
    "OK",
    "STALE",
    "UNCONFIRMED",
    "IndexStatus",
    "PriceIn",
    "VolIn",
    "index_price_confirm",
    "index_prices_refresh",
    "index_sweep_reference_set",
    "oracle_rules",
    "price_observation_submit",
    "price_observations_submit",
    "price_source_register",
    "vol_observation_submit",
    "vol_observations_submit",
]
