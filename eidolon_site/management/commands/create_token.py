"""Create a personal API token for a user and print it (it is shown this once).

    python manage.py create_token USERNAME [--name NAME]

The token is alone on the last line of stdout, so scripts can take it with ``tail -n 1``.
Exit status 1 with a one-line reason on stderr when the user does not exist or is inactive.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eidolon_site.accounts import token_create


class Command(BaseCommand):
    help = "Create a personal API token (Authorization: Bearer) and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="Whose token it is.")
        parser.add_argument(
            "--name", default="command line", help="What the token is for (a CI job, a laptop)."
        )

    def handle(self, *args, username: str, name: str, **options) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive: its tokens would not work")
        try:
            token, raw = token_create(user=user, name=name)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Token {token.prefix}… ({token.name!r}) for {username}. It is shown only now; "
            "send it as 'Authorization: Bearer <token>':"
        )
        self.stdout.write(raw)
