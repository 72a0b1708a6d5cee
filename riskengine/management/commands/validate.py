"""``manage.py validate``: model validation runs of the active set (backtest and stress of every
member account, riskengine.validation), here and now or on the workers, then a summary; and
``--document`` to print the margin document of every member account with its member (what
``python -m riskengine backtest|stress DOC.json --prices DIR`` replays)."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from accounts.models import AccountKind, MarginAccount
from riskengine.loading import margin_book_load
from riskengine.reference import quotes_current
from riskengine.selectors import NoActiveParameterSet, parameter_set_active, parameters_form
from riskengine.validation.models import ValidationKind, ValidationMode
from riskengine.validation.services import validation_run_complete, validation_runs_start


class Command(BaseCommand):
    help = "Backtest and stress every member account under the active set now, and print a summary."

    def add_arguments(self, parser):
        parser.add_argument(
            "--mode", choices=[*ValidationMode.values, "both"], default="both", help="Which runs (both)."
        )
        parser.add_argument(
            "--distributed", action="store_true", help="Send the shards to the Celery workers instead."
        )
        parser.add_argument(
            "--document",
            action="store_true",
            help="Print the margin document of every member account (each with its member) instead.",
        )

    def handle(self, *args, mode="both", distributed=False, document=False, **options):
        try:
            if document:
                self._document()
                return
            modes = tuple(ValidationMode.values) if mode == "both" else (mode,)
            started = time.perf_counter()
            runs = validation_runs_start(
                kind=ValidationKind.ON_DEMAND, cause="command", modes=modes, enqueue=distributed
            )
        except NoActiveParameterSet as error:
            raise CommandError(str(error)) from None
        for run in runs:
            if distributed or run.status != "running":
                self.stdout.write(f"validation run {run.pk} ({run.mode}): {run.status} {run.error}".rstrip())
                continue
            run = validation_run_complete(run=run)
            pooled, aggregate = run.report.get("pooled") or {}, run.report.get("aggregate") or {}
            cover_2 = run.report["cover_2"]
            self.stdout.write(
                f"validation run {run.pk} ({run.mode}, {run.status}): {run.backtested} accounts backtested "
                f"over {run.observations} days {run.first_day}..{run.last_day} in {run.shard_count} shards; "
                f"pooled {pooled.get('exceptions')} exceptions, coverage {pooled.get('coverage')}, "
                f"{pooled.get('traffic_light')}; aggregate {aggregate.get('exceptions')} exceptions, "
                f"{aggregate.get('traffic_light')}; venue {run.light}; Cover-2 {cover_2['amount']:,.2f} USD "
                f"({cover_2['scenario']}; {', '.join(cover_2['members'])}), fund {run.fund_value}; "
                f"{time.perf_counter() - started:.2f} s"
            )

    def _document(self) -> None:
        members = dict(
            MarginAccount.objects.filter(kind=AccountKind.MEMBER).values_list("code", "member__code")
        )
        ids = list(
            MarginAccount.objects.filter(kind=AccountKind.MEMBER).order_by("pk").values_list("pk", flat=True)
        )
        book = margin_book_load(
            parameters_form=parameters_form(parameter_set=parameter_set_active()),
            quotes=quotes_current(),
            account_ids=ids,
        )
        document = book.document()
        for portfolio in document["portfolios"]:
            portfolio["member"] = members[portfolio["id"]]
        self.stdout.write(json.dumps(document, indent=1))
