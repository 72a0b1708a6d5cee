"""Bulk reads and writes that have a PostgreSQL fast path: the one place that knows both dialects.

The platform runs on PostgreSQL in service and on SQLite in the embedded stack (``make run``). Hot
paths (a sweep shard writes a row per account, the oracle a row per observation) need PostgreSQL's
COPY, array parameters and row-lock options; everything else in the code base calls the
operations below and never looks at ``connection.vendor`` itself. Each operation does the same
thing on both databases, and ``tests/clearing/test_bulk.py`` runs on both.

Operations (all keyword-only after the first; ``model`` is a Django model class, ``columns`` are
database column names, e.g. ``"account_id"``; every operation runs on ``django.db.connection``):

``rows_copy(model=, columns=, rows=, types=None) -> int``
    Append ``rows`` (tuples in ``columns`` order). PostgreSQL: one ``COPY`` from
    ``COPY_MIN_ROWS`` rows up (binary when ``types``, PostgreSQL type names per column, are
    given), else one ``executemany`` INSERT (cheaper for a few rows; it can run in a
    ``pipeline()``, which COPY cannot). SQLite: ``executemany`` INSERT.
``rows_insert_returning(model=, columns=, rows=, returning=, constants=None) -> list[tuple]``
    Insert and return the ``returning`` columns of every new row (e.g. ``("id", "account_id")``),
    in no particular order: map them back by a key. ``constants`` (column → value) are columns
    every row shares, sent once instead of once a row. PostgreSQL: one ``INSERT … SELECT FROM
    unnest(arrays)``, each column sent as one array literal (``{1,2,NULL}``, one text parameter
    cast in SQL: psycopg adapts a Python list element by element, which cost a crash-day sweep
    shard more than its statements; and a timestamp repeated in every row costs the server a
    parse each); SQLite: multi-row ``INSERT … RETURNING`` in chunks.
``rows_upsert(model=, columns=, rows=, conflict=, update=) -> None``
    ``INSERT … ON CONFLICT (conflict) DO UPDATE SET`` the ``update`` columns to the new values.
``rows_update(model=, columns=, rows=) -> None``
    ``UPDATE`` rows by primary key: each row is the ``columns`` values followed by the pk.
``ids_draw(models=, count=) -> list[tuple[int, ...]]``
    ``count`` fresh primary keys for each model (one tuple per draw, one id per model), for
    callers that must know ids before writing (rows that reference each other). PostgreSQL: the
    tables' sequences; SQLite: ``sqlite_sequence`` (AUTOINCREMENT), which requires the caller's
    write transaction (``transaction.atomic()``).
``pipeline()``
    A context in which PostgreSQL sends statements without waiting for each other's results
    (psycopg's pipeline mode); nothing on SQLite.
``filter_any(queryset, column, values) -> QuerySet`` and ``any_sql(column_sql, values, kind=)``
    ``column IN values`` with one parameter whatever the list's length (a shard's lists hold
    25,000 ids: as many placeholders cost more to format than the query, and exceed SQLite's
    limit). PostgreSQL: ``= ANY(%s::int8[])`` of an array literal (``{1,2,3}``) for integers,
    ``= ANY(string_to_array(%s, ','))`` for text; SQLite: ``IN (SELECT value FROM json_each(%s))``.
    Text values must not contain commas (ids, session keys).
``skip_locked() -> str``
    ``" FOR UPDATE SKIP LOCKED"`` to append to a claiming ``SELECT`` on PostgreSQL; ``""`` on
    SQLite, where the caller's write transaction already excludes every other writer.
``columns_arrays(model=, where=, params=, columns=) -> dict[str, np.ndarray]``
    Columns of the rows matching ``where`` as numpy arrays, ``columns`` being ``(name, column,
    "int" | "float")``, unordered: sort them. PostgreSQL: one ``bytea`` aggregate per column read
    by ``np.frombuffer`` (one result row for any number of rows); SQLite: a plain ``SELECT``.
``statement_time() -> datetime``
    The database's time for the current statement (PostgreSQL) or the clock (SQLite).
``atomic_snapshot()``
    ``transaction.atomic()`` whose reads are one snapshot (PostgreSQL: REPEATABLE READ, read
    only, when outermost); a SQLite transaction already reads one snapshot.
``advisory_lock(key=)``
    A context that tries to take the named lock ``key`` for its block and yields whether it did
    (one run of a periodic job at a time; released at the block's end). PostgreSQL: a session
    advisory lock on the key's hash (``pg_try_advisory_lock``); SQLite: always taken — a SQLite
    database has one writer at a time, and callers already stay correct side by side at the
    granularity of a transaction (the lock only spares duplicated work).
``transaction_flag(name)``
    A context that raises the flag ``name`` inside the caller's transaction for the database's own
    triggers to read, and lowers it at the block's end: never committed, never seen by another
    transaction (a trigger lets one sanctioned deletion through). PostgreSQL: the setting ``name``
    (``set_config(name, 'on', true)``, read as ``current_setting(name, true) = 'on'``); SQLite: a
    row of ``clearing_transaction_flag`` (migration ``clearing.0004``), read as ``EXISTS (SELECT 1
    FROM clearing_transaction_flag WHERE name = …)``.
``utc_day_end_sql(column_sql) -> str``
    SQL for the first instant of the UTC day after the datetime ``column_sql`` (its daily close's
    bound), comparable with that column's other values on either database.
``tables_size(tables=) -> dict[str, tuple[float, float | None]]``
    Rows (PostgreSQL: planner estimate; SQLite: exact count) and bytes, indexes included (SQLite:
    from ``dbstat``, None where SQLite was built without it), per existing table.
``delete_triggers_lifted(using=DEFAULT_DB_ALIAS)``
    A context for emptying tables wholesale (``manage.py flush``, a transactional test's
    teardown) past the triggers that refuse deletions (the append-only ledgers'), as PostgreSQL's
    flush, a ``TRUNCATE``, is (it fires no row trigger): nothing on PostgreSQL. SQLite flushes by
    ``DELETE``: every trigger that fires on a delete is dropped for the block and created again
    from its own SQL at its end, all in one transaction (a failure leaves them as they were).
``datetime_aware(value) -> datetime``
    A datetime as a raw cursor returns it (PostgreSQL: aware; SQLite: naive UTC, or text for an
    expression such as ``max()``) as an aware datetime. The other way, a parameter compared with
    or written to a datetime column is ``connection.ops.adapt_datetimefield_value(moment)``
    (Django's; SQLite: naive UTC text like the ORM's, which compares as text with stored values).
``float_to_db(value)`` and ``float_from_db(value)``
    A float column's value to and from the database keeping NaN (``clearing.ledger.FigureField``,
    the risk engine's stored figures): unchanged on PostgreSQL (``float8`` holds NaN); on SQLite,
    whose driver binds NaN as NULL, NaN is stored as the text ``'NaN'`` (a REAL column keeps text
    that is not a number as text) and read back as NaN. SQLite orders text after every number, as
    PostgreSQL orders NaN, so comparisons agree; SQL arithmetic on such a column does not (SQLite
    reads the text as 0 where PostgreSQL's result is NaN). Known limit: SQLite keeps no negative
    zero (it stores an integral REAL as an integer): -0.0 reads back as 0.0, an equal number.

Values. Python values as the ORM takes them (``Decimal``, aware ``datetime``, ``bytes``, ``None``)
are adapted per column the way the ORM adapts them, so rows written here read back through the
ORM exactly like ORM-written ones (on SQLite, for instance, datetimes are stored as naive UTC
text). Values for JSON columns are JSON **text** (already encoded), on both databases. Plain Python
scalars, not numpy ones (``array.tolist()``): psycopg adapts only the former. A float NaN is
kept in a ``FigureField`` column on both databases (``float_to_db``); in a plain ``FloatField``
SQLite stores it as NULL (a NOT NULL column refuses it there).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, date, datetime

import numpy as np
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import (
    AutoField,
    BigAutoField,
    BooleanField,
    DecimalField,
    Field,
    FloatField,
    ForeignKey,
    IntegerField,
    JSONField,
    Model,
    QuerySet,
)
from django.db.models.expressions import RawSQL
from django.utils import timezone

# From this many rows up, PostgreSQL appends by COPY (fewer rows: an INSERT per row is cheaper and
# can be pipelined).
COPY_MIN_ROWS = 20

_INTEGER_FIELDS = (AutoField, BigAutoField, IntegerField, ForeignKey)


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _fields(model: type[Model], columns: Sequence[str]) -> list[Field]:
    by_column = {f.column: f for f in model._meta.concrete_fields}
    try:
        return [by_column[c] for c in columns]
    except KeyError as error:
        raise ValueError(f"{model.__name__} has no column {error.args[0]!r}") from None


def _adapter(field: Field):
    """A function adapting one Python value for ``field`` as the ORM would on this database."""
    if _postgres():
        # psycopg adapts Decimal, aware datetimes, bytes and str (JSON text included) itself.
        return lambda value: value
    if isinstance(field, JSONField):
        return lambda value: value  # already JSON text
    return lambda value: None if value is None else field.get_db_prep_save(value, connection)


def _adapted(fields: list[Field], rows: Iterable[Sequence]) -> list[list]:
    adapters = [_adapter(f) for f in fields]
    return [[adapt(v) for adapt, v in zip(adapters, row, strict=True)] for row in rows]


def _placeholder(field: Field) -> str:
    # A JSON value arrives as text: PostgreSQL is told it is jsonb (a text parameter is refused by
    # a jsonb column under server-side binding).
    return "%s::jsonb" if _postgres() and isinstance(field, JSONField) else "%s"


def rows_copy(
    *,
    model: type[Model],
    columns: Sequence[str],
    rows: Sequence[Sequence],
    types: Sequence[str] | None = None,
) -> int:
    """Append ``rows``; returns how many (module docstring)."""
    if not rows:
        return 0
    fields = _fields(model, columns)
    table = _quote(model._meta.db_table)
    names = ", ".join(_quote(c) for c in columns)
    with connection.cursor() as cursor:
        if _postgres() and len(rows) >= COPY_MIN_ROWS:
            binary = " (FORMAT binary)" if types is not None else ""
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN{binary}") as copy:
                if types is not None:
                    copy.set_types(list(types))
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(_placeholder(f) for f in fields)
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", _adapted(fields, rows))
    return len(rows)


def _element(value) -> str:
    """One quoted element of a PostgreSQL array literal (text, JSON text, datetimes, bytes...)."""
    if isinstance(value, bool):
        text = "t" if value else "f"
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    elif isinstance(value, bytes | bytearray | memoryview):
        text = "\\x" + bytes(value).hex()
    else:
        text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array_literal(field: Field, values: Sequence) -> str:
    """``values`` of ``field``'s column as the text of a PostgreSQL array (``{1,2.5,NULL}``): one
    parameter whatever their number, read by the server's array parser (module docstring).
    Numbers are written bare (floats by ``repr``, which reads back exactly, ``nan`` and ``inf``
    included; decimals and decimal texts by ``str``); every other value is quoted and escaped, each
    distinct value once (a column repeating one timestamp or status formats it once)."""
    if isinstance(field, (*_INTEGER_FIELDS, DecimalField, FloatField)):
        text = repr if isinstance(field, FloatField) else str
        if None not in values:
            return "{" + ",".join(map(text, values)) + "}"
        return "{" + ",".join("NULL" if v is None else text(v) for v in values) + "}"
    try:
        encoded = {v: _element(v) for v in set(values) if v is not None}
    except TypeError:  # unhashable values (a writable memoryview): one at a time
        return "{" + ",".join("NULL" if v is None else _element(v) for v in values) + "}"
    encoded[None] = "NULL"
    return "{" + ",".join(map(encoded.__getitem__, values)) + "}"


def _sqlite_chunk(width: int) -> int:
    return max(1, connection.features.max_query_params // max(1, width))


def rows_insert_returning(
    *,
    model: type[Model],
    columns: Sequence[str],
    rows: Sequence[Sequence],
    returning: Sequence[str],
    constants: Mapping[str, object] | None = None,
) -> list[tuple]:
    """Insert ``rows`` and return their ``returning`` columns, unordered (module docstring).
    ``constants`` (column → value) are columns every row shares, sent once."""
    if not rows:
        return []
    constants = dict(constants or {})
    fields = _fields(model, columns)
    shared = _fields(model, list(constants))
    _fields(model, returning)  # names checked before they reach the SQL
    table = _quote(model._meta.db_table)
    names = ", ".join(_quote(c) for c in [*columns, *constants])
    back = ", ".join(_quote(c) for c in returning)
    result: list[tuple] = []
    with connection.cursor() as cursor:
        if _postgres():
            arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
            aliases = [f"c{i}" for i in range(len(fields))]
            select = ", ".join([*aliases, *(f"%s::{f.db_type(connection)}" for f in shared)])
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT {select} FROM unnest({arrays})"
                f" AS u({', '.join(aliases)}) RETURNING {back}",
                [
                    *constants.values(),
                    *(
                        _array_literal(f, column)
                        for f, column in zip(fields, zip(*rows, strict=True), strict=True)
                    ),
                ],
            )
            return [tuple(r) for r in cursor.fetchall()]
        common = list(constants.values())
        values = _adapted([*fields, *shared], [[*row, *common] for row in rows])
        size = _sqlite_chunk(len(fields) + len(shared))
        row_marks = "(" + ", ".join(["%s"] * (len(fields) + len(shared))) + ")"
        for start in range(0, len(values), size):
            chunk = values[start : start + size]
            marks = ", ".join([row_marks] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {marks} RETURNING {back}",
                [v for row in chunk for v in row],
            )
            result += [tuple(r) for r in cursor.fetchall()]
    return result


def rows_upsert(
    *,
    model: type[Model],
    columns: Sequence[str],
    rows: Sequence[Sequence],
    conflict: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert ``rows``, or update the ``update`` columns of the row already holding their
    ``conflict`` key (a unique constraint of those columns must exist)."""
    if not rows:
        return
    fields = _fields(model, columns)
    _fields(model, [*conflict, *update])
    table = _quote(model._meta.db_table)
    names = ", ".join(_quote(c) for c in columns)
    marks = ", ".join(_placeholder(f) for f in fields)
    keys = ", ".join(_quote(c) for c in conflict)
    sets = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in update)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({keys}) DO UPDATE SET {sets}",
            _adapted(fields, rows),
        )


