"""analyses.parsing.reading: the file I/O timeout, on real named pipes (no filesystem mocks).

A named pipe with no writer blocks ``open`` until a writer comes: the stand-in for a file on a
hung network mount. The walker never opens one (``special_file``), so the timeout is shown on
``read_files`` itself, the function ``parse_tree`` reads through.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from analyses.models import Analysis, AnalysisStatus
from analyses.orchestrator import run_analysis
from analyses.parsing import FileError, ParseLimits, parse_tree, read_files
from analyses.parsing.reading import MAX_STUCK_READS, read_file
from analyses.services import analysis_create
from tests.analyses.parsing.support import write

TIMEOUT = 0.3
LIMITS = ParseLimits(file_io_timeout=TIMEOUT)
REPO_ROOT = Path(__file__).resolve().parents[3]


class Pipes:
    """Named pipes with no writer; each is given one when the test ends, so the reader threads
    a test left blocked on them finish instead of lingering for the rest of the run."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def make(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self.paths.append(path)
        return path

    def release(self, path: Path) -> None:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody is waiting to read it
                raise
        else:
            os.close(descriptor)  # the blocked reader's open returns, then reads end of file


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    made = Pipes()
    yield made
    for path in made.paths:
        made.release(path)


def reader_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "eidolon-file-reader"]


def read_all(root: Path, names: list[str], *, limits: ParseLimits = LIMITS) -> list:
    files = [root / name for name in names]
    return [
        (path, data if isinstance(data, FileError) else bytes(data))
        for path, data in read_files(files, root=root, limits=limits)
    ]


class TestTimeout:
    def test_stuck_read__fails_that_file_after_the_timeout(self, tmp_path, pipes):
        pipes.make(tmp_path / "stuck.py")
        started = time.monotonic()
        [(path, error)] = read_all(tmp_path, ["stuck.py"])
        elapsed = time.monotonic() - started
        assert (path, error.path, error.code) == ("stuck.py", "stuck.py", "io_timeout")
        assert error.message == "reading the file took longer than 0.3 s; skipped"
        assert TIMEOUT <= elapsed < TIMEOUT + 2

    def test_stuck_read__the_files_around_it_are_read(self, tmp_path, pipes):
        write(tmp_path, "a.py", "a = 1\n")
        pipes.make(tmp_path / "b" / "stuck.py")
        write(tmp_path, "c.py", "c = 1\n")
        reads = read_all(tmp_path, ["a.py", "b/stuck.py", "c.py"])
        assert [(path, getattr(data, "code", data)) for path, data in reads] == [
            ("a.py", b"a = 1\n"),
            ("b/stuck.py", "io_timeout"),
            ("c.py", b"c = 1\n"),
        ]

    def test_hung_filesystem__after_the_third_stuck_read_the_rest_fail_at_once(
        self, tmp_path, pipes
    ):
        names = [f"stuck{index}.py" for index in range(6)] + ["z_good.py"]
        for name in names[:-1]:
            pipes.make(tmp_path / name)
        write(tmp_path, "z_good.py", "x = 1\n")
        threads_before = len(reader_threads())
        started = time.monotonic()
        reads = read_all(tmp_path, names)
        elapsed = time.monotonic() - started
        assert MAX_STUCK_READS == 3
        assert [data.code for _, data in reads] == ["io_timeout"] * 7
        assert {data.message for _, data in reads[:3]} == {
            "reading the file took longer than 0.3 s; skipped"
        }
        assert {data.message for _, data in reads[3:]} == {
            "not read: 3 reads in this tree took longer than 0.3 s each, "
            "so its filesystem looks hung"
        }
        assert 3 * TIMEOUT <= elapsed < 3 * TIMEOUT + 2  # not 6 timeouts
        assert len(reader_threads()) - threads_before <= 3  # one left behind per stuck read

    def test_parse_tree__a_pipe_in_the_tree_is_skipped_with_its_reason_and_the_rest_parsed(
        self, tmp_path, pipes
    ):
        write(tmp_path, "a.py", "def first(): ...\n")
        pipes.make(tmp_path / "stuck.py")
        write(tmp_path, "z.py", "def last(): ...\n")
        result = parse_tree(tmp_path, limits=LIMITS)
        assert [unit.qualname for unit in result.units] == ["a", "first", "z", "last"]
        assert result.errors == [
            FileError(
                path="stuck.py",
                code="special_file",
                message="a named pipe, not a regular file; not read",
            )
        ]


