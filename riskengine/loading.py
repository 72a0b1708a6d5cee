"""From the database to the engine: load accounts as arrays, build the engine's input and the
margin document (methodology section 5) it replays from.

The numeric core (``riskengine.core``) knows nothing of Django; this module is the one place that
turns rows into its arrays. The same ``LoadedBook`` serves a sweep over every account, an event
sweep of one account, a what-if (with hypothetical rows appended) and the impact preview of a
proposed parameter set, so all of them compute the same figures from the same inputs.

Units: quantities in instrument units, prices in USD, balances in asset units; floats from here on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.db import connection

from accounts.models import Asset, CollateralBalance, MarginAccount
from clearing.bulk import any_sql, columns_arrays
from clearing.marketdata.quotes import MarketQuotes
from clearing.models import Instrument, InstrumentKind, Position
from riskengine.core import (
    MODES,
    OPTION,
    MarginInput,
    Portfolios,
    check_input,
    parse_market,
    parse_parameters,
)
from riskengine.core.errors import DocumentError
from riskengine.core.params import Parameters


@dataclass(frozen=True, eq=False)
class BookRows:
    """Accounts, their open positions and non-zero balances, as arrays (database ids, not indices).

    - ``account_ids`` ``(n_acc,)`` int64, ``account_codes`` ``n_acc`` strings, ``account_modes``
      ``(n_acc,)`` int8 (engine mode codes)
    - ``position_ids`` ``(n_pos,)`` int64 (0 for hypothetical rows), ``position_account``
      ``(n_pos,)`` int64 account id, ``position_instrument`` ``(n_pos,)`` int64 instrument id,
      ``position_quantity`` ``(n_pos,)`` float64 units, ``position_entry`` ``(n_pos,)`` float64 USD,
      ``position_allocated`` ``(n_pos,)`` float64 USD (``Position.allocated_margin``, the isolated
      allocation ``a_i`` of spec section 4a; 0 for hypothetical rows)
    - ``balance_account`` ``(n_bal,)`` int64 account id, ``balance_asset`` ``(n_bal,)`` int64 asset
      id, ``balance_amount`` ``(n_bal,)`` float64 units of the asset
    """

    account_ids: np.ndarray
    account_codes: tuple[str, ...]
    account_modes: np.ndarray
    position_ids: np.ndarray
    position_account: np.ndarray
    position_instrument: np.ndarray
    position_quantity: np.ndarray
    position_entry: np.ndarray
    position_allocated: np.ndarray
    balance_account: np.ndarray
    balance_asset: np.ndarray
    balance_amount: np.ndarray

    @classmethod
    def build(
        cls,
        *,
        account_ids: np.ndarray,
        account_codes: tuple[str, ...],
        account_modes: np.ndarray,
        positions: np.ndarray,
        balances: np.ndarray,
    ) -> BookRows:
        """The one way to assemble rows: the accounts' columns, then ``positions`` ``(n_pos, 6)``
        float64 ``(position id, account id, instrument id, quantity, entry price, allocated
        margin)`` and
        ``balances`` ``(n_bal, 3)`` float64 ``(account id, asset id, amount)`` (ids are exact in
        float64 below 2**53)."""
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 6)
        balances = np.asarray(balances, dtype=np.float64).reshape(-1, 3)
        return cls(
            account_ids=np.asarray(account_ids, dtype=np.int64),
            account_codes=tuple(account_codes),
            account_modes=np.asarray(account_modes, dtype=np.int8),
            position_ids=positions[:, 0].astype(np.int64),
            position_account=positions[:, 1].astype(np.int64),
            position_instrument=positions[:, 2].astype(np.int64),
            position_quantity=positions[:, 3],
            position_entry=positions[:, 4],
            position_allocated=positions[:, 5],
            balance_account=balances[:, 0].astype(np.int64),
            balance_asset=balances[:, 1].astype(np.int64),
            balance_amount=balances[:, 2],
        )

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, balances)`` as the tables ``build`` takes (fresh arrays)."""
        positions = np.column_stack(
            [
                self.position_ids,
                self.position_account,
                self.position_instrument,
                self.position_quantity,
                self.position_entry,
                self.position_allocated,
            ]
        ).astype(np.float64)
        balances = np.column_stack([self.balance_account, self.balance_asset, self.balance_amount]).astype(
            np.float64
        )
        return positions.reshape(-1, 6), balances.reshape(-1, 3)

    def with_hypothetical(
        self,
        *,
        positions: Iterable[tuple[int, int, float, float]] = (),
        balances: Iterable[tuple[int, int, float]] = (),
    ) -> BookRows:
        """A copy with extra rows: positions ``(account_id, instrument_id, quantity, entry_price)``
        and balance changes ``(account_id, asset_id, amount)`` (added before haircuts). A
        hypothetical position carries no allocation."""
        positions, balances = list(positions), list(balances)
        if not positions and not balances:
            return self
        pos = np.array(positions, dtype=np.float64).reshape(-1, 4)
        old_positions, old_balances = self.tables()
        # (position id, ...the given columns..., allocated margin): a hypothetical row has neither.
        hypothetical = np.column_stack([np.zeros(len(pos)), pos, np.zeros(len(pos))])
        return BookRows.build(
            account_ids=self.account_ids,
            account_codes=self.account_codes,
            account_modes=self.account_modes,
            positions=np.vstack([old_positions, hypothetical]),
            balances=np.vstack([old_balances, np.array(balances, dtype=np.float64).reshape(-1, 3)]),
        )


