"""Prepared statements built with the ORM: compiled once per process, run with new values.

Breakers and budgets change shared state on every outbound call, with conditional UPDATEs full
of ``F()``, ``Case`` and ``Greatest`` expressions. Building and compiling those expressions
costs the ORM milliseconds per call; running the SQL costs a tenth of that. So each hot
statement is written once as ordinary ORM expressions with ``Param`` placeholders where the
per-call values go, compiled the first time it runs, and re-run with fresh values after that.

``UPDATE ... RETURNING`` lets a statement change shared state and report the result (a reserved
slot, a new failure count) in one atomic step. Where the database lacks it (SQLite before 3.35)
the UPDATE and a re-read run in one short transaction, which holds the row lock (PostgreSQL)
or the write lock (SQLite) across both.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
from django.db.models import (
    Case,
    CharField,
    Expression,
    F,
    Field,
    FloatField,
    IntegerField,
    Model,
    Q,
    QuerySet,
    When,
)
from django.db.models.sql import UpdateQuery
from django.db.models.sql.constants import ROW_COUNT

from reliability import dbmetrics


@dataclass(frozen=True)
class _Slot:
    name: str


class Param(Expression):
    """A named bind parameter: its value is given each time the statement runs."""

    def __init__(self, name: str, output_field: Field | None = None) -> None:
        super().__init__(output_field=output_field or FloatField())
        self.name = name

    def as_sql(self, compiler, connection) -> tuple[str, list[Any]]:
        return "%s", [_Slot(self.name)]

    def get_group_by_cols(self) -> list:
        return []


def int_param(name: str) -> Param:
    return Param(name, IntegerField())


def by_name() -> Q:
    """The row whose ``name`` is the ``name`` parameter (breakers and budgets are named)."""
    return Q(name=Param("name", CharField()))


def counter(field: str, amount: Expression, *, reset_when: Q) -> Case:
    """``field`` counting ``amount`` more; counting from ``amount`` afresh where ``reset_when``
    holds (a new window, a new day)."""
    return Case(
        When(reset_when, then=amount), default=F(field) + amount, output_field=IntegerField()
    )


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]

    def bind(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[p.name] if isinstance(p, _Slot) else p for p in self.params]


_compiled: dict[Hashable, _Compiled] = {}
_lock = threading.Lock()


def _compile(key: Hashable, build: Callable[[], tuple[str, Sequence[Any]]]) -> _Compiled:
    statement = _compiled.get(key)
    if statement is None:
        sql, params = build()
        statement = _Compiled(sql=sql, params=tuple(params))
        with _lock:
            _compiled.setdefault(key, statement)
    return statement


@contextlib.contextmanager
def _cursor(using: str, *, reads_only: bool = False) -> Iterator[Any]:
    """A cursor for a prepared statement.

    On PostgreSQL, a psycopg cursor with server-side binding, asking the server to prepare the
    statement: these UPDATEs are long, and parsing and planning them anew on every call (as
    Django's client-side binding does) costs more than running them. It shares the Django
    connection, so it takes part in any transaction Django has open (``reads_only`` statements
    always use it: they have nothing to commit).
    """
    connection = connections[using]
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        import psycopg

        raw = connection.connection
        if not connection.in_atomic_block and not reads_only:
            raw = _unsynchronised_connection(connection)
        try:
            with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
                yield cursor
        except DatabaseError:
            if raw is not connection.connection:
                _drop_unsynchronised_connection()
            raise
    elif connection.vendor == "sqlite":
        # The sqlite3 cursor itself: it caches compiled statements, and skips the wrappers
        # (Django's, the metrics') that cost more than the statement.
        cursor = connection.connection.cursor()
        try:
            with connection.wrap_database_errors:
                yield cursor
        finally:
            cursor.close()
    else:
        with connection.cursor() as cursor:
            yield cursor


_local = threading.local()


def _unsynchronised_connection(connection) -> Any:
    """This thread's second PostgreSQL connection, for breaker and budget statements outside a
    transaction: it commits without waiting for the WAL flush (``synchronous_commit=off``).

    A server crash can lose the last fraction of a second of these counters, a good trade for
    halving the cost of every guarded call; everything else (analyses, cards, history rows
    written in transactions) stays on Django's connection, fully durable.
    """
    raw = getattr(_local, "connection", None)
    if raw is None or raw.closed or raw.broken:
        raw = connection.get_new_connection(unsynchronised_connection_params(connection))
        raw.autocommit = True
        _local.connection = raw
    return raw


def unsynchronised_connection_params(connection) -> dict[str, Any]:
    """Django's parameters for a new PostgreSQL connection, with ``synchronous_commit=off``."""
    params = connection.get_connection_params()
    params["options"] = f"{params.get('options', '')} -c synchronous_commit=off".strip()
    return params


def _drop_unsynchronised_connection() -> None:
    raw = getattr(_local, "connection", None)
    _local.connection = None
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.close()


def _execute(cursor: Any, sql: str, params: Sequence[Any]) -> None:
    began = time.perf_counter()
    if isinstance(cursor, _psycopg_cursor_type()):
        cursor.execute(sql, params, prepare=True)
    elif isinstance(cursor, sqlite3.Cursor):
        cursor.execute(_qmark(sql), params)
    else:
        cursor.execute(sql, params)  # Django's cursor: its execute wrapper counts it
        return
    dbmetrics.observe_query(sql, time.perf_counter() - began)  # raw cursors skip the wrapper


@functools.lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    """Django's ``%s`` placeholders as sqlite3's ``?`` (as Django's SQLite cursor does)."""
    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


@functools.cache
def _psycopg_cursor_type() -> type:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return type(None)
    return psycopg.Cursor


def compiled_select(
    key: Hashable, *, model: type[Model], using: str = "default"
) -> _Compiled | None:
    """The SQL ``prepared_select(key, ...)`` compiled, if it has run in this process."""
    return _compiled.get(("select", using, model._meta.label, key))


def compiled_update(
    key: Hashable, *, model: type[Model], returning: Sequence[str] = (), using: str = "default"
) -> _Compiled | None:
    """The SQL ``prepared_update(key, ...)`` compiled (with ``RETURNING``), if it has run."""
    statement = _compiled.get(("update", using, model._meta.label, key))
    if statement is None or not returning:
        return statement
    return _Compiled(
        sql=f"{statement.sql} {_returning(model, returning, using)}", params=statement.params
    )


def _returning(model: type[Model], returning: Sequence[str], using: str) -> str:
    quote = connections[using].ops.quote_name
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in returning)
    return f"RETURNING {columns}"


