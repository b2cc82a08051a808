"""``UPDATE ... RETURNING``: change shared state and learn the result in one atomic statement.

Django's ``QuerySet.update()`` returns only a row count. Breakers and budgets need the values
their update produced (a reserved slot, a new failure count) without a read-modify-write race,
so this compiles the ORM update and appends ``RETURNING``. On a database without it (SQLite
older than 3.35) the UPDATE and a re-read run in one short transaction, which holds the row
lock (PostgreSQL) or the write lock (SQLite) across both statements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import Model, Q
from django.db.models.sql import UpdateQuery
from django.db.models.sql.constants import ROW_COUNT


def supports_returning(alias: str) -> bool:
    return connections[alias].features.can_return_columns_from_insert


def update_returning(
    model: type[Model],
    *,
    pk: Any,
    values: Mapping[str, Any],
    returning: Sequence[str],
    condition: Q | None = None,
    using: str = "default",
) -> dict[str, Any] | None:
    """Update the row ``pk`` (if ``condition`` holds) and return ``returning`` fields, else None."""
    queryset = model._default_manager.using(using).filter(pk=pk)
    if condition is not None:
        queryset = queryset.filter(condition)
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(dict(values))

    if not supports_returning(using):
        with transaction.atomic(using=using):
            if not query.get_compiler(using).execute_sql(ROW_COUNT):
                return None
            return model._default_manager.using(using).filter(pk=pk).values(*returning).get()

    connection = connections[using]
    update_sql, params = query.get_compiler(using).as_sql()
    fields = [model._meta.get_field(name) for name in returning]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"{update_sql} RETURNING {columns}", params)
        row = cursor.fetchone()
    if row is None:
        return None
    return {field.name: field.to_python(value) for field, value in zip(fields, row, strict=True)}
