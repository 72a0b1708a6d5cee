"""The database itself refuses UPDATE and DELETE on the custody ledgers: deposits, withdrawals,
their steps and the insurance-fund proposals and decisions."""

from django.db import migrations

from clearing.ledger import append_only_trigger_sql

LEDGER_TABLES = [
    "accounts_deposit",
    "accounts_depositstep",
    "accounts_withdrawal",
    "accounts_withdrawalstep",
    "accounts_fundwithdrawalproposal",
    "accounts_fundwithdrawaldecision",
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
    dependencies = [("accounts", "0005_custody_two_step_collateral")]

    operations = [migrations.RunPython(install, uninstall)]