def rows_update(*, model: type[Model], columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Set ``columns`` of rows by primary key: each row is the values then the pk."""
    if not rows:
        return
    pk = model._meta.pk
    fields = [*_fields(model, columns), pk]
    table = _quote(model._meta.db_table)
    sets = ", ".join(f"{_quote(f.column)} = {_placeholder(f)}" for f in fields[:-1])
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {sets} WHERE {_quote(pk.column)} = %s", _adapted(fields, rows)
        )


def ids_draw(*, models: Sequence[type[Model]], count: int) -> list[tuple[int, ...]]:
    """``count`` fresh primary keys from each model, as ``count`` tuples (module docstring)."""
    if count <= 0:
        return []
    tables = [m._meta.db_table for m in models]
    with connection.cursor() as cursor:
        if _postgres():
            draws = ", ".join("nextval(pg_get_serial_sequence(%s, 'id'))" for _ in tables)
            cursor.execute(f"SELECT {draws} FROM generate_series(1, %s)", [*tables, count])
            return [tuple(r) for r in cursor.fetchall()]
        if not connection.in_atomic_block:
            # Outside a transaction another process could draw the same ids between our read and
            # our write of the counter; inside one, SQLite's write lock (IMMEDIATE) excludes it.
            raise RuntimeError("ids_draw needs a transaction on SQLite (transaction.atomic())")
        starts = []
        for table in tables:
            # The counter never falls below the table's highest id (rows inserted with explicit ids).
            highest = f"coalesce((SELECT max(id) FROM {_quote(table)}), 0)"
            cursor.execute(
                f"UPDATE sqlite_sequence SET seq = max(seq, {highest}) + %s WHERE name = %s RETURNING seq",
                [count, table],
            )
            row = cursor.fetchone()
            if row is None:  # no row was ever inserted: the table has no counter yet
                cursor.execute(f"SELECT coalesce(max(id), 0) FROM {_quote(table)}")
                row = (cursor.fetchone()[0] + count,)
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, row[0]])
            starts.append(row[0] - count)
    return [tuple(start + i for start in starts) for i in range(1, count + 1)]


def pipeline() -> AbstractContextManager:
    """PostgreSQL's pipeline mode for the statements inside (module docstring)."""
    if _postgres():
        # psycopg is the PostgreSQL driver only: imported when that is the database in use.
        import psycopg

        if psycopg.Pipeline.is_supported():
            connection.ensure_connection()
            return connection.connection.pipeline()
    return nullcontext()


def _kind(values: Sequence, kind: str | None) -> str:
    if kind is None:
        kind = "int" if all(isinstance(v, int | np.integer) for v in values) else "text"
    if kind == "text" and any("," in str(v) for v in values):
        raise ValueError("values for a one-parameter IN list must not contain commas")
    return kind


def any_sql(column_sql: str, values: Sequence, *, kind: str | None = None) -> tuple[str, list]:
    """``(sql, params)`` of ``column_sql IN values`` with one parameter (module docstring);
    ``kind`` is ``"int"`` or ``"text"`` (default: ``"int"`` when every value is an int)."""
    values = list(values)
    kind = _kind(values, kind)
    if _postgres():
        if kind == "int":
            # An int8[] literal: read by the server's array parser straight into int8 (2-4 ms
            # less per 25,000 ids than splitting a text and casting its parts).
            return f"{column_sql} = ANY(%s::int8[])", ["{" + ",".join(map(str, map(int, values))) + "}"]
        return f"{column_sql} = ANY(string_to_array(%s, ','))", [",".join(map(str, values))]
    items = [int(v) for v in values] if kind == "int" else [str(v) for v in values]
    return f"{column_sql} IN (SELECT value FROM json_each(%s))", [json.dumps(items)]


def filter_any(queryset: QuerySet, column: str, values: Iterable) -> QuerySet:
    """``queryset`` filtered to rows whose ``column`` is in ``values`` (module docstring)."""
    model = queryset.model
    (field,) = _fields(model, [column])
    kind = "int" if isinstance(field, _INTEGER_FIELDS) else "text"
    sql, params = any_sql(f"{_quote(model._meta.db_table)}.{_quote(column)}", list(values), kind=kind)
    return queryset.filter(RawSQL(sql, params, output_field=BooleanField()))


def skip_locked() -> str:
    """The claiming clause to append to a ``SELECT`` (module docstring)."""
    return " FOR UPDATE SKIP LOCKED" if _postgres() else ""


def columns_arrays(
    *,
    model: type[Model],
    where: str,
    params: Sequence,
    columns: Sequence[tuple[str, str, str]],
) -> dict[str, np.ndarray]:
    """Non-null ``columns`` (``(name, column, "int" | "float")``) of ``model``'s rows matching
    ``where``, as int64 / float64 arrays of one length, in no particular order (module docstring)."""
    _fields(model, [column for _, column, _ in columns])
    table = _quote(model._meta.db_table)
    if _postgres():
        # 8 big-endian bytes per row and column; every aggregate of one query sees the rows in the
        # same order, so the columns line up.
        send = {"int": "int8send({}::int8)", "float": "float8send({}::float8)"}
        select = ", ".join(f"string_agg({send[kind].format(_quote(c))}, '')" for _, c, kind in columns)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {select} FROM {table} WHERE {where}", list(params))
            row = cursor.fetchone()
        return {
            name: np.frombuffer(bytes(data or b""), dtype=">i8" if kind == "int" else ">f8").astype(
                np.int64 if kind == "int" else np.float64
            )
            for (name, _, kind), data in zip(columns, row, strict=True)
        }
    cast = {"int": "CAST({} AS INTEGER)", "float": "CAST({} AS REAL)"}
    select = ", ".join(cast[kind].format(_quote(c)) for _, c, kind in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {select} FROM {table} WHERE {where}", list(params))
        rows = cursor.fetchall()
    return {
        name: np.array([r[i] for r in rows], dtype=np.int64 if kind == "int" else np.float64)
        for i, (name, _, kind) in enumerate(columns)
    }


def statement_time() -> datetime:
    """The current statement's time on PostgreSQL (one value for the whole transaction's reads to
    be compared with), the clock on SQLite."""
    if _postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


@contextmanager
def atomic_snapshot() -> Iterator[None]:
    """``transaction.atomic()`` whose reads see one snapshot of the database. On PostgreSQL an
    outermost transaction is made REPEATABLE READ, read only (inside an outer transaction, e.g. a
    test's, that one's isolation applies); a SQLite transaction already reads one snapshot."""
    fresh = not connection.in_atomic_block
    with transaction.atomic():
        if fresh and _postgres():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


@contextmanager
def advisory_lock(*, key: str) -> Iterator[bool]:
    """Try to take the named lock ``key`` for the block; yields whether it was taken (module
    docstring)."""
    if not _postgres():
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])


