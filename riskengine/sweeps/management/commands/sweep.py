"""``manage.py sweep``: a full margin sweep, here and now, then a summary."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from riskengine.sweeps.services import sweep_full_create, sweep_full_run


class Command(BaseCommand):
    help = "Run a full margin sweep of every account now and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("--shard-size", type=int, default=None, help="Accounts per shard.")
        parser.add_argument(
            "--distributed", action="store_true", help="Send the shards to the Celery workers instead."
        )

    def handle(self, *args, shard_size=None, distributed=False, **options):
        started = time.perf_counter()
        if distributed:
            sweep = sweep_full_create(cause="command", shard_size=shard_size)
            self.stdout.write(
                f"sweep {sweep.pk}: {sweep.accounts} accounts in {sweep.shard_count} shards queued"
            )
            return
        sweep, outcome = sweep_full_run(cause="command", shard_size=shard_size)
        statuses = outcome.statuses
        self.stdout.write(
            f"sweep {sweep.pk} ({sweep.status}): {outcome.accounts} accounts in {sweep.shard_count} shards, "
            f"{statuses['healthy']} healthy, {statuses['margin_call']} margin call, "
            f"{statuses['liquidation']} liquidation; calls {outcome.opened} opened, {outcome.cured} cured, "
            f"{outcome.escalated} escalated ({outcome.suspended} liquidations suspended); "
            f"{time.perf_counter() - started:.2f} s"
        )
        if outcome.not_finite:
            self.stderr.write(
                f"CRITICAL: {outcome.not_finite} accounts with figures that are not finite (in liquidation, "
                "liquidation suspended): see the margin_not_finite ops alerts"
            )
