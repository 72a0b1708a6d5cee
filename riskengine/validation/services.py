"""Model validation runs: backtest (methodology v1.1 section 7) and stress (section 8) over every
member account, sharded on Celery like the margin sweeps (``riskengine.sweeps.services``).

A run fixes what its shards share (``validation_run_create``): the parameter set and mode, the
valuation time and the market form (today's option ivs and times to expiry, the base prices of the
stress scenarios), the daily history (the oracle's stored closes, ``IndexClose``, of the days
before the valuation day: complete days only, aligned to the set's underlyings and non-linked
assets; a missing series fails the run naming it) and the insurance fund's value at the run's
prices. Its member accounts are split into shards of consecutive ids.

A shard (``validation_shard_run``) reads its accounts in one database snapshot, backtests those
that hold a position (an account with none has no margin to test) with ``aggregate=False``, and
stresses all of them under the history's crisis windows and the set's hypothetical scenarios
(``StressScenario`` rows). It stores, in one transaction that also marks it done (under the
shard's row lock: running it again changes nothing): its ``AccountBacktest`` and
``AccountStress`` rows and its partial sums for the venue — the venue's total IM and the
exceptions per day, the exception and transition counts, each member's uncovered loss per
scenario, and the net units per instrument and net balance per asset of its backtested accounts.

The shard that completes the run reduces it in the same transaction (``_run_reduce``): pooled
statistics from the summed counts (section 7's venue report: every account-day one observation,
transitions within each account's own sequence); the *aggregate book* — every backtested position
and balance in one portfolio in ``portfolio`` mode — from the summed net book: portfolio-mode IM
and the wealth change are functions of the net units per instrument and the net balance per asset
(the scan, deltas, basis and concentration are linear in them, the short option minimum uses the
net quantity by definition, entry prices cancel in a loss), so the netted book gives the same
figures as the book of every entry, at the cost of one portfolio; Cover-1 and Cover-2 from the
members' summed uncovered losses (a member's accounts may sit in several shards). The venue's
traffic light is the worse of the pooled and the aggregate one. Then the ops alerts: a nightly or
on-demand run of the active set in ``fixed`` mode raises or resolves ``validation_venue_red`` and
``validation_fund_below_cover2`` (an unknown comparison — no fund, an unpriced fund asset — counts
as below: fail closed).

Failures. A transient error (database, broker) is retried by the task; anything else (a missing
option iv, a stressed loss that would not be finite) fails the shard and the run, with the error
and an ops alert (``validation_run_failed``) for nightly and on-demand runs; a run started again
later replaces it.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from accounts.models import AccountKind, MarginAccount, User
from clearing.bulk import atomic_snapshot
from clearing.marketdata.quotes import MarketQuotes
from clearing.marketdata.selectors import index_closes
from clearing.models import Instrument
from clearing.ops.alerts import ops_alerts_raise, ops_alerts_resolve
from clearing.ops.retry import TRANSIENT_ERRORS
from riskengine.core import PORTFOLIO, DocumentError, MarginInput, Portfolios, parse_market, parse_parameters
from riskengine.core.backtest import (
    AGGREGATE,
    LIGHTS,
    backtest,
    backtest_report,
    backtest_statistics,
    observation_rows,
    report_sections,
    statistics,
)
from riskengine.core.history import PriceHistory, align_history, needed_series
from riskengine.core.params import Parameters
from riskengine.core.stress import (
    Scenarios,
    cover,
    historical_scenarios,
    hypothetical_scenarios,
    scenario_prices,
    stress,
)
from riskengine.fund import insurance_fund_value
from riskengine.loading import book_rows_fetch, margin_book_build, market_form_build, market_form_quotes
from riskengine.models import ParameterSet, ParameterStatus
from riskengine.reference import quotes_current
from riskengine.selectors import parameter_set_active, parameters_form
from riskengine.validation import storage
from riskengine.validation.models import (
    AccountBacktest,
    AccountStress,
    Light,
    ShardStatus,
    ValidationKind,
    ValidationMode,
    ValidationRun,
    ValidationShard,
    ValidationStatus,
)

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()

ALERT_RED = "validation_venue_red"
ALERT_COVER2 = "validation_fund_below_cover2"
ALERT_FAILED = "validation_run_failed"
ALERT_KEY = "venue"
SEVERITY = {ALERT_RED: "critical", ALERT_COVER2: "critical", ALERT_FAILED: "warning"}
# Runs whose results stand for the venue's current model: they drive the alerts above.
MONITORING_KINDS = (ValidationKind.NIGHTLY, ValidationKind.ON_DEMAND)


# --- History ---------------------------------------------------------------------------------------


def validation_history(*, parameters: Parameters, until: date) -> dict:
    """The stored daily closes a run of ``parameters`` uses, up to ``until`` inclusive, aligned
    (``riskengine.core.history.align_history``): ``{"days": [ISO...], "series": {symbol:
    [close...]}}``. Raises ``DocumentError`` naming ``prices.<SYMBOL>`` for a missing series."""
    symbols = [symbol for symbol, _ in needed_series(parameters)]
    stored = index_closes(symbols=symbols, until=until)
    series = {
        symbol: (np.array([d for d, _ in rows], dtype="datetime64[D]"), np.array([p for _, p in rows]))
        for symbol, rows in stored.items()
        if rows  # a symbol without closes is missing, and named so
    }
    history = align_history(parameters, series)
    columns = dict(zip(parameters.underlyings, history.underlying_close.T.tolist(), strict=True))
    for a, symbol in enumerate(parameters.assets):
        if symbol in symbols and symbol not in columns:
            columns[symbol] = history.asset_close[:, a].tolist()
    return {"days": np.datetime_as_string(history.days, unit="D").tolist(), "series": columns}


def history_arrays(history: dict, parameters: Parameters) -> PriceHistory:
    """A ``validation_history`` result (a run's ``history``) as the engine's ``PriceHistory``."""
    days = np.array(history["days"], dtype="datetime64[D]")
    return align_history(
        parameters, {symbol: (days, np.array(closes)) for symbol, closes in history["series"].items()}
    )


# --- Creating runs ---------------------------------------------------------------------------------


def _member_account_ids() -> np.ndarray:
    return np.fromiter(
        MarginAccount.objects.filter(kind=AccountKind.MEMBER).order_by("pk").values_list("pk", flat=True),
        dtype=np.int64,
    )


@transaction.atomic
def validation_run_create(
    *,
    kind: str,
    mode: str,
    parameter_set: ParameterSet,
    cause: str,
    proposal: ParameterSet | None = None,
    quotes: MarketQuotes | None = None,
    requested_by: User | None = None,
    mpor_days: int = 2,
    shard_size: int | None = None,
    enqueue: bool = True,
    request_key: str | None = None,
) -> ValidationRun:
    """Fix a run's inputs and split the member accounts into shards of ``shard_size`` (default
    ``CLEARING_VALIDATION_SHARD_SIZE``) consecutive ids; with ``enqueue`` one Celery task per
    shard is sent when the transaction commits. A ``request_key`` already served returns its run.
    A run whose inputs cannot be built (a missing price series, a set that fails validation, a
    history without one observation) is created ``failed`` with the reason, and starts nothing."""
    if request_key is not None and (done := ValidationRun.objects.filter(request_key=request_key).first()):
        return done
    quotes = quotes or quotes_current()
    instruments = Instrument.objects.select_related("underlying").all()
    market = market_form_build(quotes=quotes, instruments=instruments)
    fund = insurance_fund_value(quotes=quotes)
    error, history, rows = "", {}, (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    try:
        parameters = parse_parameters(parameters_form(parameter_set=parameter_set))
        until = quotes.valuation_time.date() - timedelta(days=1)  # complete days only
        history = validation_history(parameters=parameters, until=until)
        rows = observation_rows(history_arrays(history, parameters), mpor_days)
        if rows[0].size == 0:
            raise DocumentError("prices", f"no stored day t has its day t + {mpor_days} stored too")
    except DocumentError as problem:
        error = f"{problem.field}: {problem.message}"
    observed = np.array(history.get("days", []), dtype="datetime64[D]")[rows[0]]
    try:
        with transaction.atomic():
            run = ValidationRun.objects.create(
                kind=kind,
                mode=mode,
                mpor_days=mpor_days,
                parameter_set=parameter_set,
                proposal=proposal,
                cause=cause[:200],
                requested_by=requested_by,
                request_key=request_key,
                valuation_time=quotes.valuation_time,
                market=market,
                statuses=quotes.statuses,
                history=history,
                observations=int(observed.size),
                first_day=observed[0].item() if observed.size else None,
                last_day=observed[-1].item() if observed.size else None,
                fund_value=None if fund is None else fund.value,
                fund_unpriced=list(fund.unpriced) if fund is not None else [],
            )
    except IntegrityError:
        if request_key is None:
            raise
        return ValidationRun.objects.get(request_key=request_key)
    if error:
        _run_fail(run=run, error=error)
        return run
    ids = _member_account_ids()
    size = max(1, shard_size or settings.CLEARING_VALIDATION_SHARD_SIZE)
    shards = ValidationShard.objects.bulk_create(
        [
            ValidationShard(
                run=run,
                number=n,
                first_account_id=int(ids[i]),
                last_account_id=int(ids[min(i + size, ids.size) - 1]),
            )
            for n, i in enumerate(range(0, ids.size, size))
        ]
    )
    run.shard_count = len(shards)
    run.save(update_fields=["shard_count"])
    if not shards:
        try:
            with transaction.atomic():
                _run_reduce(run=run)
        except DocumentError as problem:  # no price to value the scenarios at, say
            _run_fail(run=run, error=f"{problem.field}: {problem.message}")
    elif enqueue:
        shard_ids = [shard.pk for shard in shards]
        transaction.on_commit(lambda: _shards_enqueue(shard_ids))
    return run


def _shards_enqueue(shard_ids: list[int]) -> None:
    from riskengine.tasks import validation_shard  # circular: tasks import this module

    # After the run's commit: a broker error must not fail the caller. The shards stay pending;
    # the next nightly run (or "run now") replaces a run that never completes.
    for shard_id in shard_ids:
        try:
            validation_shard.delay(shard_id)
        except Exception:
            log.exception("could not enqueue validation shard %s", shard_id)


def validation_runs_start(
    *,
    kind: str,
    cause: str,
    requested_by: User | None = None,
    request_key: str | None = None,
    modes: tuple[str, ...] = tuple(ValidationMode.values),
    enqueue: bool = True,
) -> list[ValidationRun]:
    """Runs of the active set in each of ``modes`` (nightly from beat, on demand from the admin),
    at the same prices; keyed ``<request_key>:<mode>`` when ``request_key`` is given."""
    active = parameter_set_active()
    quotes = quotes_current()
    return [
        validation_run_create(
            kind=kind,
            mode=mode,
            parameter_set=active,
            cause=cause,
            quotes=quotes,
            requested_by=requested_by,
            request_key=None if request_key is None else f"{request_key}:{mode}",
            enqueue=enqueue,
        )
        for mode in modes
    ]


def validation_proposal_start(
    *, proposed: ParameterSet, requested_by: User | None = None, quotes: MarketQuotes | None = None
) -> list[ValidationRun]:
    """The validation a proposal needs before approval: a ``proposal`` run of ``proposed`` and one
    of the active set beside it (when there is one), ``fixed`` mode, same prices and history
    days. A venue of at most ``CLEARING_VALIDATION_SYNC_ACCOUNTS`` member accounts is validated
    here and now (a failure is recorded on the run, never raised: proposing does not depend on
    it); a larger one on the workers."""
    quotes = quotes or quotes_current()
    sets = [proposed]
    active = ParameterSet.objects.filter(status=ParameterStatus.ACTIVE).exclude(pk=proposed.pk).first()
    if active is not None:
        sets.append(active)
    inline = MarginAccount.objects.filter(kind=AccountKind.MEMBER).count() <= (
        settings.CLEARING_VALIDATION_SYNC_ACCOUNTS
    )
    runs = []
    for parameter_set in sets:
        try:
            with transaction.atomic():
                runs.append(
                    validation_run_create(
                        kind=ValidationKind.PROPOSAL,
                        mode=ValidationMode.FIXED,
                        parameter_set=parameter_set,
                        proposal=proposed,
                        cause=f"proposal {proposed.version}",
                        quotes=quotes,
                        requested_by=requested_by,
                        enqueue=not inline,
                    )
                )
        except Exception:  # no run: approval refuses, saying the validation is missing
            log.exception("the validation of proposal %s could not start", proposed.version)
    if inline:
        for run in runs:
            try:
                with transaction.atomic():
                    validation_run_complete(run=run)
            except Exception as error:  # recorded on the run: the approval step refuses it
                log.exception("validation run %s of proposal %s failed", run.pk, proposed.version)
                _run_fail(run=run, error=repr(error)[:2000])
        for run in runs:
            run.refresh_from_db()
    return runs


# --- Shards ----------------------------------------------------------------------------------------


def _portfolios_take(margin_input: MarginInput, keep: np.ndarray) -> MarginInput:
    """``margin_input`` with only portfolios ``keep`` ``(k,)`` (indices, increasing)."""
    f = margin_input.portfolios
    new_index = np.full(f.n_portfolios, -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.size)
    pos = new_index[f.position_portfolio] >= 0
    bal = new_index[f.balance_portfolio] >= 0
    return MarginInput(
        parameters=margin_input.parameters,
        market=margin_input.market,
        portfolios=Portfolios(
            ids=tuple(f.ids[k] for k in keep.tolist()),
            mode=f.mode[keep],
            position_portfolio=new_index[f.position_portfolio[pos]],
            position_instrument=f.position_instrument[pos],
            position_quantity=f.position_quantity[pos],
            position_entry=f.position_entry[pos],
            position_allocated_margin=f.position_allocated_margin[pos],
            balance_portfolio=new_index[f.balance_portfolio[bal]],
            balance_asset=f.balance_asset[bal],
            balance_amount=f.balance_amount[bal],
        ),
    )


def run_scenarios(*, run: ValidationRun, margin_input: MarginInput, history: PriceHistory) -> Scenarios:
    """The run's stress scenarios: the history's crisis windows, then the set's hypothetical
    scenarios (its ``StressScenario`` rows, in their order)."""
    definitions = [row.to_definition() for row in run.parameter_set.stress_scenarios.all()]
    return historical_scenarios(margin_input, history, mpor_days=run.mpor_days) + hypothetical_scenarios(
        margin_input, definitions
    )


def _backtest_rows(run: ValidationRun, result, account_ids: np.ndarray) -> list[tuple]:
    """``AccountBacktest`` rows (``storage.BACKTEST_COLUMNS``) of every backtested account."""
    columns, _ = backtest_statistics(result)
    labels = np.datetime_as_string(result.days, unit="D").tolist()
    n = account_ids.size
    bounds = np.searchsorted(result.exception_column, np.arange(n + 1)).tolist()
    series = np.empty((n, result.days.size), dtype=storage.ACCOUNT_SERIES)
    with np.errstate(over="ignore", invalid="ignore"):
        series["initial_margin"] = result.initial_margin.T
        series["loss"] = result.loss.T
    rows = []
    for k in range(n):
        exceptions = []
        for e in range(bounds[k], bounds[k + 1]):
            day = int(result.exception_day[e])
            exceptions.append(
                {
                    "day": labels[day],
                    "loss": storage.finite_or_none(float(result.loss[day, k])),
                    "initial_margin": storage.finite_or_none(float(result.initial_margin[day, k])),
                    "underlying": result.exception_driver[e],
                }
            )
        figure = {
            name: storage.finite_or_none(float(getattr(columns, name)[k]))
            for name in ("kupiec_lr", "kupiec_p_value", "lr_ind", "lr_cc", "p_value_cc", "peak_to_trough")
        }
        rows.append(
            (
                run.pk,
                int(account_ids[k]),
                int(columns.observations[k]),
                int(columns.exceptions[k]),
                float(columns.coverage[k]),
                LIGHTS[int(columns.light[k])],
                *figure.values(),
                *(storage.finite_or_none(float(columns.max_increase[h][k])) for h in (1, 5, 30)),
                exceptions,
                series[k].tobytes(),
            )
        )
    return rows


def validation_shard_run(*, shard_id: int, worker: str = HOSTNAME) -> int:
    """Compute and store one shard (module docstring); returns its accounts. Idempotent: a shard
    already done is skipped."""
    shard = ValidationShard.objects.select_related("run__parameter_set").get(pk=shard_id)
    run = shard.run
    if shard.status == ShardStatus.DONE or run.status != ValidationStatus.RUNNING:
        return 0  # done already, or its run failed (another shard's error): nothing to add
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        form = parameters_form(parameter_set=run.parameter_set)
        quotes = market_form_quotes(market=run.market, valuation_time=run.valuation_time)
        with atomic_snapshot():
            owners = {
                pk: (member_id, code)
                for pk, member_id, code in MarginAccount.objects.filter(
                    kind=AccountKind.MEMBER, pk__gte=shard.first_account_id, pk__lte=shard.last_account_id
                ).values_list("pk", "member_id", "member__code")
            }
            rows = book_rows_fetch(account_ids=sorted(owners))
        timings["read"] = time.perf_counter() - started
        started = time.perf_counter()
        book = margin_book_build(rows=rows, parameters_form=form, quotes=quotes)
        margin_input = book.margin_input
        history = history_arrays(run.history, margin_input.parameters)
        n = rows.account_ids.size
        held = np.flatnonzero(np.bincount(margin_input.portfolios.position_portfolio, minlength=n) > 0)
        tested = _portfolios_take(margin_input, held)
        backtest_rows, partial, counts, net = [], None, {}, {"instruments": {}, "assets": {}}
        if held.size:
            result = backtest(tested, history, mode=run.mode, mpor_days=run.mpor_days, aggregate=False)
            backtest_rows = _backtest_rows(run, result, rows.account_ids[held])
            with np.errstate(over="ignore", invalid="ignore"):
                partial = storage.records(
                    storage.SHARD_PARTIAL,
                    venue_im=result.initial_margin.sum(axis=1),
                    exceptions=result.exception.sum(axis=1),
                )
            before, after = result.exception[:-1], result.exception[1:]
            counts = {
                "exceptions": int(result.exception.sum()),
                "n00": int(np.sum(~before & ~after)),
                "n01": int(np.sum(~before & after)),
                "n10": int(np.sum(before & ~after)),
                "n11": int(np.sum(before & after)),
            }
            net = _net_book(tested)
        stress_rows, member_uncovered = [], {}
        if n:
            scenarios = run_scenarios(run=run, margin_input=margin_input, history=history)
            outcome = stress(
                margin_input,
                scenarios,
                members=[owners[a][1] for a in rows.account_ids.tolist()],
                mpor_days=run.mpor_days,
            )
            worst = np.argmax(outcome.loss, axis=0) if scenarios.n_scenarios else np.zeros(n, dtype=np.int64)
            for k, account_id in enumerate(rows.account_ids.tolist()):
                s = int(worst[k])
                stress_rows.append(
                    (
                        run.pk,
                        account_id,
                        owners[account_id][0],
                        float(outcome.equity[k]),
                        scenarios.names[s] if scenarios.n_scenarios else "",
                        float(outcome.loss[s, k]) if scenarios.n_scenarios else 0.0,
                        float(outcome.uncovered[s, k]) if scenarios.n_scenarios else 0.0,
                    )
                )
            member_uncovered = {
                name: outcome.member_uncovered[:, j].tolist() for j, name in enumerate(outcome.members)
            }
        timings["compute"] = time.perf_counter() - started
        started = time.perf_counter()
        with transaction.atomic():
            locked = ValidationShard.objects.select_for_update().get(pk=shard_id)
            if locked.status == ShardStatus.DONE:
                return 0
            storage.account_backtests_insert(backtest_rows)
            storage.account_stresses_insert(stress_rows)
            timings["store"] = time.perf_counter() - started
            locked.status, locked.worker, locked.finished_at = ShardStatus.DONE, worker, timezone.now()
            locked.accounts, locked.backtested = n, int(held.size)
            locked.partial = None if partial is None else partial.tobytes()
            locked.counts, locked.members, locked.book = counts, member_uncovered, net
            locked.timings = {key: round(seconds, 4) for key, seconds in timings.items()}
            locked.error = ""
            locked.save()
            _run_progress(run=run)
        return n
    except Exception as error:
        ValidationShard.objects.filter(pk=shard_id).exclude(status=ShardStatus.DONE).update(
            status=ShardStatus.FAILED, error=repr(error)[:2000]
        )
        if not isinstance(error, TRANSIENT_ERRORS):
            # Deterministic: another attempt computes the same thing. The run fails, saying why.
            _run_fail(run=run, error=f"shard {shard.number}: {error}")
        raise


def _net_book(margin_input: MarginInput) -> dict:
    """``{"instruments": {symbol: net units}, "assets": {symbol: net balance}}`` of every
    portfolio of ``margin_input`` together (zeros left out)."""
    f, m, p = margin_input.portfolios, margin_input.market, margin_input.parameters
    units = np.bincount(f.position_instrument, weights=f.position_quantity, minlength=len(m.instruments))
    balances = np.bincount(f.balance_asset, weights=f.balance_amount, minlength=len(p.assets))
    return {
        "instruments": {name: float(q) for name, q in zip(m.instruments, units.tolist(), strict=True) if q},
        "assets": {name: float(b) for name, b in zip(p.assets, balances.tolist(), strict=True) if b},
    }


def _run_progress(*, run: ValidationRun) -> None:
    ValidationRun.objects.filter(pk=run.pk).update(shards_done=F("shards_done") + 1)
    done, count, status = (
        ValidationRun.objects.filter(pk=run.pk).values_list("shards_done", "shard_count", "status").get()
    )
    if done >= count and status == ValidationStatus.RUNNING:
        run.refresh_from_db()
        _run_reduce(run=run)


def validation_run_complete(*, run: ValidationRun, worker: str = HOSTNAME) -> ValidationRun:
    """Run every pending shard of ``run`` here and now, in order (a proposal on a small venue,
    ``manage.py validation_run``, the benchmark). Returns the run, fresh."""
    pending = run.shards.exclude(status=ShardStatus.DONE).order_by("number")
    for shard_id in pending.values_list("pk", flat=True):
        validation_shard_run(shard_id=shard_id, worker=worker)
    run.refresh_from_db()
    return run


# --- The venue: reduce, alerts, failure --------------------------------------------------------------


def _cover_dict(result, names: list[str], scenario_names: tuple[str, ...]) -> dict:
    return {
        "amount": result.amount + 0.0,
        "scenario": scenario_names[result.scenario] if result.scenario >= 0 else None,
        "members": [names[j] for j in result.members],
    }


def _aggregate_input(*, run: ValidationRun, parameters: Parameters, net: dict) -> MarginInput:
    """The aggregate book as one ``portfolio``-mode portfolio of net positions and balances."""
    held = net["instruments"]
    market_form = dict(run.market)
    market_form["instruments"] = {s: e for s, e in run.market["instruments"].items() if s in held}
    market = parse_market(market_form, parameters, run.valuation_time)
    instruments = list(net["instruments"])
    index = {name: i for i, name in enumerate(market.instruments)}
    assets = list(net["assets"])
    return MarginInput(
        parameters=parameters,
        market=market,
        portfolios=Portfolios(
            ids=(AGGREGATE,),
            mode=np.array([PORTFOLIO], dtype=np.int8),
            position_portfolio=np.zeros(len(instruments), dtype=np.int64),
            position_instrument=np.array([index[s] for s in instruments], dtype=np.int64),
            position_quantity=np.array([net["instruments"][s] for s in instruments], dtype=np.float64),
            # Entry prices cancel in a loss and play no part in IM: any finite value will do.
            position_entry=np.zeros(len(instruments)),
            balance_portfolio=np.zeros(len(assets), dtype=np.int64),
            balance_asset=np.array([parameters.assets.index(a) for a in assets], dtype=np.int64),
            balance_amount=np.array([net["assets"][a] for a in assets], dtype=np.float64),
        ),
    )


def _run_reduce(*, run: ValidationRun) -> None:
    """The venue's results from the shards' partial sums (module docstring), then the alerts."""
    parameters = parse_parameters(parameters_form(parameter_set=run.parameter_set))
    history = history_arrays(run.history, parameters)
    start, _ = observation_rows(history, run.mpor_days)
    days = history.days[start]
    n_obs = days.size
    shards = list(run.shards.all())
    venue_im, per_day = np.zeros(n_obs), np.zeros(n_obs, dtype=np.int64)
    counts = dict.fromkeys(("exceptions", "n00", "n01", "n10", "n11"), 0)
    net = {"instruments": {}, "assets": {}}
    members: dict[str, np.ndarray] = {}
    backtested = accounts = 0
    for shard in shards:
        accounts += shard.accounts
        backtested += shard.backtested
        if shard.partial:
            partial = storage.decode(storage.SHARD_PARTIAL, shard.partial)
            venue_im += partial["venue_im"]
            per_day += partial["exceptions"]
        for key in counts:
            counts[key] += shard.counts.get(key, 0)
        for group in ("instruments", "assets"):
            for name, amount in shard.book.get(group, {}).items():
                net[group][name] = net[group].get(name, 0.0) + amount
        for name, values in shard.members.items():
            members[name] = members.get(name, 0.0) + np.asarray(values)
    report: dict = {"pooled": None, "aggregate": None}
    lights = []
    aggregate_im = aggregate_loss = np.full(n_obs, np.nan)
    if backtested:
        pooled = statistics(
            np.array([n_obs * backtested]),
            np.array([counts["exceptions"]]),
            tuple(np.array([counts[key]]) for key in ("n00", "n01", "n10", "n11")),
            venue_im[:, None],
            days,
        )
        labels = np.datetime_as_string(days, unit="D")
        report["pooled"] = report_sections(pooled, ["pooled"], [labels[per_day > 0].tolist()])[0]
        lights.append(report["pooled"]["traffic_light"])
    net = {group: {k: v for k, v in values.items() if v} for group, values in net.items()}
    aggregate_input = _aggregate_input(run=run, parameters=parameters, net=net)
    if net["instruments"]:
        result = backtest(aggregate_input, history, mode=run.mode, mpor_days=run.mpor_days, aggregate=False)
        section = backtest_report(result)["portfolios"][0]
        drivers = {}
        for e in range(result.exception_day.size):
            drivers[str(np.datetime_as_string(days[result.exception_day[e]], unit="D"))] = (
                result.exception_driver[e]
            )
        section["exception_underlyings"] = drivers
        report["aggregate"] = section
        lights.append(section["traffic_light"])
        aggregate_im, aggregate_loss = result.initial_margin[:, 0], result.loss[:, 0]
    scenarios = run_scenarios(run=run, margin_input=aggregate_input, history=history)
    names = list(members)
    matrix = (
        np.stack([members[name] for name in names], axis=1) if names else np.zeros((scenarios.n_scenarios, 0))
    )
    report["scenarios"] = [
        {
            "name": name,
            "kind": kind,
            "prices": scenario_prices(aggregate_input, scenarios, s),
            "iv_factor": float(scenarios.iv_factor[s]),
        }
        for s, (name, kind) in enumerate(zip(scenarios.names, scenarios.kinds, strict=True))
    ]
    report["cover_1"] = _cover_dict(cover(matrix, 1), names, scenarios.names)
    report["cover_2"] = _cover_dict(cover(matrix, 2), names, scenarios.names)
    report["lights"] = dict.fromkeys(LIGHTS, 0) | dict(
        run.account_backtests.values_list("light").annotate(n=Count("pk")).values_list("light", "n")
    )
    run.report = report
    run.series = storage.records(
        storage.RUN_SERIES,
        venue_im=venue_im,
        aggregate_im=aggregate_im,
        aggregate_loss=aggregate_loss,
        exceptions=per_day,
    ).tobytes()
    run.light = max(lights, key=LIGHTS.index) if lights else ""
    run.accounts, run.backtested = accounts, backtested
    run.status, run.finished_at = ValidationStatus.DONE, timezone.now()
    run.save(update_fields=["report", "series", "light", "accounts", "backtested", "status", "finished_at"])
    _run_alerts(run=run)


def _run_fail(*, run: ValidationRun, error: str) -> None:
    ValidationRun.objects.filter(pk=run.pk, status=ValidationStatus.RUNNING).update(
        status=ValidationStatus.FAILED, error=error[:2000], finished_at=timezone.now()
    )
    run.status, run.error = ValidationStatus.FAILED, error[:2000]
    if run.kind in MONITORING_KINDS:
        ops_alerts_raise(
            kind=ALERT_FAILED,
            messages={run.mode: f"Validation run {run.pk} ({run.kind}, {run.mode}) failed: {error[:500]}"},
        )


def _usd(amount: float) -> str:
    return f"{amount:,.0f} USD"


def _run_alerts(*, run: ValidationRun) -> None:
    """Keep the ops alerts in step with a completed run that stands for the venue's model: a
    nightly or on-demand run of the active set in ``fixed`` mode (module docstring)."""
    if run.kind not in MONITORING_KINDS:
        return
    ops_alerts_resolve(kind=ALERT_FAILED, keys=[run.mode])
    if run.mode != ValidationMode.FIXED or run.parameter_set.status != ParameterStatus.ACTIVE:
        return
    now = timezone.now()
    pooled, aggregate = run.report.get("pooled"), run.report.get("aggregate")
    if run.light == Light.RED:
        parts = [
            f"{name} {section['exceptions']} exceptions in {section['observations']} observations "
            f"(coverage {section['coverage']:.2%}, {section['traffic_light']})"
            for name, section in (("accounts pooled", pooled), ("aggregate book", aggregate))
            if section is not None
        ]
        ops_alerts_raise(
            kind=ALERT_RED,
            messages={
                ALERT_KEY: f"The venue's backtest is red (validation run {run.pk}, "
                f"{run.parameter_set.version}, {run.first_day}..{run.last_day}): " + "; ".join(parts) + "."
            },
            now=now,
        )
    else:
        ops_alerts_resolve(kind=ALERT_RED, keys=[ALERT_KEY], now=now)
    cover_2 = run.report["cover_2"]
    fund = None if run.fund_value is None else float(run.fund_value)
    if fund is None or run.fund_unpriced or fund < cover_2["amount"]:
        if fund is None:
            value = "the venue has no insurance fund"
        elif run.fund_unpriced:
            value = f"the fund's value is unknown (no price for {', '.join(run.fund_unpriced)})"
        else:
            value = f"the insurance fund holds {_usd(fund)}"
        ops_alerts_raise(
            kind=ALERT_COVER2,
            messages={
                ALERT_KEY: f"Cover-2 is {_usd(cover_2['amount'])} (scenario {cover_2['scenario']}, members "
                f"{', '.join(cover_2['members']) or 'none'}); {value} (validation run {run.pk})."
            },
            now=now,
        )
    else:
        ops_alerts_resolve(kind=ALERT_COVER2, keys=[ALERT_KEY], now=now)


def validation_results_prune(*, keep: int | None = None) -> int:
    """Delete the per-account rows (``AccountBacktest``, ``AccountStress``) that no report reads
    any more, keeping every run's venue results: those of nightly and on-demand runs older than
    the newest ``keep`` completed or failed ones of their mode (default
    ``CLEARING_VALIDATION_KEEP_RUNS``), and those of proposal runs whose proposal has been decided.
    A run of 100,000 accounts holds ≈ 1 GB of them (docs/model-validation.md). Returns the rows
    deleted."""
    keep = settings.CLEARING_VALIDATION_KEEP_RUNS if keep is None else keep
    finished = ValidationRun.objects.exclude(status=ValidationStatus.RUNNING)
    old = []
    for mode in ValidationMode.values:
        ids = list(
            finished.filter(kind__in=MONITORING_KINDS, mode=mode).order_by("-pk").values_list("pk", flat=True)
        )
        old += ids[keep:]
    old += list(
        finished.filter(kind=ValidationKind.PROPOSAL)
        .exclude(proposal__status=ParameterStatus.PROPOSED)
        .values_list("pk", flat=True)
    )
    deleted = 0
    for model in (AccountBacktest, AccountStress):
        deleted += model.objects.filter(run_id__in=old).delete()[0]
    return deleted


def validation_runs_expire(*, now: datetime | None = None) -> int:
    """Runs still running ``CLEARING_VALIDATION_RUN_HOURS`` after they started (a shard lost for
    good) are failed, saying so. Returns how many."""
    now = now or timezone.now()
    bound = now - timedelta(hours=settings.CLEARING_VALIDATION_RUN_HOURS)
    stale = list(ValidationRun.objects.filter(status=ValidationStatus.RUNNING, started_at__lt=bound))
    for run in stale:
        _run_fail(run=run, error=f"not complete {settings.CLEARING_VALIDATION_RUN_HOURS} h after it started")
    return len(stale)