def book_rows_fetch(
    *,
    account_ids: Sequence[int] | None = None,
    account_range: tuple[int, int] | None = None,
    accounts: Sequence[MarginAccount] | None = None,
) -> BookRows:
    """Read accounts (all, ``account_ids``, or ids in the inclusive ``account_range``), their open
    positions and non-zero balances in three queries, ordered by account then row id so results
    are deterministic.

    Positions and balances are read by ``clearing.bulk.columns_arrays`` (on PostgreSQL one
    ``bytea`` per column straight into numpy: a million positions in well under a second).

    ``accounts``: the rows of exactly ``account_ids`` when the caller already holds them (an event
    sweep has just locked them), which saves their query.
    """
    if accounts is not None:
        account_rows = sorted((a.pk, a.code, a.mode) for a in accounts)
    else:
        queryset = MarginAccount.objects.order_by("pk")
        if account_ids is not None:
            queryset = queryset.filter(pk__in=list(account_ids))
        if account_range is not None:
            queryset = queryset.filter(pk__gte=account_range[0], pk__lte=account_range[1])
        account_rows = list(queryset.values_list("pk", "code", "mode"))
    pos, bal = _book_arrays_fetch(account_ids=account_ids, account_range=account_range)
    return BookRows.build(
        account_ids=[row[0] for row in account_rows],
        account_codes=tuple(row[1] for row in account_rows),
        account_modes=[MODES.index(row[2]) for row in account_rows],
        positions=pos,
        balances=bal,
    )


def account_rows_fetch(*, account: MarginAccount) -> BookRows:
    """One account's open positions and non-zero balances in **one** query (the request path: a
    what-if), the same rows in the same order as ``book_rows_fetch(account_ids=[account.pk])``."""
    sql = (
        "SELECT 0, id, instrument_id, CAST(quantity AS DOUBLE PRECISION),"
        " CAST(entry_price AS DOUBLE PRECISION), CAST(allocated_margin AS DOUBLE PRECISION)"
        f" FROM {Position._meta.db_table} WHERE account_id = %s AND quantity <> 0"
        " UNION ALL"
        " SELECT 1, asset_id, asset_id, CAST(amount AS DOUBLE PRECISION), 0, 0"
        f" FROM {CollateralBalance._meta.db_table} WHERE account_id = %s AND amount <> 0"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [account.pk, account.pk])
        records = sorted(cursor.fetchall(), key=lambda r: (r[0], r[1]))
    positions = [
        (r[1], account.pk, r[2], r[3], np.nan if r[4] is None else r[4], r[5]) for r in records if r[0] == 0
    ]
    balances = [(account.pk, r[2], r[3]) for r in records if r[0] == 1]
    return BookRows.build(
        account_ids=[account.pk],
        account_codes=(account.code,),
        account_modes=[MODES.index(account.mode)],
        positions=positions,
        balances=balances,
    )


