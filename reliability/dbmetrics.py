"""Every query Django runs, counted by operation and table and timed by operation.

``install()`` connects ``record_queries`` to ``connection_created`` so that each connection, in
every process and thread, runs its queries through it (``connection.execute_wrapper`` only
covers a block; the list it appends to is the connection's own). Parsing a statement for its
operation and table costs more than counting it, so it happens once per distinct SQL text (an LRU
of the most recent texts): Django builds the same text for the same query every time.
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


def record_queries(execute, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """The execute wrapper: runs the statement, then counts and times it (failed ones too)."""
    began = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        duration = time.perf_counter() - began
        operation, table = operation_and_table(sql)
        metrics.db_queries.labels(operation=operation, table=table).inc()
        metrics.db_query_duration.labels(operation=operation).observe(duration)


def wrap_connection(*, connection: Any, **_: Any) -> None:
    """``connection_created`` receiver: a reconnect of the same wrapper adds nothing twice."""
    if record_queries not in connection.execute_wrappers:
        connection.execute_wrappers.append(record_queries)


def install() -> None:
    connection_created.connect(wrap_connection, dispatch_uid="eidolon_db_metrics")


def uninstall() -> None:
    """For the benchmark's comparison: new connections go unwrapped (existing ones stay)."""
    connection_created.disconnect(dispatch_uid="eidolon_db_metrics")
