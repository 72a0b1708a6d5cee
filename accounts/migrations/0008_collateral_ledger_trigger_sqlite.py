"""SQLite lost the collateral ledger's append-only triggers: ``0004`` altered a column of
``accounts_collateralmovement``, and SQLite alters a table by building a new one and copying the
rows, which drops the old table's triggers. Installed again there; PostgreSQL kept them."""

from django.db import migrations

from clearing.ledger import append_only_trigger_sql

TABLE = "accounts_collateralmovement"


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor != "sqlite":
        return
    forward, reverse = append_only_trigger_sql(TABLE, vendor)
    for statement in [*reverse, *forward]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0007_security_admin_role_grants")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
