"""Command-line options whose default comes from a setting."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandParser


def add_setting_option(
    parser: CommandParser, flag: str, setting: str, *, type: type, help: str
) -> None:
    """Add ``flag`` (of ``type``) defaulting to ``settings.<setting>``; its help ends by naming
    the setting and its value: ``(default: SETTING_NAME, 30.0)``."""
    parser.add_argument(
        flag,
        type=type,
        default=getattr(settings, setting),
        help=f"{help} (default: {setting}, %(default)s)",
    )
