"""A card's fingerprint: the same for the same finding on unchanged code, analysis after analysis.

Code-scanning platforms match alerts by it (SARIF ``partialFingerprints``), and a card dismissed
once stays dismissed when a later analysis finds it again. It names the file, the function, the
kind of finding, what the finding is (the static rule, or the title in a normal form) and where
it sits within the function: lines counted from the function's first, so that code added above
the function does not change it.
"""

from __future__ import annotations

import hashlib
import re

FINGERPRINT_VERSION = "v1"

_NOT_WORD = re.compile(r"[^0-9a-z]+")


def card_fingerprint(
    *,
    path: str,
    qualname: str,
    kind: str,
    rule: str,
    title: str,
    line_in_unit: int,
) -> str:
    """Hex SHA-256 of what identifies the finding; ``line_in_unit`` counts from 0 at the
    function's first line."""
    what = rule or _NOT_WORD.sub(" ", title.lower()).strip()
    material = "\x00".join(
        (FINGERPRINT_VERSION, path, qualname, kind, what, str(max(0, line_in_unit)))
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