FLAG_TABLE = "clearing_transaction_flag"


@contextmanager
def transaction_flag(name: str) -> Iterator[None]:
    """Raise the flag ``name`` for the block, inside the caller's transaction (module docstring).
    A block that fails leaves the flag to the transaction's rollback."""
    if not connection.in_atomic_block:
        # Outside a transaction the flag would be committed (SQLite) or ignored (PostgreSQL).
        raise RuntimeError("transaction_flag needs a transaction (transaction.atomic())")
    with connection.cursor() as cursor:
        if _postgres():
            cursor.execute("SELECT set_config(%s, 'on', true)", [name])
        else:
            cursor.execute(f"INSERT INTO {FLAG_TABLE} (name) VALUES (%s)", [name])
    yield
    with connection.cursor() as cursor:
        if _postgres():
            cursor.execute("SELECT set_config(%s, 'off', true)", [name])
        else:
            cursor.execute(f"DELETE FROM {FLAG_TABLE} WHERE name = %s", [name])


def utc_day_end_sql(column_sql: str) -> str:
    """The first instant of the UTC day after ``column_sql``, in SQL (module docstring)."""
    if _postgres():
        return f"(date_trunc('day', {column_sql} AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'"
    # SQLite holds datetimes as naive UTC text ("2025-03-01 12:30:15.250000"); the next midnight
    # in the same form ("2025-03-02 00:00:00") compares with them as text.
    return f"datetime(date({column_sql}), '+1 day')"


