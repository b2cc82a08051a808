"""Change reviews: the functions a change touched, from ``git diff BASE`` to unit ids.

``BASE`` is a revision as git writes one, restricted to a branch, tag or commit SHA optionally
followed by ancestry steps (``main``, ``v1.2``, ``HEAD~1``, ``3f2a...^``); ``HEAD`` is the
analysed commit. The diff is two-point: BASE's tree against the analysed one (a clone's
commit, or a local work tree's files, uncommitted changes and untracked files included), with
renames detected, so a file moved unchanged touches nothing. A function is selected when one of
its lines (decorators included) was added or modified; a pure deletion selects the functions
around the place it was deleted from.

git runs with the clones' hardening (``analyses.git.hardened_git``) plus ``--no-ext-diff`` and
``--no-textconv``: no external diff, textconv driver, hook or fsmonitor a repository configures
is run. A local work tree's own clean filters (``filter.*`` in its ``.git/config``) may still
run when git reads a changed file: a local directory is trusted as far as the roots that
admit it (``EIDOLON_SOURCE_ROOTS``, or the terminal's user).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from analyses.git import hardened_git
from analyses.models import Analysis
from analyses.parsing import Unit
from analyses.revisions import ChangeError, parse_base
from analyses.sources import quoted

GIT_TIMEOUT_S = 60.0
CHANGED_FUNCTIONS_ONLY = "not reviewed: a change review reviews changed functions only"
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}

LineRanges = dict[str, list[tuple[int, int]]]  # path -> inclusive (first, last) new-side lines


@dataclass(frozen=True, slots=True)
class Selection:
    """What a change review reviews: the function units a diff touched."""

    base: str  # as the user wrote it
    base_sha: str
    unit_ids: frozenset[str]
    files: tuple[str, ...]  # the Python files the diff touched, relative to the analysed root

    def left_out(self, units: Iterable[Unit]) -> dict[str, str]:
        """unit id -> why it is not reviewed, for the units the diff did not select."""
        unchanged = f"unchanged since {self.base}"
        return {
            unit.id: unchanged if unit.is_function else CHANGED_FUNCTIONS_ONLY
            for unit in units
            if unit.id not in self.unit_ids
        }


# --- git ----------------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command, env = hardened_git()
    try:
        return subprocess.run(
            [*command, *args],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChangeError(
            "clone_timeout", f"git {args[0]} took over {GIT_TIMEOUT_S:g} s."
        ) from None


def resolve_base(
    root: Path, base: str, *, allowed_roots: Sequence[str | os.PathLike[str]] | None = None
) -> str:
    """The commit SHA ``base`` names in the work tree at ``root``, or ``ChangeError``. With
    ``allowed_roots``, the repository (work tree and git directory) must lie inside one."""
    inside = _git(root, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        raise ChangeError(
            "not_a_directory",
            f"diff_base (--diff) needs a git work tree, and {quoted(str(root))} is not one"
            + (f" ({_excerpt(inside.stderr)})" if b"dubious ownership" in inside.stderr else "")
            + ".",
        )
    if allowed_roots is not None:
        _refuse_outside_roots(root, allowed_roots)
    revision = str(parse_base(base))
    found = _git(
        root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"
    )
    if found.returncode != 0:
        raise ChangeError(
            "bad_ref", f"diff_base (--diff) {quoted(base)} is not a commit of this repository."
        )
    return found.stdout.decode().strip()


def _refuse_outside_roots(root: Path, allowed_roots: Sequence[str | os.PathLike[str]]) -> None:
    # git looks for the repository upwards (and follows a ".git" file): it may be elsewhere.
    places = _git(root, "rev-parse", "--show-toplevel", "--absolute-git-dir")
    roots = [Path(allowed).resolve() for allowed in allowed_roots]
    for place in places.stdout.decode("utf-8", errors="surrogateescape").splitlines():
        if not any(Path(place).resolve().is_relative_to(allowed) for allowed in roots):
            raise ChangeError(
                "outside_allowed_roots",
                "diff_base (--diff): the directory's git repository lies outside the "
                "directories that may be analysed.",
            )


def changed_lines(root: Path, *, base_sha: str, working_tree: bool) -> LineRanges:
    """Lines added or modified since ``base_sha``, per Python file under ``root`` (paths
    relative to it). ``working_tree``: compare with the files as they are (uncommitted and
    untracked ones included) rather than with ``HEAD``."""
    args = ["diff", "--unified=0", "--find-renames", "--no-color", "--no-ext-diff"]
    args += ["--no-textconv", "--relative", base_sha]
    if not working_tree:
        args.append("HEAD")
    diff = _git(root, *args, "--", "*.py")
    if diff.returncode != 0:
        raise ChangeError("clone_failed", f"git diff failed: {_excerpt(diff.stderr)}")
    ranges = parse_diff(diff.stdout.decode("utf-8", errors="surrogateescape"))
    if working_tree:
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", "*.py")
        for path in untracked.stdout.decode("utf-8", errors="surrogateescape").split("\0"):
            if path:
                ranges[path] = [(1, 10**9)]  # a new file: every line is added
    return ranges


def _excerpt(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " ".join(lines[-2:])[:300] or "no error output"


# --- the diff -----------------------------------------------------------------------------------


def parse_diff(text: str) -> LineRanges:
    """``git diff --unified=0`` output -> changed new-side line ranges per file.

    A hunk adding or modifying lines gives them; one only deleting (``+N,0``) gives lines N and
    N+1, the lines around the gap. A file deleted gives nothing; one renamed without a change
    has no hunk and is listed with no lines.
    """
    ranges: LineRanges = {}
    current: str | None = None
    in_header = False  # "+++ " is a file header before a file's first hunk, else an added line
    for line in text.split("\n"):
        if line.startswith("diff --git "):
            current, in_header = None, True
        elif not in_header and not line.startswith("@@"):
            continue
        elif line.startswith("+++ "):
            target = line[4:]
            current = None if target == "/dev/null" else _strip_prefix(_unquote(target))
            if current is not None:
                ranges.setdefault(current, [])
        elif line.startswith("rename to ") and current is None:
            ranges.setdefault(_unquote(line[len("rename to ") :]), [])
        elif current is not None and (hunk := _HUNK.match(line)):
            in_header = False
            start, count = int(hunk[1]), 1 if hunk[2] is None else int(hunk[2])
            if count:
                ranges[current].append((start, start + count - 1))
            else:
                ranges[current].append((max(1, start), start + 1))
    return ranges


def _strip_prefix(path: str) -> str:
    return path[2:] if path.startswith(("b/", "a/")) else path


def _unquote(path: str) -> str:
    """git's C-style quoting of unusual paths ("a\\tb", octal bytes) undone."""
    if not (len(path) >= 2 and path.startswith('"') and path.endswith('"')):
        return path
    body, out, index = path[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            escaped = body[index + 1]
            if escaped in _C_ESCAPES:
                out.append(_C_ESCAPES[escaped])
                index += 2
                continue
            if re.fullmatch(r"[0-7]{3}", body[index + 1 : index + 4]):
                out.append(int(body[index + 1 : index + 4], 8))
                index += 4
                continue
        out.extend(char.encode("utf-8", errors="surrogateescape"))
        index += 1
    return out.decode("utf-8", errors="surrogateescape")


def select_units(
    units: Sequence[Unit], changed: Mapping[str, Sequence[tuple[int, int]]]
) -> set[str]:
    """Ids of the function units with a changed line within their lines."""
    return {
        unit.id
        for unit in units
        if unit.is_function
        and any(
            first <= unit.end_lineno and last >= unit.lineno
            for first, last in changed.get(unit.path, ())
        )
    }


# --- the orchestrator's entry point -------------------------------------------------------------


async def selection_for(
    analysis: Analysis, *, root: Path, base_sha: str | None, units: Sequence[Unit]
) -> Selection | None:
    """What ``analysis`` reviews of ``root``, None for all of it (not a change review).
    ``base_sha``: the commit a clone fetched for the base; a local work tree resolves it."""
    base, working_tree = analysis.diff_base, analysis.source_kind == "local"
    if not base:
        return None

    def select() -> Selection:
        roots = None if analysis.allow_any_path else settings.EIDOLON_SOURCE_ROOTS
        sha = base_sha or resolve_base(root, base, allowed_roots=roots)
        changed = changed_lines(root, base_sha=sha, working_tree=working_tree)
        parsed = {unit.path for unit in units}  # not an untracked virtualenv's thousand files
        return Selection(
            base=base,
            base_sha=sha,
            unit_ids=frozenset(select_units(units, changed)),
            files=tuple(sorted(path for path in changed if path in parsed)),
        )

    return await asyncio.to_thread(select)
