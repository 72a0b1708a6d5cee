"""The table of ``clearing.bulk.transaction_flag`` on SQLite: rows a transaction inserts and deletes
again before it commits, for the database's triggers to read. PostgreSQL keeps such a flag in a
transaction-local setting and needs no table."""

from django.db import migrations

CREATE = "CREATE TABLE clearing_transaction_flag (name varchar(100) NOT NULL PRIMARY KEY)"
DROP = "DROP TABLE IF EXISTS clearing_transaction_flag"


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(CREATE, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("clearing", "0004_position_allocated_margin")]

    operations = [migrations.RunPython(install, uninstall)]
