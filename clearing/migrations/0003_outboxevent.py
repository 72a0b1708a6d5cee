# The outbox moved from the web app (frontend) to the shared kernel: the table stays as it is
# (``frontend_outboxevent``), only Django's state changes (frontend.0003 removes it there).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("clearing", "0002_append_only_triggers"),
        ("frontend", "0002_target_band"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OutboxEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("group", models.CharField(help_text="Channel-layer group, e.g. account-42.", max_length=100)),
                        ("type", models.CharField(help_text="Event type, e.g. margin_call.opened.", max_length=50)),
                        ("payload", models.JSONField(default=dict)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("relayed_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "frontend_outboxevent",
                        "ordering": ["id"],
                        "indexes": [
                            models.Index(
                                condition=models.Q(("relayed_at__isnull", True)), fields=["id"], name="outbox_pending"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
