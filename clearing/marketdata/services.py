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
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Asset, Role, User
from clearing.marketdata.aggregation import (
    DEGRADED,
    OK,
    STALE,
    UNCONFIRMED,
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
    OpsAlert,
    PriceObservation,
    PriceSource,
    SourceQuote,
    SymbolKind,
    VolMark,
    VolObservation,
)
from clearing.marketdata.signals import index_moved
from clearing.models import Instrument, InstrumentKind
from clearing.validation import decimal_finite, decimal_positive, errors_prefixed
from riskengine.models import ParameterStatus, UnderlyingParameters

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
ORACLE_FIELDS = (
    "max_age_seconds",
    "max_deviation",
    "min_sources",
    "breaker_move",
    "breaker_window_seconds",
    "event_move",
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


# --- Ops alerts ----------------------------------------------------------------------------------


def ops_alert_raise(*, kind: str, key: str, message: str) -> OpsAlert:
    """Open an alert, or bump the open one with the same ``(kind, key)`` (count, message, time)."""
    now = timezone.now()
    with transaction.atomic():
        alert = OpsAlert.objects.select_for_update().filter(kind=kind, key=key, resolved_at=None).first()
        if alert is not None:
            alert.raise_count += 1
            alert.message = message
            alert.last_raised_at = now
            alert.save(update_fields=["raise_count", "message", "last_raised_at"])
            return alert
        try:
            with transaction.atomic():
                return OpsAlert.objects.create(kind=kind, key=key, message=message, last_raised_at=now)
        except IntegrityError:
            # Another process opened it between our read and our insert: bump that one.
            alert = OpsAlert.objects.select_for_update().get(kind=kind, key=key, resolved_at=None)
            alert.raise_count += 1
            alert.last_raised_at = now
            alert.save(update_fields=["raise_count", "last_raised_at"])
            return alert


def ops_alert_resolve(*, kind: str, key: str) -> int:
    """Close the open alert ``(kind, key)``, if any; returns how many were closed (0 or 1)."""
    return OpsAlert.objects.filter(kind=kind, key=key, resolved_at=None).update(resolved_at=timezone.now())


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


def oracle_rules(*, symbols: Iterable[str]) -> dict[str, tuple[str, OracleRules]]:
    """``symbol → (kind, rules)`` for the known symbols among ``symbols`` (two queries).

    Underlyings take their rules from the active parameter set; an underlying without a row in it
    is left out (it cannot be priced). Unlinked assets other than the settlement asset take
    ``ASSET_ORACLE_RULES``.
    """
    wanted = set(symbols)
    found: dict[str, tuple[str, OracleRules]] = {}
    rows = UnderlyingParameters.objects.filter(
        parameter_set__status=ParameterStatus.ACTIVE,
        underlying__symbol__in=wanted,
        underlying__is_active=True,
    ).values_list("underlying__symbol", *ORACLE_FIELDS)
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


# Below this many rows one INSERT beats drawing ids and opening a COPY.
COPY_THRESHOLD = 20


def _ledger_insert(model, rows: list, fields: tuple[str, ...]) -> None:
    """Insert ``rows`` (unsaved instances of ``model``) and set their primary keys.

    On PostgreSQL the ids are drawn from the table's sequence and the rows go in with one COPY:
    every observation stores two ledger rows (the observation and its index price), and COPY
    is what lets the oracle keep up with thousands of observations per second (see
    docs/performance.md). Elsewhere (the embedded SQLite stack) ``bulk_create``.
    """
    if not rows:
        return
    if connection.vendor != "postgresql" or len(rows) < COPY_THRESHOLD:
        model.objects.bulk_create(rows)
        return
    meta = model._meta
    columns = [meta.get_field(name).column for name in fields]
    attnames = [meta.get_field(name).attname for name in fields]
    json_fields = {
        meta.get_field(name).attname
        for name in fields
        if meta.get_field(name).get_internal_type() == "JSONField"
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [meta.db_table, len(rows)],
        )
        ids = [pk for (pk,) in cursor.fetchall()]
        statement = f"COPY {connection.ops.quote_name(meta.db_table)} (id, {', '.join(columns)}) FROM STDIN"
        with cursor.cursor.copy(statement) as copy:
            for pk, row in zip(ids, rows, strict=True):
                row.pk = pk
                copy.write_row(
                    [pk]
                    + [
                        json.dumps(getattr(row, name)) if name in json_fields else getattr(row, name)
                        for name in attnames
                    ]
                )
    for row in rows:
        row._state.adding = False
        row._state.db = connection.alias


OBSERVATION_FIELDS = ("source", "symbol", "price", "source_time", "received_at")
INDEX_PRICE_FIELDS = (
    "symbol",
    "status",
    "price",
    "last_good_price",
    "sources",
    "exclusions",
    "note",
    "observation",
    "confirmed_by",
    "computed_at",
)


@dataclass
class _Move:
    symbol: str
    kind: str
    reference_price: Decimal
    price: Decimal
    row: IndexPrice


def _aggregate_step(
    *,
    state: IndexState,
    quotes: dict[int, Quote],
    rules: OracleRules,
    now: datetime,
    observation: PriceObservation | None,
    moves: list[_Move],
) -> IndexPrice:
    """Aggregate one symbol, update ``state`` in memory, return the unsaved ``IndexPrice``."""
    result = index_aggregate(
        list(quotes.values()),
        rules=rules,
        prior=PriorState(
            last_good_price=state.last_good_price,
            last_good_at=state.last_good_at,
            pending_price=state.pending_price,
        ),
        now=now,
    )
    row = IndexPrice(
        symbol=state.symbol,
        status=result.status,
        price=result.price,
        last_good_price=result.last_good_price,
        sources=list(result.sources),
        exclusions=[e.as_json() for e in result.exclusions],
        note=result.note,
        observation=observation,
        computed_at=now,
    )
    state.status = result.status
    state.price = result.price
    state.last_good_price = result.last_good_price
    state.last_good_at = result.last_good_at
    state.pending_price = result.pending_price
    state.pending_status = result.pending_status
    state.pending_since = (state.pending_since or now) if result.pending_price is not None else None
    state.fresh_until = result.fresh_until
    state._index_row = row
    if result.is_good:
        state._good_row = row
        _event_check(state=state, rules=rules, now=now, row=row, moves=moves)
    return row


def _event_check(
    *, state: IndexState, rules: OracleRules, now: datetime, row: IndexPrice, moves: list[_Move]
):
    price = state.last_good_price
    reference = state.reference_price
    if reference is None:
        # First good price: it is the reference until the first sweep sets one.
        state.reference_price, state.reference_at = price, now
    elif abs(price / reference - 1) > rules.event_move:
        moves.append(_Move(state.symbol, state.kind, reference, price, row))
        state.reference_price, state.reference_at = price, now


def _states_lock(rules: dict[str, tuple[str, OracleRules]]) -> dict[str, IndexState]:
    IndexState.objects.bulk_create(
        [IndexState(symbol=symbol, kind=kind) for symbol, (kind, _) in rules.items()], ignore_conflicts=True
    )
    return {
        s.symbol: s
        for s in IndexState.objects.select_for_update().filter(symbol__in=list(rules)).order_by("symbol")
    }


def _quotes_load(
    symbols: Iterable[str],
) -> tuple[dict[str, dict[int, Quote]], dict[tuple[str, int], SourceQuote]]:
    by_symbol: dict[str, dict[int, Quote]] = {}
    rows: dict[tuple[str, int], SourceQuote] = {}
    for quote in SourceQuote.objects.filter(symbol__in=list(symbols)).select_related("source"):
        by_symbol.setdefault(quote.symbol, {})[quote.source_id] = Quote(
            quote.source.name, quote.price, quote.source_time
        )
        rows[(quote.symbol, quote.source_id)] = quote
    return by_symbol, rows


STATE_FIELDS = [
    "status",
    "price",
    "last_good_price",
    "last_good_at",
    "pending_price",
    "pending_status",
    "pending_since",
    "fresh_until",
    "last_index_price",
    "last_good_index_price",
    "reference_price",
    "reference_at",
    "updated_at",
]


def _states_save(
    *, states: Iterable[IndexState], previous_status: dict[str, str], now: datetime, moves: list[_Move]
) -> None:
    """Persist the states (after their index rows got ids), the day's closes, alerts and signals."""
    touched = [s for s in states if hasattr(s, "_index_row")]
    closes = []
    for state in touched:
        state.last_index_price = state._index_row
        if hasattr(state, "_good_row"):
            state.last_good_index_price = state._good_row
            closes.append(IndexClose(symbol=state.symbol, day=now.date(), price=state.last_good_price))
        state.updated_at = now
    IndexState.objects.bulk_update(touched, STATE_FIELDS)
    if closes:
        # The day's close is the last good price of the day (calibration reads it).
        IndexClose.objects.bulk_create(
            closes,
            update_conflicts=True,
            unique_fields=["symbol", "day"],
            update_fields=["price", "origin", "updated_at"],
        )
    for state in touched:
        if state.status != previous_status.get(state.symbol):
            _status_alerts(state)
    # Members exposed to a symbol hear of its status change live, through the outbox (same transaction).
    from frontend.services import price_status_events_publish

    price_status_events_publish(
        changes=[(state.symbol, previous_status.get(state.symbol, ""), state.status) for state in touched]
    )
    if moves:
        transaction.on_commit(partial(_moves_send, list(moves)))


def _status_alerts(state: IndexState) -> None:
    for status, kind in ALERT_FOR_STATUS.items():
        if status == state.status:
            what = {
                STALE: "no fresh price source; sweeps use the last good price "
                f"{state.last_good_price} and liquidations of exposed accounts are suspended",
                UNCONFIRMED: f"a move to {state.pending_price} from the last good price "
                f"{state.last_good_price} is held by the circuit breaker; confirm it in the oracle "
                "or wait for the next aggregation",
                DEGRADED: "fewer price sources than required",
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
            index_price_id=move.row.pk,
        )


@transaction.atomic
def price_observations_submit(*, observations: Sequence[PriceIn]) -> list[IndexPrice]:
    """Store a batch of observations and aggregate after each; one ``IndexPrice`` per observation,
    in order. Any bad observation refuses the whole batch (``observations[i].<field>``)."""
    now = timezone.now()
    checked = []
    for index, item in enumerate(observations):
        try:
            price = decimal_positive(item.price, field="price")
            source_time = _source_time_check(item.source_time, now=now, field="source_time")
            if not isinstance(item.symbol, str) or not item.symbol:
                raise ValidationError({"symbol": "Required."})
        except ValidationError as error:
            raise (
                errors_prefixed(error, f"observations[{index}]") if len(observations) > 1 else error
            ) from None
        checked.append((item, price, source_time))
    if not checked:
        return []
    single = len(checked) == 1

    def field(index: int, name: str) -> str:
        return name if single else f"observations[{index}].{name}"

    sources = _sources_resolve([item.source_user for item, _, _ in checked], lambda i: field(i, "source"))
    rules = oracle_rules(symbols={item.symbol for item, _, _ in checked})
    for index, (item, _, _) in enumerate(checked):
        if item.symbol not in rules:
            raise ValidationError({field(index, "symbol"): _symbol_error(item.symbol)})

    states = _states_lock(rules)
    previous_status = {symbol: state.status for symbol, state in states.items()}
    quotes, _ = _quotes_load(rules)
    stored = [
        PriceObservation(
            source=sources[item.source_user.pk],
            symbol=item.symbol,
            price=price,
            source_time=source_time,
            received_at=now,
        )
        for item, price, source_time in checked
    ]
    _ledger_insert(PriceObservation, stored, OBSERVATION_FIELDS)
    rows: list[IndexPrice] = []
    moves: list[_Move] = []
    changed_quotes: dict[tuple[str, int], SourceQuote] = {}
    for observation in stored:
        source = sources[observation.source.user_id]
        symbol_quotes = quotes.setdefault(observation.symbol, {})
        current = symbol_quotes.get(source.pk)
        # A late observation (older source time than the source's latest) is kept in the ledger
        # but does not replace the newer quote.
        if current is None or observation.source_time >= current.source_time:
            symbol_quotes[source.pk] = Quote(source.name, observation.price, observation.source_time)
            changed_quotes[(observation.symbol, source.pk)] = SourceQuote(
                symbol=observation.symbol,
                source=source,
                price=observation.price,
                source_time=observation.source_time,
                received_at=now,
                observation=observation,
            )
        _, symbol_rules = rules[observation.symbol]
        rows.append(
            _aggregate_step(
                state=states[observation.symbol],
                quotes=symbol_quotes,
                rules=symbol_rules,
                now=now,
                observation=observation,
                moves=moves,
            )
        )
    _ledger_insert(IndexPrice, rows, INDEX_PRICE_FIELDS)
    if changed_quotes:
        SourceQuote.objects.bulk_create(
            list(changed_quotes.values()),
            update_conflicts=True,
            unique_fields=["symbol", "source"],
            update_fields=["price", "source_time", "received_at", "observation"],
        )
    _states_save(states=states.values(), previous_status=previous_status, now=now, moves=moves)
    return rows


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
    ``fresh_until`` is recorded ``stale`` (history row, ops alert) even if no observation arrives.
    Only symbols that need it are written."""
    now = timezone.now()
    due = IndexState.objects.filter(fresh_until__lt=now).exclude(status=STALE)
    if symbols is not None:
        due = due.filter(symbol__in=list(symbols))
    wanted = list(due.values_list("symbol", flat=True))
    if not wanted:
        return []
    rules = oracle_rules(symbols=wanted)
    states = _states_lock(rules)
    previous_status = {symbol: state.status for symbol, state in states.items()}
    quotes, _ = _quotes_load(rules)
    moves: list[_Move] = []
    rows = [
        _aggregate_step(
            state=states[symbol],
            quotes=quotes.get(symbol, {}),
            rules=rules[symbol][1],
            now=now,
            observation=None,
            moves=moves,
        )
        for symbol in sorted(rules)
        if states[symbol].fresh_until is not None and states[symbol].fresh_until < now
    ]
    _ledger_insert(IndexPrice, rows, INDEX_PRICE_FIELDS)
    _states_save(states=states.values(), previous_status=previous_status, now=now, moves=moves)
    return rows


@transaction.atomic
def index_price_confirm(*, symbol: str, confirmed_by: User) -> IndexPrice:
    """An ops user confirms the move the circuit breaker holds for ``symbol``: the held price
    becomes the last good price (with the status it would have had), recorded with who confirmed."""
    if confirmed_by.role != Role.OPS:
        raise ValidationError({"confirmed_by": "Only venue ops can confirm a held price."})
    state = IndexState.objects.select_for_update().filter(symbol=symbol).first()
    if state is None:
        raise ValidationError({"symbol": f"Unknown symbol {symbol!r}."})
    if state.status != UNCONFIRMED or state.pending_price is None:
        raise ValidationError(
            {"symbol": f"{symbol} has no move held for confirmation (status {state.status})."}
        )
    now = timezone.now()
    rules = oracle_rules(symbols=[symbol])
    previous = state.last_good_price
    row = IndexPrice(
        symbol=symbol,
        status=state.pending_status or OK,
        price=state.pending_price,
        last_good_price=state.pending_price,
        sources=list(state.last_index_price.sources) if state.last_index_price_id else [],
        exclusions=list(state.last_index_price.exclusions) if state.last_index_price_id else [],
        note=f"move from {previous} to {state.pending_price} confirmed by {confirmed_by.username}",
        confirmed_by=confirmed_by,
        computed_at=now,
    )
    row.save()
    state.status = row.status
    state.price = state.last_good_price = state.pending_price
    state.last_good_at = now
    state.pending_price, state.pending_status, state.pending_since = None, "", None
    state._index_row = state._good_row = row
    moves: list[_Move] = []
    if symbol in rules:
        _event_check(state=state, rules=rules[symbol][1], now=now, row=row, moves=moves)
    _states_save(states=[state], previous_status={symbol: UNCONFIRMED}, now=now, moves=moves)
    return row


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
    "ops_alert_raise",
    "ops_alert_resolve",
    "oracle_rules",
    "price_observation_submit",
    "price_observations_submit",
    "price_source_register",
    "vol_observation_submit",
    "vol_observations_submit",
]
