"""A change review's base, checked by syntax: a branch, tag or commit SHA, then ``~N``/``^N``
ancestry steps (``main``, ``HEAD~1``, ``v1.2^``). Nothing here runs git (``analyses.changes``
and ``analyses.git`` do)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyses.sources import SourceError, quoted, validate_ref

MAX_ANCESTRY_STEPS = 1000
MAX_BASE_LENGTH = 255
_ANCESTRY = re.compile(r"(?:~\d*|\^\d?)+$")


class ChangeError(SourceError):
    """The change review cannot be made as asked (the field is ``diff_base``)."""


@dataclass(frozen=True, slots=True)
class Revision:
    """A checked ``BASE``: ``name`` (a ref or SHA) and its ancestry ``suffix`` (``~2``)."""

    name: str
    suffix: str

    @property
    def depth(self) -> int:
        """Commits of ``name``'s history a shallow fetch needs for the suffix to resolve."""
        return 1 + _steps(self.suffix)

    def __str__(self) -> str:
        return f"{self.name}{self.suffix}"


def parse_base(base: str) -> Revision:
    """``base`` checked by syntax (a ref or SHA, then ``~N``/``^N`` steps), or ``ChangeError``."""
    if base.startswith("-"):
        raise ChangeError("option_injection", "diff_base (--diff) cannot start with '-'.")
    if len(base) > MAX_BASE_LENGTH:
        raise ChangeError("bad_ref", f"diff_base (--diff) is longer than {MAX_BASE_LENGTH}.")
    found = _ANCESTRY.search(base)
    name, suffix = (base[: found.start()], found.group()) if found else (base, "")
    try:
        name = validate_ref(name)
    except SourceError:
        raise ChangeError(
            "bad_ref",
            f"diff_base (--diff) {quoted(base)} is not a branch, tag or commit SHA "
            "(optionally followed by ~N or ^).",
        ) from None
    if _steps(suffix) > MAX_ANCESTRY_STEPS:
        raise ChangeError(
            "bad_ref", f"diff_base (--diff) goes back more than {MAX_ANCESTRY_STEPS} commits."
        )
    return Revision(name=name, suffix=suffix)


def _steps(suffix: str) -> int:
    steps = 0
    for part in re.findall(r"~\d*|\^\d?", suffix):
        steps += int(part[1:] or 1) if part.startswith("~") else 1
    return steps