def tables_size(*, tables: Iterable[str]) -> dict[str, tuple[float, float | None]]:
    """Rows and bytes per existing table among ``tables`` (module docstring)."""
    tables = list(tables)
    with connection.cursor() as cursor:
        if _postgres():
            cursor.execute(
                "SELECT relname, greatest(reltuples, 0), pg_total_relation_size(oid) FROM pg_class"
                " WHERE relname = ANY(%s) AND relkind = 'r'",
                [tables],
            )
            return {name: (float(rows), float(size)) for name, rows, size in cursor.fetchall()}
        existing = set(connection.introspection.table_names(cursor))
        sizes: dict[str, tuple[float, float | None]] = {}
        for table in tables:
            if table in existing:
                cursor.execute(f"SELECT count(*) FROM {_quote(table)}")
                sizes[table] = (float(cursor.fetchone()[0]), _sqlite_bytes(cursor, table))
        return sizes


def _sqlite_bytes(cursor, table: str) -> float | None:
    """Pages of ``table`` and its indexes, from SQLite's ``dbstat`` table (None where SQLite was
    built without it)."""
    cursor.execute("SELECT name FROM sqlite_master WHERE tbl_name = %s", [table])
    names = [name for (name,) in cursor.fetchall()]
    total = 0
    try:
        with transaction.atomic():
            for name in names:
                cursor.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = %s", [name])
                total += cursor.fetchone()[0]
    except DatabaseError:
        return None
    return float(total)


