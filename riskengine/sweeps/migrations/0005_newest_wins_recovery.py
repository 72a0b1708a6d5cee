"""Current margin ordered by valuation (``AccountMargin.valued_at``, ``sweep``), idempotent full
sweeps (``Sweep.request_key``), expired sweeps and shard re-sends (``clearing.ops.recovery``)."""

import django.db.models.deletion
from django.db import migrations, models

# Existing current margins take the valuation time and sweep of the snapshot they point at.
BACKFILL = """
UPDATE sweeps_accountmargin AS m
SET valued_at = w.valuation_time, sweep_id = w.id
FROM sweeps_marginsnapshot AS s JOIN sweeps_sweep AS w ON w.id = s.sweep_id
WHERE s.id = m.snapshot_id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("sweeps", "0004_snapshot_fk_checks_off"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="sweep", name="sweep_status_valid"),
        migrations.AddField(
            model_name="accountmargin",
            name="sweep",
            field=models.ForeignKey(
                null=True,
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="sweeps.sweep",
            ),
        ),
        migrations.AddField(
            model_name="accountmargin",
            name="valued_at",
            field=models.DateTimeField(null=True, help_text="The valuation time of the snapshot's sweep."),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop, elidable=True),
        migrations.AlterField(
            model_name="accountmargin",
            name="sweep",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="sweeps.sweep",
            ),
        ),
        migrations.AlterField(
            model_name="accountmargin",
            name="valued_at",
            field=models.DateTimeField(help_text="The valuation time of the snapshot's sweep."),
        ),
        migrations.AddField(
            model_name="sweep",
            name="error",
            field=models.TextField(blank=True, help_text="Why it failed or expired."),
        ),
        migrations.AddField(
            model_name="sweep",
            name="request_key",
            field=models.CharField(
                blank=True,
                help_text="The request that started it (a sweeps.full task id): a duplicate starts no second sweep.",
                max_length=200,
                null=True,
                unique=True,
            ),
        ),
        migrations.AddField(
            model_name="sweepshard",
            name="resends",
            field=models.PositiveIntegerField(default=0, help_text="Times the recovery task sent it again."),
        ),
        migrations.AddField(
            model_name="sweepshard",
            name="sent_at",
            field=models.DateTimeField(
                blank=True, help_text="Last time its task was sent again by the recovery task.", null=True
            ),
        ),
        migrations.AlterField(
            model_name="sweep",
            name="status",
            field=models.CharField(
                choices=[("running", "Running"), ("done", "Done"), ("failed", "Failed"), ("expired", "Expired")],
                default="running",
                max_length=8,
            ),
        ),
        migrations.AddConstraint(
            model_name="sweep",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["running", "done", "failed", "expired"])),
                name="sweep_status_valid",
            ),
        ),
    ]
