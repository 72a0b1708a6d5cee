# Ops alerts moved to the shared kernel (ops.0003 takes them over with their table): removed from
# this app's state only, the table and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("marketdata", "0003_indexstate_pending_sources_quorum"),
        ("ops", "0003_opsalert"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="OpsAlert")],
            database_operations=[],
        ),
    ]
