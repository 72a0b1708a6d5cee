"""The database refuses UPDATE and DELETE on the margin-call event log."""

from django.db import migrations

from clearing.ledger import append_only_trigger_sql

TABLE = "sweeps_margincallevent"


def install(apps, schema_editor):
    for statement in append_only_trigger_sql(TABLE, schema_editor.connection.vendor)[0]:
        schema_editor.execute(statement, params=None)


def uninstall(apps, schema_editor):
    for statement in append_only_trigger_sql(TABLE, schema_editor.connection.vendor)[1]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("sweeps", "0001_initial"), ("clearing", "0002_append_only_triggers")]

    operations = [migrations.RunPython(install, uninstall)]
