"""``manage.py flush`` (and every transactional test's teardown, which calls it): Django's, emptying
the append-only ledgers too, on both databases.

PostgreSQL flushes by ``TRUNCATE``, which fires no row trigger; SQLite flushes by ``DELETE``, which
the append-only triggers refuse, so the embedded stack's flush failed. Emptying the whole database
is not changing a ledger's history: the triggers that refuse deletions are lifted for the flush
alone (``clearing.bulk.delete_triggers_lifted``) and stand again when it is done.
"""

from django.core.management.commands import flush

from clearing.bulk import delete_triggers_lifted


class Command(flush.Command):
    def handle(self, **options):
        with delete_triggers_lifted(using=options["database"]):
            return super().handle(**options)
