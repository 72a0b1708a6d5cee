"""Building blocks shared by every ledger and money column.

Money, prices and quantities are ``NUMERIC`` in the database and ``Decimal`` in Python; floats
appear only inside the risk engine. Ledger rows are append-only: the models refuse changes and
the database refuses them too (see ``clearing.migrations.0002_append_only_triggers``).
"""

from __future__ import annotations

from functools import partial

from django.db import models

from clearing.bulk import float_from_db, float_to_db

# 28 significant digits with 10 decimals: room for 10^18 USD and for satoshi-level quantities.
AmountField = partial(models.DecimalField, max_digits=28, decimal_places=10)
PriceField = partial(models.DecimalField, max_digits=28, decimal_places=10)
QuantityField = partial(models.DecimalField, max_digits=28, decimal_places=10)


class FigureField(models.FloatField):
    """A figure of the risk engine (float64) stored exactly on both databases, NaN included: a
    stored figure must replay from its stored inputs, a figure that is not a number too (a snapshot
    of an account whose figures are not finite). PostgreSQL's ``float8`` holds NaN; SQLite's driver
    would bind it as NULL, so there it is stored as text (``clearing.bulk.float_to_db``).

    The column is a plain ``FloatField``'s (``double precision`` / ``REAL``) and the field
    deconstructs as one: only the values' adaptation differs, which migrations never use, so no
    migration (and on SQLite no rebuilt table, which would drop its triggers) comes of it."""

    def get_db_prep_value(self, value, connection, prepared=False):
        return float_to_db(super().get_db_prep_value(value, connection, prepared))

    def from_db_value(self, value, expression, connection):
        return float_from_db(value)

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.FloatField", args, kwargs


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete a row of an append-only ledger."""


class AppendOnlyModel(models.Model):
    """A ledger row: written once, never changed, never deleted."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only and cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only and cannot be deleted")


def append_only_trigger_sql(table: str, vendor: str) -> tuple[list[str], list[str]]:
    """SQL statements (forward, reverse) installing triggers that refuse UPDATE and DELETE on ``table``."""
    if vendor == "postgresql":
        forward = [
            """
            CREATE OR REPLACE FUNCTION refuse_ledger_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME USING ERRCODE = 'P0001';
            END;
            $$ LANGUAGE plpgsql
            """,
            f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()""",
        ]
        reverse = [f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"]
    elif vendor == "sqlite":
        forward = [
            f"""CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}
                BEGIN SELECT RAISE(ABORT, '{table} rows are append-only'); END"""
            for action in ("UPDATE", "DELETE")
        ]
        reverse = [f"DROP TRIGGER IF EXISTS {table}_no_{action}" for action in ("update", "delete")]
    else:
        raise NotImplementedError(f"append-only triggers are not written for {vendor}")
    return forward, reverse
