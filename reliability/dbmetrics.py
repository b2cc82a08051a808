"""Every query Django runs, counted by operation and table and timed by operation.

``install()`` connects ``record_queries`` to ``connection_created`` so that each connection, in
every process and thread, runs its queries through it (``connection.execute_wrapper`` only
covers a block; the list it appends to is the connection's own). Parsing a statement for its
operation and table costs more than counting it, so it happens once per distinct SQL text (an LRU
of the most recent texts, which keeps the labelled counter and histogram of each): Django builds
the same text for the same query every time. The guard's compiled statements skip Django's
cursor wrappers (``reliability.sql``, ``reliability.fastpath``) and call ``observe_query``.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any

from django.db.backends.signals import connection_created

from reliability import metrics

# Distinct SQL texts remembered; ``IN (%s, %s, ...)`` lists of varying length make more of them.
PARSED_TEXTS = 2048
_OPERATIONS = ("select", "insert", "update", "delete")
_TABLE_AFTER = {
    "select": re.compile(r'\bFROM\s+["`]?([\w.]+)', re.IGNORECASE),
    "insert": re.compile(r'\bINTO\s+["`]?([\w.]+)', re.IGNORECASE),
    "update": re.compile(r'^\s*UPDATE\s+["`]?([\w.]+)', re.IGNORECASE),
    "delete": re.compile(r'\bFROM\s+["`]?([\w.]+)', re.IGNORECASE),
}


@lru_cache(maxsize=PARSED_TEXTS)
def operation_and_table(sql: str) -> tuple[str, str]:
    """``("select", "analyses_analysis")``; ``("other", "")`` for BEGIN, SAVEPOINT, PRAGMA...

    The table is the first one the statement names (a join's or subquery's others are not
    counted); a statement starting with WITH is counted by its main verb.
    """
    words = sql.lstrip("( \n").split(None, 1)
    verb = words[0].lower() if words else ""
    if verb == "with":
        verb = next((op for op in _OPERATIONS if re.search(rf"\b{op}\b", sql, re.I)), "other")
    if verb not in _OPERATIONS:
        return "other", ""
    match = _TABLE_AFTER[verb].search(sql)
    return verb, match.group(1).lower() if match else ""


@lru_cache(maxsize=PARSED_TEXTS)
def _instruments(sql: str) -> tuple[Any, Any]:
    """The counter and the histogram a statement's text is recorded in."""
    operation, table = operation_and_table(sql)
    return (
        metrics.db_queries.labels(operation=operation, table=table),
        metrics.db_query_duration.labels(operation=operation),
    )


def observe_query(sql: str, seconds: float) -> None:
    count, duration = _instruments(sql)
    count.inc()
    duration.observe(seconds)


def record_queries(execute, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """The execute wrapper: runs the statement, then counts and times it (failed ones too)."""
    began = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        observe_query(sql, time.perf_counter() - began)


def wrap_connection(*, connection: Any, **_: Any) -> None:
    """``connection_created`` receiver: a reconnect of the same wrapper adds nothing twice."""
    if record_queries not in connection.execute_wrappers:
        connection.execute_wrappers.append(record_queries)


def install() -> None:
    connection_created.connect(wrap_connection, dispatch_uid="eidolon_db_metrics")


def uninstall() -> None:
    """For the benchmark's comparison, before the first query: new connections go unwrapped
    and the raw cursors' statements go uncounted (callers look ``observe_query`` up per call)."""
    global observe_query
    connection_created.disconnect(dispatch_uid="eidolon_db_metrics")
    observe_query = _uncounted


def _uncounted(sql: str, seconds: float) -> None:
    return None
