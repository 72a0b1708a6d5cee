# The outbox moved to the shared kernel (clearing.0003 takes it over with its table): removed from
# this app's state only, the table and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("frontend", "0002_target_band"),
        ("clearing", "0003_outboxevent"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="OutboxEvent")],
            database_operations=[],
        ),
    ]
