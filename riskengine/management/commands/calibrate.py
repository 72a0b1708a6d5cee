"""``manage.py calibrate [--as-of YYYY-MM-DD]``: propose a recalibrated parameter set now."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand

from riskengine.calibration import calibration_propose


class Command(BaseCommand):
    help = "Calibrate psr and correlations from the index history and propose (never apply) the result."

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of", type=date.fromisoformat, default=None, help="Last day of history used."
        )

    def handle(self, *args, as_of: date | None, **options):
        proposed = calibration_propose(as_of=as_of)
        self.stdout.write(self.style.SUCCESS(f"Parameter set {proposed.version} proposed: {proposed.reason}"))
