"""The database itself refuses UPDATE and DELETE on the agents' ledgers: automatic transfers, hedge
fills, webhook delivery attempts and the policy changes log."""

from django.db import migrations

from clearing.ledger import append_only_trigger_sql

LEDGER_TABLES = [
    "agents_autotransfer",
    "agents_hedgefill",
    "agents_webhookattempt",
    "agents_policychange",
]


def install(apps, schema_editor):
    for table in LEDGER_TABLES:
        forward, _ = append_only_trigger_sql(table, schema_editor.connection.vendor)
        for statement in forward:
            schema_editor.execute(statement, params=None)


def uninstall(apps, schema_editor):
    for table in LEDGER_TABLES:
        _, reverse = append_only_trigger_sql(table, schema_editor.connection.vendor)
        for statement in reverse:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
