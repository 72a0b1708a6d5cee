"""Snapshot retention's bookkeeping, and the database guard on margin snapshots: no UPDATE ever,
no DELETE except by retention (``clearing.ops.retention``), which sets the transaction-local
``clearing.snapshot_retention`` to ``on`` for its own deletes."""

from django.db import migrations, models

TABLE = "sweeps_marginsnapshot"
FORWARD = {
    "postgresql": [
        f"""
        CREATE OR REPLACE FUNCTION marginsnapshot_guard() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('clearing.snapshot_retention', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION '{TABLE} rows are append-only: only retention deletes them'
                USING ERRCODE = 'P0001';
        END;
        $$ LANGUAGE plpgsql
        """,
        f"""CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
            FOR EACH ROW EXECUTE FUNCTION marginsnapshot_guard()""",
    ],
    # The embedded stack does not prune (retention is PostgreSQL-only): refuse both outright.
    "sqlite": [
        f"""CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON {TABLE}
            BEGIN SELECT RAISE(ABORT, '{TABLE} rows are append-only'); END"""
        for action in ("UPDATE", "DELETE")
    ],
}
REVERSE = {
    "postgresql": [f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}", "DROP FUNCTION IF EXISTS marginsnapshot_guard()"],
    "sqlite": [f"DROP TRIGGER IF EXISTS {TABLE}_no_{action}" for action in ("update", "delete")],
}


def install(apps, schema_editor):
    for statement in FORWARD[schema_editor.connection.vendor]:
        schema_editor.execute(statement, params=None)


def uninstall(apps, schema_editor):
    for statement in REVERSE[schema_editor.connection.vendor]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    initial = True

    dependencies = [("sweeps", "0004_snapshot_fk_checks_off")]

    operations = [
        migrations.CreateModel(
            name="SnapshotRetention",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("final_below_id", models.BigIntegerField(default=0)),
                ("checkpoints", models.JSONField(default=list)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.RunPython(install, uninstall),
    ]
