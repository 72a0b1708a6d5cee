"""Retention runs on SQLite too: the guard on margin snapshots lets a DELETE through while the
transaction has raised the ``clearing.snapshot_retention`` flag (``clearing.bulk.transaction_flag``),
as the PostgreSQL trigger of ``ops.0001`` already does; every UPDATE stays refused. Nothing changes
on PostgreSQL."""

from django.db import migrations

TABLE = "sweeps_marginsnapshot"
REFUSE = f"BEGIN SELECT RAISE(ABORT, '{TABLE} rows are append-only'); END"
GATED = f"""CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    WHEN NOT EXISTS (
        SELECT 1 FROM clearing_transaction_flag WHERE name = 'clearing.snapshot_retention'
    )
    {REFUSE}"""
ALWAYS = f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} {REFUSE}"


def gate(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete", params=None)
        schema_editor.execute(GATED, params=None)


def ungate(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete", params=None)
        schema_editor.execute(ALWAYS, params=None)


class Migration(migrations.Migration):
    dependencies = [("ops", "0003_opsalert"), ("clearing", "0005_transaction_flag")]

    operations = [migrations.RunPython(gate, ungate)]
