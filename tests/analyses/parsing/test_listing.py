"""analyses.parsing.listing: the tree's walk under the file I/O timeout.

A directory on a hung network mount cannot be made here, so the walk is given a listing
function (a plain parameter, ``os.scandir`` by default) that blocks on one directory the way
the kernel would.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from analyses.parsing import ParseLimits, iter_python_files
from analyses.parsing.files import scan_directory
from analyses.parsing.listing import list_python_files
from tests.analyses.parsing.support import write

LIMITS = ParseLimits(file_io_timeout=0.3)


def tree(root: Path) -> Path:
    write(root, "a.py", "a = 1\n")
    write(root, "hung/b.py", "b = 1\n")
    write(root, "z/c.py", "c = 1\n")
    return root.resolve()


class TestListing:
    def test_healthy_tree__the_same_files_as_the_walk(self, tmp_path):
        root = tree(tmp_path)
        errors = []
        assert list_python_files(root, limits=LIMITS, skipped=errors) == list(
            iter_python_files(root)
        )
        assert errors == []

    def test_hung_directory__nothing_read_and_the_stuck_path_recorded(self, tmp_path):
        root = tree(tmp_path)
        released = threading.Event()

        def hangs_on_one(directory: str) -> list[os.DirEntry]:
            if directory.endswith("/hung"):
                released.wait(30)  # a hung mount: the kernel never answers
            return scan_directory(directory)

        errors = []
        started = time.monotonic()
        try:
            files = list_python_files(
                root, limits=LIMITS, skipped=errors, list_directory=hangs_on_one
            )
        finally:
            released.set()
        assert time.monotonic() - started < 10
        assert files == []
        [error] = errors
        assert (error.path, error.code) == ("hung", "io_timeout")
        assert error.message == (
            "looking at hung took longer than 0.3 s; the filesystem looks hung, "
            "so no file of this tree was read"
        )

    def test_slow_but_moving__each_directory_gets_the_whole_timeout(self, tmp_path):
        for index in range(8):
            write(tmp_path, f"d{index}/m.py", "m = 1\n")
        root = tmp_path.resolve()

        def slow(directory: str) -> list[os.DirEntry]:
            time.sleep(0.25)  # nine directories: over 2 s in all, twice the timeout
            return scan_directory(directory)

        errors = []
        limits = ParseLimits(file_io_timeout=1.0)
        files = list_python_files(root, limits=limits, skipped=errors, list_directory=slow)
        assert len(files) == 8
        assert errors == []