class TestThreadLeftBehind:
    def test_later_parses__unaffected_and_the_thread_ends_when_its_read_returns(
        self, tmp_path, pipes
    ):
        stuck = pipes.make(tmp_path / "hung" / "stuck.py")
        before = set(reader_threads())
        [(_, error)] = read_all(tmp_path / "hung", ["stuck.py"])
        assert error.code == "io_timeout"
        [left_behind] = [thread for thread in reader_threads() if thread not in before]
        assert left_behind.daemon

        write(tmp_path, "fine/a.py", "def ok():\n    return 1\n")
        result = parse_tree(tmp_path / "fine", limits=LIMITS)
        assert (result.errors, [unit.qualname for unit in result.units]) == ([], ["a", "ok"])
        assert left_behind.is_alive()  # still blocked on the pipe, yet nothing waited for it

        pipes.release(stuck)
        left_behind.join(timeout=5)
        assert not left_behind.is_alive()

    def test_process_exit__not_blocked_by_a_reader_stuck_for_good(self, tmp_path, pipes):
        pipes.make(tmp_path / "stuck.py")
        script = textwrap.dedent(
            f"""
            from pathlib import Path
            from analyses.parsing import ParseLimits, read_files

            root = Path({str(tmp_path)!r})
            limits = ParseLimits(file_io_timeout={TIMEOUT})
            [(path, error)] = read_files([root / "stuck.py"], root=root, limits=limits)
            print(path, error.code, flush=True)
            """
        )
        child = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (child.returncode, child.stdout, child.stderr) == (0, "stuck.py io_timeout\n", "")


class TestReadFile:
    def test_size_under_reported_by_stat__read_whole_within_the_limit(self):
        # /proc files report size 0 and have content: the "grew since stat" path, for real.
        version = Path("/proc/version")
        expected = version.read_bytes()
        assert version.stat().st_size == 0 < len(expected)
        assert read_file(version, relative="version", limits=LIMITS) == expected
        small = ParseLimits(max_file_bytes=len(expected) - 1)
        error = read_file(version, relative="version", limits=small)
        assert isinstance(error, FileError)
        assert error.code == "too_large"


class TestConfiguration:
    def test_limits__timeout_defaults_to_the_seeds_ten_seconds(self):
        assert ParseLimits().file_io_timeout == 10.0

    @pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
    def test_limits__timeout_must_be_a_positive_number_of_seconds(self, seconds):
        with pytest.raises(ValueError, match="file_io_timeout"):
            ParseLimits(file_io_timeout=seconds)

    def test_settings__the_parse_limits_carry_the_file_io_timeout(self):
        limits = ParseLimits(**settings.EIDOLON_PARSE_LIMITS)
        assert limits.file_io_timeout == settings.EIDOLON_FILE_IO_TIMEOUT


@pytest.mark.django_db(transaction=True)
class TestAnalysis:
    async def test_pipe_in_the_source__recorded_on_the_analysis_and_the_rest_analysed(
        self, tmp_path, pipes
    ):
        write(tmp_path, "good.py", "def add(a, b):\n    return a + b\n")
        pipes.make(tmp_path / "stuck.py")
        analysis = await sync_to_async(analysis_create)(
            source=str(tmp_path), provider="static", allow_any_path=True
        )
        status = await run_analysis(analysis.pk)
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        assert status == AnalysisStatus.COMPLETED_WITH_ERRORS
        assert analysis.file_errors == [
            {
                "path": "stuck.py",
                "code": "special_file",
                "message": "a named pipe, not a regular file; not read",
                "line": None,
            }
        ]
        assert (analysis.functions_total, analysis.functions_analyzed) == (1, 1)
