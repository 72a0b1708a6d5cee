"""``manage.py replay_snapshot ID``: print the margin document a stored snapshot was computed from
(pipe it into ``python -m riskengine margin -`` to recompute it)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from riskengine.sweeps.models import MarginSnapshot
from riskengine.sweeps.selectors import margin_snapshot_document


class Command(BaseCommand):
    help = "Print the margin document (JSON) that replays a stored margin snapshot."

    def add_arguments(self, parser):
        parser.add_argument("snapshot_id", type=int)

    def handle(self, *args, snapshot_id, **options):
        snapshot = (
            MarginSnapshot.objects.select_related("sweep", "account", "parameter_set")
            .filter(pk=snapshot_id)
            .first()
        )
        if snapshot is None:
            raise CommandError(f"No margin snapshot {snapshot_id}.")
        self.stdout.write(json.dumps(margin_snapshot_document(snapshot=snapshot), indent=1))