@contextmanager
def delete_triggers_lifted(*, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Lift the triggers that refuse deletions for a wholesale flush of the database ``using``
    (module docstring)."""
    db = connections[using]
    if db.vendor == "postgresql":
        yield
        return
    with transaction.atomic(using=using):
        with db.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            triggers = [(name, sql) for name, sql in cursor.fetchall() if _fires_on_delete(sql)]
            for name, _ in triggers:
                cursor.execute(f"DROP TRIGGER {db.ops.quote_name(name)}")
        yield
        with db.cursor() as cursor:
            for _, sql in triggers:
                cursor.execute(sql)


_ON_DELETE = re.compile(r"\b(?:BEFORE|AFTER|INSTEAD\s+OF)\s+DELETE\s+ON\b", re.IGNORECASE)


def _fires_on_delete(sql: str) -> bool:
    return bool(_ON_DELETE.search(sql))


def datetime_aware(value: datetime | str) -> datetime:
    """A datetime read by a raw cursor as an aware datetime (module docstring)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# How SQLite stores a float NaN (module docstring, ``float_to_db``).
NAN_TEXT = "NaN"


def float_to_db(value):
    """A float column's value as this database keeps it, NaN included (module docstring)."""
    if isinstance(value, float) and math.isnan(value) and not _postgres():
        return NAN_TEXT
    return value


def float_from_db(value):
    """A float column's stored value back as a float (``float_to_db``'s inverse)."""
    return float(value) if isinstance(value, str) else value