def _book_arrays_fetch(
    *, account_ids: Sequence[int] | None, account_range: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(n_pos, 6)``: id, account, instrument, quantity, entry, allocated; balances
    ``(n_bal, 3)``: account, asset, amount; float64, ordered by account then row id (asset for balances)."""
    where, params = "", []
    if account_ids is not None:
        sql, more = any_sql("account_id", account_ids, kind="int")
        where += f" AND {sql}"
        params += more
    if account_range is not None:
        where += " AND account_id BETWEEN %s AND %s"
        params += [account_range[0], account_range[1]]
    positions = columns_arrays(
        model=Position,
        where=f"quantity <> 0{where}",
        params=params,
        columns=[
            ("id", "id", "int"),
            ("account", "account_id", "int"),
            ("instrument", "instrument_id", "int"),
            ("quantity", "quantity", "float"),
            ("entry", "entry_price", "float"),
            ("allocated", "allocated_margin", "float"),
        ],
    )
    balances = columns_arrays(
        model=CollateralBalance,
        where=f"amount <> 0{where}",
        params=params,
        columns=[
            ("account", "account_id", "int"),
            ("asset", "asset_id", "int"),
            ("amount", "amount", "float"),
        ],
    )
    # Sorting here is cheaper than ORDER BY in the database and gives the same order.
    order = np.lexsort((positions["id"], positions["account"]))
    pos = np.empty((order.size, 6), dtype=np.float64)
    for c, name in enumerate(("id", "account", "instrument", "quantity", "entry", "allocated")):
        pos[:, c] = positions[name][order]
    order = np.lexsort((balances["asset"], balances["account"]))
    bal = np.empty((order.size, 3), dtype=np.float64)
    for c, name in enumerate(("account", "asset", "amount")):
        bal[:, c] = balances[name][order]
    return pos, bal


def market_form_build(*, quotes: MarketQuotes, instruments: Iterable[Instrument]) -> dict:
    """The document's ``market`` section for ``instruments`` priced by ``quotes``.

    Every underlying price is included (linked collateral needs its underlying's price even with no
    position); an option without a mark implied volatility is refused by the engine, naming it.
    """
    instrument_forms = {}
    for instrument in sorted(instruments, key=lambda i: i.symbol):
        entry = {
            "kind": instrument.kind,
            "underlying": instrument.underlying.symbol,
            "multiplier": float(instrument.multiplier),
        }
        if instrument.expiry is not None:
            entry["expiry"] = instrument.expiry.isoformat().replace("+00:00", "Z")
        if instrument.kind == InstrumentKind.OPTION:
            entry["strike"] = float(instrument.strike)
            entry["right"] = instrument.right
            if instrument.symbol in quotes.option_ivs:
                entry["iv"] = float(quotes.option_ivs[instrument.symbol])
        instrument_forms[instrument.symbol] = entry
    return {
        "underlyings": {
            symbol: {"price": float(price)} for symbol, price in sorted(quotes.underlying_prices.items())
        },
        "assets": {symbol: {"price": float(price)} for symbol, price in sorted(quotes.asset_prices.items())},
        "instruments": instrument_forms,
    }


def market_form_quotes(
    *,
    market: dict,
    valuation_time: datetime,
    statuses: Mapping[str, str] | None = None,
    index_price_ids: Mapping[str, int] | None = None,
) -> MarketQuotes:
    """The inverse of ``market_form_build``: the quotes a stored ``market`` section priced with
    (a sweep's market, a loaded book's), with the statuses and index rows when known."""
    return MarketQuotes(
        valuation_time=valuation_time,
        underlying_prices={s: e["price"] for s, e in market["underlyings"].items()},
        asset_prices={s: e["price"] for s, e in market["assets"].items()},
        option_ivs={s: e["iv"] for s, e in market["instruments"].items() if "iv" in e},
        statuses=dict(statuses or {}),
        index_price_ids=dict(index_price_ids or {}),
    )


@dataclass(frozen=True, eq=False)
class LoadedBook:
    """A validated engine input for ``rows`` with what is needed to explain and replay it.

    Portfolio ``k`` of ``margin_input`` is account ``rows.account_ids[k]``; position ``j`` is
    ``rows.position_ids[j]``.
    """

    rows: BookRows
    margin_input: MarginInput
    valuation_time: datetime
    parameters_form: dict
    market_form: dict
    instrument_symbols: dict[int, str]
    asset_symbols: dict[int, str]

    def portfolio_form(self, k: int) -> dict:
        """Portfolio ``k`` in the document's ``portfolios[]`` form (positions never merged)."""
        rows = self.rows
        account_id = rows.account_ids[k]
        positions = []
        for j in np.flatnonzero(rows.position_account == account_id):
            symbol = self.instrument_symbols[int(rows.position_instrument[j])]
            position = {"instrument": symbol, "quantity": repr(float(rows.position_quantity[j]))}
            if not np.isnan(rows.position_entry[j]):
                position["entry_price"] = repr(float(rows.position_entry[j]))
            allocated = float(self.margin_input.portfolios.position_allocated_margin[j])
            if allocated:  # absent means 0 (spec section 5), so a replay gets what was computed
                position["allocated_margin"] = repr(allocated)
            positions.append(position)
        collateral: dict[str, float] = {}
        for b in np.flatnonzero(rows.balance_account == account_id):
            symbol = self.asset_symbols[int(rows.balance_asset[b])]
            collateral[symbol] = collateral.get(symbol, 0.0) + float(rows.balance_amount[b])
        return {
            "id": rows.account_codes[k],
            "mode": MODES[int(rows.account_modes[k])],
            "collateral": {symbol: repr(amount) for symbol, amount in sorted(collateral.items())},
            "positions": positions,
        }

    def document(self, indices: Iterable[int] | None = None) -> dict:
        """The margin document that replays portfolios ``indices`` (all by default); its market
        lists only the instruments those portfolios hold."""
        indices = range(self.rows.account_ids.size) if indices is None else list(indices)
        portfolios = [self.portfolio_form(k) for k in indices]
        held = {position["instrument"] for portfolio in portfolios for position in portfolio["positions"]}
        market = dict(self.market_form)
        market["instruments"] = {s: e for s, e in self.market_form["instruments"].items() if s in held}
        return {
            "valuation_time": self.valuation_time.isoformat().replace("+00:00", "Z"),
            "parameters": self.parameters_form,
            "market": market,
            "portfolios": portfolios,
        }


def margin_book_build(
    *,
    rows: BookRows,
    parameters_form: dict,
    quotes: MarketQuotes,
    parameters: Parameters | None = None,
    instruments: Mapping[int, Instrument] | None = None,
    asset_symbols: Mapping[int, str] | None = None,
) -> LoadedBook:
    """Build and validate the engine input for ``rows`` under ``parameters_form`` and ``quotes``.

    ``parameters`` (``parameters_form`` already parsed), ``instruments`` (by pk, with their
    underlying) and ``asset_symbols`` (by pk) may be given by a caller that caches them
    (``riskengine.reference``); they are read from the database otherwise. Only the instruments
    ``rows`` hold are priced and validated.

    Raises ``DocumentError`` naming the field when the inputs cannot be margined (an asset the
    parameter set does not cover, an option without a mark volatility, a missing index price).
    """
    if parameters is None:
        parameters = parse_parameters(parameters_form)
    held = np.unique(rows.position_instrument).tolist()
    if instruments is None:
        instruments = Instrument.objects.select_related("underlying").in_bulk(held)
    else:
        instruments = {pk: instruments[pk] for pk in held}
    market_form = market_form_build(quotes=quotes, instruments=instruments.values())
    market = parse_market(market_form, parameters, quotes.valuation_time)

    instrument_index = {name: i for i, name in enumerate(market.instruments)}
    asset_index = {name: a for a, name in enumerate(parameters.assets)}
    instrument_symbols = {pk: instrument.symbol for pk, instrument in instruments.items()}
    held_assets = np.unique(rows.balance_asset).tolist()
    if asset_symbols is None:
        asset_symbols = dict(Asset.objects.filter(pk__in=held_assets).values_list("pk", "symbol"))
    else:
        asset_symbols = {pk: asset_symbols[pk] for pk in held_assets}
    for symbol in asset_symbols.values():
        if symbol not in asset_index:
            raise DocumentError(
                f"parameters.assets.{symbol}", "held as collateral but not covered by the parameter set"
            )

    account_index = np.searchsorted(rows.account_ids, rows.position_account)
    instrument_lookup = np.zeros(max(instrument_symbols, default=0) + 1, dtype=np.int64)
    for pk, symbol in instrument_symbols.items():
        instrument_lookup[pk] = instrument_index[symbol]
    asset_lookup = np.zeros(max(asset_symbols, default=0) + 1, dtype=np.int64)
    for pk, symbol in asset_symbols.items():
        asset_lookup[pk] = asset_index[symbol]
    position_instrument = instrument_lookup[rows.position_instrument]
    portfolios = Portfolios(
        ids=rows.account_codes,
        mode=rows.account_modes,
        position_portfolio=account_index.astype(np.int64),
        position_instrument=position_instrument,
        position_quantity=rows.position_quantity,
        # An option is valued at its mark; its entry premium was settled in cash when it traded.
        position_entry=np.where(market.kind[position_instrument] == OPTION, np.nan, rows.position_entry),
        # Methodology v1.1 section 4a: each position's allocation as stored (meaningful in isolated
        # mode only; the engine ignores it in the other modes).
        position_allocated_margin=rows.position_allocated,
        balance_portfolio=np.searchsorted(rows.account_ids, rows.balance_account).astype(np.int64),
        balance_asset=asset_lookup[rows.balance_asset],
        balance_amount=rows.balance_amount,
    )
    margin_input = MarginInput(parameters=parameters, market=market, portfolios=portfolios)
    check_input(margin_input)
    return LoadedBook(
        rows=rows,
        margin_input=margin_input,
        valuation_time=quotes.valuation_time,
        parameters_form=parameters_form,
        market_form=market_form,
        instrument_symbols=instrument_symbols,
        asset_symbols=asset_symbols,
    )


def margin_book_load(
    *, parameters_form: dict, quotes: MarketQuotes, account_ids: Sequence[int] | None = None
) -> LoadedBook:
    """``book_rows_fetch`` then ``margin_book_build``: the engine input for (some) accounts."""
    return margin_book_build(
        rows=book_rows_fetch(account_ids=account_ids), parameters_form=parameters_form, quotes=quotes
    )
