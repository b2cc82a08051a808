"""The process's database thread keeps its connection across calls, and replaces one that
failed (the server restarted, say) before the next call."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection, connections

from reliability.dbthread import in_db_thread


def _terminate(pid: int) -> None:
    """End that server process, as a restart of the server would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def _backend_pid() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConnection:
    async def test_kept_across_calls__replaced_after_it_failed(self):
        first = await in_db_thread(_backend_pid)
        assert await in_db_thread(_backend_pid) == first
        await sync_to_async(_terminate)(first)
        with pytest.raises(OperationalError):
            await in_db_thread(_backend_pid)
        assert await in_db_thread(_backend_pid) != first
