"""Helpers shared by the parsing tests: parse a snippet, write a tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

from analyses.parsing import FUNCTION_KINDS, ParseLimits, Unit, parse_module, parse_tree


def units_of(source: str, *, path: str = "pkg/mod.py", **limits: int) -> dict[str, Unit]:
    units, errors = parse_module(textwrap.dedent(source), path=path, limits=ParseLimits(**limits))
    assert errors == []
    return {unit.qualname: unit for unit in units}


def only_function(source: str) -> Unit:
    functions = [unit for unit in units_of(source).values() if unit.kind in FUNCTION_KINDS]
    assert len(functions) == 1
    return functions[0]


def write(root: Path, relative: str, content: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def tree_units(tmp_path: Path, files: dict[str, str]) -> dict[str, Unit]:
    for relative, content in files.items():
        write(tmp_path, relative, content)
    return {unit.id: unit for unit in parse_tree(tmp_path).units}
