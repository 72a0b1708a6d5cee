# Ops alerts moved from the oracle's app (marketdata) to the shared kernel: the table stays as it is
# (``marketdata_opsalert``), only Django's state changes (marketdata.0004 removes it there).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ops", "0002_uncovered_deficit"),
        ("marketdata", "0003_indexstate_pending_sources_quorum"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OpsAlert",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(max_length=40)),
                        ("key", models.CharField(max_length=100)),
                        ("message", models.TextField()),
                        ("raise_count", models.PositiveIntegerField(default=1)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_raised_at", models.DateTimeField()),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "marketdata_opsalert",
                        "ordering": ["-created_at"],
                        "constraints": [
                            models.UniqueConstraint(
                                condition=models.Q(("resolved_at__isnull", True)),
                                fields=("kind", "key"),
                                name="opsalert_one_open",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
