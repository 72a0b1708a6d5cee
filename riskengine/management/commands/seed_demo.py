from django.core.management.base import BaseCommand

from accounts.models import Member
from clearing.config.celery import embedded_broker_folders_ensure
from riskengine.demo import demo_venue_seed


class Command(BaseCommand):
    help = "Create (or complete) the demo venue: instruments, collateral assets, members, users and books."

    def add_arguments(self, parser):
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when the database already has a member."
        )

    def handle(self, *args, if_empty, **options):
        if if_empty and Member.objects.exists():
            self.stdout.write(
                "The database already has members: not seeding (seed_demo without --if-empty completes it)."
            )
            return
        embedded_broker_folders_ensure()  # seeding enqueues the first event sweep
        demo_venue_seed(log=self.stdout.write)
