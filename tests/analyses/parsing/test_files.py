"""analyses.parsing.files: which files of a tree are walked, which are skipped, and why."""

from __future__ import annotations

import os

from analyses.parsing import FileError, iter_python_files, parse_tree
from tests.analyses.parsing.support import write


class TestIterPythonFiles:
    def test_discovery__sorted_python_files_skipping_tool_and_virtualenv_dirs(self, tmp_path):
        for relative in [
            "b.py", "a/z.py", "a/b/c.py", "notes.txt", "__pycache__/x.py", ".git/hooks/h.py",
            ".venv/lib/v.py", "venv/v.py", "lib/site-packages/s.py", "node_modules/n.py",
            ".tox/t.py", "myenv/pyvenv.cfg", "myenv/e.py",
        ]:  # fmt: skip
            write(tmp_path, relative, "x = 1\n")
        found = [path.relative_to(tmp_path).as_posix() for path in iter_python_files(tmp_path)]
        assert found == ["a/b/c.py", "a/z.py", "b.py"]

    def test_symlinks__leaving_the_root_are_not_followed(self, tmp_path):
        root = tmp_path / "root"
        write(tmp_path, "outside/secret.py", "def secret(): ...\n")
        write(root, "good.py", "def ok(): ...\n")
        (root / "leak.py").symlink_to(tmp_path / "outside" / "secret.py")
        (root / "leakdir").symlink_to(tmp_path / "outside", target_is_directory=True)
        result = parse_tree(root)
        assert [unit.qualname for unit in result.units] == ["good", "ok"]
        assert sorted((error.path, error.code) for error in result.errors) == [
            ("leak.py", "outside_root"),
            ("leakdir", "outside_root"),
        ]

    def test_symlinks__inside_the_root_visit_each_file_once_by_its_real_path(self, tmp_path):
        write(tmp_path, "pkg/real.py", "x = 1\n")
        (tmp_path / "a_link.py").symlink_to(tmp_path / "pkg" / "real.py")
        (tmp_path / "pkg" / "loop").symlink_to(tmp_path / "pkg", target_is_directory=True)
        write(tmp_path, "data/tool", "y = 2\n")
        (tmp_path / "tool.py").symlink_to(tmp_path / "data" / "tool")
        found = [path.relative_to(tmp_path).as_posix() for path in iter_python_files(tmp_path)]
        assert found == ["pkg/real.py", "tool.py"]

    def test_special_files__reported_and_never_opened(self, tmp_path):
        # A named pipe with no writer: opening it would block this test forever.
        write(tmp_path, "good.py", "def ok(): ...\n")
        os.mkfifo(tmp_path / "stuck.py")
        skipped: list[FileError] = []
        found = [
            path.relative_to(tmp_path).as_posix()
            for path in iter_python_files(tmp_path, skipped=skipped)
        ]
        assert found == ["good.py"]
        assert [(error.path, error.code) for error in skipped] == [("stuck.py", "special_file")]
        assert skipped[0].message == "a named pipe, not a regular file; not read"
        result = parse_tree(tmp_path)
        assert [unit.qualname for unit in result.units] == ["good", "ok"]
        assert result.errors == skipped
        assert (result.files_seen, result.files_parsed) == (1, 1)
