from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.access import security_event_record
from accounts.models import SecurityAction, User
from accounts.services import api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for USERNAME and print it (only the token). It is shown this once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the token in the admin.")

    def handle(self, *args, username, name, **options):
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        with transaction.atomic():
            record, token = api_token_issue(user=user, name=name)
            # The operator at the command line has no user: the log shows the issue as theirs.
            security_event_record(
                action=SecurityAction.TOKEN_ISSUED,
                actor=None,
                user=user,
                role=user.role,
                note="Issued with manage.py issue_api_token.",
                changes={"prefix": record.prefix, "name": name},
            )
        self.stdout.write(token)
