"""analyses.parsing.parser: what parse_tree returns for a directory."""

from __future__ import annotations

import pytest

from analyses.parsing import parse_tree
from tests.analyses.parsing.support import write


class TestParseTreeResult:
    def test_paths__relative_posix_and_units_in_file_order(self, tmp_path):
        write(tmp_path, "pkg/b.py", "def b(): ...\n")
        write(tmp_path, "pkg/a.py", "def a(): ...\n")
        result = parse_tree(tmp_path)
        assert [(unit.path, unit.qualname) for unit in result.units] == [
            ("pkg/a.py", "pkg.a"),
            ("pkg/a.py", "a"),
            ("pkg/b.py", "pkg.b"),
            ("pkg/b.py", "b"),
        ]

    def test_root__must_be_a_directory(self, tmp_path):
        with pytest.raises(NotADirectoryError):
            parse_tree(tmp_path / "missing")