def supports_returning(alias: str) -> bool:
    return connections[alias].features.can_return_columns_from_insert


@functools.cache
def _fields(model: type[Model], names: tuple[str, ...]) -> tuple[Field, ...]:
    return tuple(model._meta.get_field(name) for name in names)


def row_dict(model: type[Model], names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A fetched row as ``{field name: Python value}``."""
    fields = _fields(model, tuple(names))
    return {field.name: field.to_python(value) for field, value in zip(fields, row, strict=True)}


def prepared_select(
    key: Hashable,
    *,
    model: type[Model],
    condition: Callable[[], Q],
    fields: Sequence[str],
    params: Mapping[str, Any],
    using: str = "default",
) -> dict[str, Any] | None:
    """The first row matching ``condition`` (built with ``Param``), as a dict of ``fields``."""

    def compile_select() -> tuple[str, Sequence[Any]]:
        queryset = model._default_manager.using(using).filter(condition()).values_list(*fields)
        return queryset.query.get_compiler(using).as_sql()

    statement = _compile(("select", using, model._meta.label, key), compile_select)
    with _cursor(using) as cursor:
        _execute(cursor, statement.sql, statement.bind(params))
        row = cursor.fetchone()
    return None if row is None else row_dict(model, fields, row)


@dataclass(frozen=True)
class _RowPlan:
    """How a compiled SELECT's rows become instances: the fields' names, and the converters
    the ORM applies to each column (bound to the connection of the thread that made them)."""

    statement: _Compiled
    attnames: tuple[str, ...]
    converters: dict[int, tuple[list[Callable], Any]]


_row_plans = threading.local()


def _row_plan(key: Hashable, using: str, queryset: Callable[[], QuerySet]) -> _RowPlan:
    plans = _row_plans.__dict__.setdefault("plans", {})
    plan = plans.get((using, key))
    if plan is None:
        compiler = queryset().query.get_compiler(using)
        compiled = compiler.as_sql()  # also sets up compiler.select
        statement = _compile(("instances", using, key), lambda: compiled)
        columns = [expression for expression, _, _ in compiler.select]
        plan = plans[(using, key)] = _RowPlan(
            statement=statement,
            attnames=tuple(column.target.attname for column in columns),
            converters=compiler.get_converters(columns),
        )
    return plan


def prepared_instances(
    key: Hashable,
    *,
    model: type[Model],
    queryset: Callable[[], QuerySet],
    params: Mapping[str, Any],
    using: str = "default",
) -> list[Model]:
    """The ``model`` instances ``queryset()`` (filtered with ``Param``) selects, its SQL and its
    columns' converters worked out once, then run with new values: each row is converted and
    built as the ORM does (``Model.from_db``), without building and compiling the query again.
    For reads on hot paths (an API request's token and object)."""
    plan = _row_plan((model._meta.label, key), using, queryset)
    with _cursor(using, reads_only=True) as cursor:
        _execute(cursor, plan.statement.sql, plan.statement.bind(params))
        rows = cursor.fetchall()
    connection = connections[using]
    instances = []
    for row in rows:
        values = list(row)
        for position, (converters, expression) in plan.converters.items():
            for convert in converters:
                values[position] = convert(values[position], expression, connection)
        instances.append(model.from_db(using, plan.attnames, values))
    return instances


def prepared_update(
    key: Hashable,
    *,
    model: type[Model],
    values: Callable[[], Mapping[str, Any]],
    params: Mapping[str, Any],
    condition: Callable[[], Q] | None = None,
    returning: Sequence[str] = (),
    match: str = "pk",
    using: str = "default",
) -> dict[str, Any] | int | None:
    """Update the row whose ``match`` field (a unique one) is ``params[match]``, if ``condition``
    holds.

    Returns the ``returning`` fields of the updated row (None when no row matched), or, with
    nothing to return, the number of rows updated. ``values`` and ``condition`` build ORM
    expressions with ``Param`` placeholders; they run once per process and ``key``.
    """

    def row() -> Q:
        field = model._meta.pk if match == "pk" else model._meta.get_field(match)
        return Q(**{match: Param(match, field)})

    def matching() -> QuerySet:
        queryset = model._default_manager.using(using).filter(row())
        return queryset.filter(condition()) if condition is not None else queryset

    def compile_update() -> tuple[str, Sequence[Any]]:
        query = matching().query.chain(UpdateQuery)
        query.add_update_values(dict(values()))
        return query.get_compiler(using).as_sql()

    statement = _compile(("update", using, model._meta.label, key), compile_update)
    bound = statement.bind(params)
    if not returning:
        with _cursor(using) as cursor:
            _execute(cursor, statement.sql, bound)
            return cursor.rowcount
    if not supports_returning(using):
        with transaction.atomic(using=using):
            with _cursor(using) as cursor:
                _execute(cursor, statement.sql, bound)
                if not cursor.rowcount:
                    return None
            return prepared_select(
                ("reread", match, tuple(returning)),
                model=model,
                condition=row,
                fields=returning,
                params={match: params[match]},
                using=using,
            )
    with _cursor(using) as cursor:
        _execute(cursor, f"{statement.sql} {_returning(model, returning, using)}", bound)
        row = cursor.fetchone()
    return None if row is None else row_dict(model, returning, row)


def named_row(
    key: Hashable,
    *,
    model: type[Model],
    name: str,
    fields: Sequence[str],
    create: Callable[[], object],
) -> dict[str, Any]:
    """The ``fields`` of the ``model`` row named ``name`` (a prepared select), the row made by
    ``create`` first if there is none (breakers and budgets are made on first use)."""

    def select() -> dict[str, Any] | None:
        return prepared_select(
            key, model=model, condition=by_name, fields=fields, params={"name": name}
        )

    row = select()
    if row is None:
        create()
        row = select()
    assert row is not None
    return row


def update_returning(
    model: type[Model],
    *,
    pk: Any,
    values: Mapping[str, Any],
    returning: Sequence[str],
    condition: Q | None = None,
    using: str = "default",
) -> dict[str, Any] | None:
    """One-off ``UPDATE ... RETURNING`` (compiled on every call; for statements off hot paths)."""
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
    sql, params = query.get_compiler(using).as_sql()
    with _cursor(using) as cursor:
        _execute(cursor, f"{sql} {_returning(model, returning, using)}", params)
        row = cursor.fetchone()
    return None if row is None else row_dict(model, returning, row)
