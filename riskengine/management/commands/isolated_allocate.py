from django.core.management.base import BaseCommand

from riskengine.allocations import isolated_carry_over_allocate
from riskengine.selectors import NoActiveParameterSet


class Command(BaseCommand):
    help = (
        "Allocate margin to the positions of isolated accounts opened before positions carried an "
        "allocation (methodology v1.1 section 4a): each gets max(0, IM - value) from free collateral "
        "at the oracle's last good prices. Run after `migrate` (docker/bin/release does); safe to repeat."
    )

    def handle(self, *args, **options):
        try:
            allocated = isolated_carry_over_allocate()
        except NoActiveParameterSet:
            # A venue without an active set has never margined anything: nothing to carry over.
            self.stdout.write("No active risk parameter set: nothing to allocate.")
            return
        for code, amount in sorted(allocated.items()):
            self.stdout.write(f"{code}: {amount:f} USD allocated")
        self.stdout.write(f"{len(allocated)} isolated account(s) given allocations.")
