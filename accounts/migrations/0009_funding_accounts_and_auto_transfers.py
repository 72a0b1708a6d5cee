"""Funding accounts (a member's account that margins nothing, one per member) and the
``auto_transfer`` movements of band policies (issue #18). SQLite rebuilds
``accounts_collateralmovement`` to change its constraint, which drops its append-only triggers:
they are installed again there (as in ``0008``); PostgreSQL keeps them."""

from django.db import migrations, models

from clearing.ledger import append_only_trigger_sql

LEDGER = "accounts_collateralmovement"


def ledger_triggers_reinstall(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor != "sqlite":
        return
    forward, reverse = append_only_trigger_sql(LEDGER, vendor)
    for statement in [*reverse, *forward]:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0008_collateral_ledger_trigger_sqlite'),
        ('clearing', '0004_position_allocated_margin'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='collateralmovement',
            name='movement_kind_valid',
        ),
        migrations.RemoveConstraint(
            model_name='marginaccount',
            name='marginaccount_kind_valid',
        ),
        migrations.RemoveConstraint(
            model_name='marginaccount',
            name='marginaccount_one_house_and_one_fund',
        ),
        migrations.AlterField(
            model_name='collateralmovement',
            name='kind',
            field=models.CharField(choices=[('deposit', 'Deposit'), ('withdrawal', 'Withdrawal'), ('premium', 'Option premium'), ('realised_pnl', 'Realised P&L'), ('fee', 'Fee'), ('liquidation_fee', 'Liquidation fee'), ('deficit_cover', 'Deficit covered by the insurance fund'), ('withdrawal_reserve', 'Withdrawal reserved (requested)'), ('withdrawal_release', 'Withdrawal released (failed)'), ('auto_transfer', 'Automatic transfer (band policy)')], max_length=20),
        ),
        migrations.AlterField(
            model_name='marginaccount',
            name='kind',
            field=models.CharField(choices=[('member', 'Member account'), ('house', 'Venue house (liquidation) account'), ('insurance_fund', 'Insurance fund'), ('funding', 'Funding account')], default='member', max_length=20),
        ),
        migrations.AddConstraint(
            model_name='collateralmovement',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['deposit', 'withdrawal', 'premium', 'realised_pnl', 'fee', 'liquidation_fee', 'deficit_cover', 'withdrawal_reserve', 'withdrawal_release', 'auto_transfer'])), name='movement_kind_valid'),
        ),
        migrations.AddConstraint(
            model_name='marginaccount',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['member', 'house', 'insurance_fund', 'funding'])), name='marginaccount_kind_valid'),
        ),
        migrations.AddConstraint(
            model_name='marginaccount',
            constraint=models.UniqueConstraint(condition=models.Q(('kind__in', ['house', 'insurance_fund'])), fields=('kind',), name='marginaccount_one_house_and_one_fund'),
        ),
        migrations.AddConstraint(
            model_name='marginaccount',
            constraint=models.UniqueConstraint(condition=models.Q(('kind', 'funding')), fields=('member',), name='marginaccount_one_funding_per_member'),
        ),
        migrations.RunPython(ledger_triggers_reinstall, migrations.RunPython.noop),
    ]
