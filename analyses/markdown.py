"""Model-written card text (titles, explanations, fixes) as safe HTML: the text is escaped first,
then a tiny allow-list of Markdown is turned into tags: `code`, **bold**, *emphasis* and links to
http(s) addresses only (rel="noopener noreferrer nofollow"). Anything else stays visible text; no
raw HTML ever passes through.
"""

from __future__ import annotations

import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

_CODE = re.compile(r"`([^`\n]+)`")
# On escaped text: an address has no spaces, quotes or angle brackets left to break out with.
_LINK = re.compile(r"\[([^\[\]\n]+)\]\((https?://[^\s()]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EMPHASIS = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")


def _inline(escaped: str) -> str:
    escaped = _LINK.sub(
        r'<a href="\2" rel="noopener noreferrer nofollow" target="_blank">\1</a>', escaped
    )
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _EMPHASIS.sub(r"<em>\1</em>", escaped)


def render_markdown(text: str, *, block: bool = False) -> SafeString:
    """``text`` as HTML; code spans are kept literally. With ``block``, blank lines separate
    paragraphs and single newlines become line breaks."""
    parts = _CODE.split(text)
    # split() alternates: text outside code spans (even indices), code span contents (odd).
    html = "".join(
        f"<code>{escape(part)}</code>" if index % 2 else _inline(escape(part))
        for index, part in enumerate(parts)
    )
    if block:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", html) if p.strip()]
        html = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return mark_safe(html)  # noqa: S308 (escaped above; only our own tags added)
