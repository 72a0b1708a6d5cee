from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.access import security_event_record
from accounts.models import Role, SecurityAction, User
from accounts.services import user_create

# Four eyes need two security admins; once a deployment has them, every further staff role is
# granted in the admin by one and approved by the other.
BOOTSTRAP_LIMIT = 2


class Command(BaseCommand):
    help = (
        "Create one of a new deployment's first two security admins, without a password (set it with "
        "`manage.py changepassword USERNAME`). Refused once two active security admins exist."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, email, **options):
        with transaction.atomic():
            # Serialise concurrent runs: both would count one admin and make a third.
            list(User.objects.select_for_update().filter(role=Role.SECURITY_ADMIN))
            present = User.objects.filter(role=Role.SECURITY_ADMIN, is_active=True).count()
            if present >= BOOTSTRAP_LIMIT:
                raise CommandError(
                    f"{present} security admins exist: grant the role in the admin, where a second "
                    "security admin approves it."
                )
            try:
                user = user_create(username=username, password=None, role=Role.SECURITY_ADMIN, email=email)
            except ValidationError as error:
                raise CommandError("; ".join(error.messages)) from None
            security_event_record(
                action=SecurityAction.USER_CREATED,
                actor=None,
                user=user,
                role=Role.SECURITY_ADMIN,
                note="Bootstrap with manage.py security_admin_bootstrap.",
            )
        self.stdout.write(
            f"Security admin {username} created; set the password: manage.py changepassword {username}"
        )
