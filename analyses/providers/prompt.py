"""What Eidolon asks the model: the system prompt (kinds and severities of finding, the rules),
the user message for one unit (a header line, the numbered source, capped context), and whether
the shared prefix is long enough to mark for the API's prompt cache."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from analyses.findings import FINDINGS_JSON_SCHEMA, MAX_TITLE_CHARS, FindingKind, Severity
from analyses.parsing import ContextSnippet, Unit, module_name

PROMPT_VERSION = "review-v1"  # bump whenever SYSTEM_PROMPT or the user message layout changes
MAX_CONTEXT_PER_ROLE = 3
# The API's minimum cacheable prefix, in tokens, when EIDOLON_AI_PROMPT_CACHE_MIN_TOKENS is 0.
_MIN_CACHEABLE_TOKENS = 1024
_MIN_CACHEABLE_TOKENS_HAIKU = 2048

_KIND_MEANINGS: dict[FindingKind, str] = {
    "bug": "wrong behaviour for some input or state: a wrong condition, an off-by-one, an "
    "unhandled None or empty case, a crash",
    "risk": "correct today but fragile: races, swallowed errors, hidden coupling, surprising "
    "side effects, resources not released",
    "security": "injection, unsafe deserialisation or eval, path traversal, secrets in code, "
    "untrusted input used without validation",
    "performance": "needless quadratic work, repeated I/O or queries in a loop, unbounded memory",
    "smell": "hard to read or change: too long, too deeply nested, duplicated, misleading names",
    "docs": "a public function whose docstring is missing, wrong or out of date",
    "test": "behaviour that is hard to test as written, or an edge case that clearly needs a test",
}
_SEVERITY_MEANINGS: dict[Severity, str] = {
    "high": "causes wrong results, data loss, a crash or a vulnerability in normal use",
    "medium": "bites under plausible conditions, or makes the code markedly harder to maintain",
    "low": "a minor improvement",
}

SYSTEM_PROMPT = f"""\
You are an expert Python reviewer. You review one function at a time and report only problems \
worth a maintainer's time. An empty list of findings is the right answer for sound code: never \
invent problems to fill the list, and report each problem once.

Kinds of finding:
{chr(10).join(f"- {kind}: {meaning}." for kind, meaning in _KIND_MEANINGS.items())}

Severities:
{chr(10).join(f"- {severity}: {meaning}." for severity, meaning in _SEVERITY_MEANINGS.items())}

Rules:
- The header line gives the function's file and line range. line_start and line_end are absolute \
line numbers in that file, as printed in the left margin of the source, and must lie within the \
function's range.
- title: one line of at most {MAX_TITLE_CHARS} characters. explanation: what is wrong, why it \
matters and when it bites.
- fix: replacement code for the affected lines only, or null when there is no short fix.
- confidence: from 0.0 to 1.0, how sure you are that the problem is real.
- Callers and callees are shown only to help you understand the function. Report problems in \
the function under review only.
- Answer with only a JSON object that matches the given schema, {{"findings": [...]}}: no prose, \
no Markdown."""


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix the API caches for ``model``, as its prompt-caching docs give it."""
    return _MIN_CACHEABLE_TOKENS_HAIKU if "haiku" in model else _MIN_CACHEABLE_TOKENS


def shared_prefix_tokens(system_prompt: str) -> int:
    """Tokens of what every review request starts with: the system prompt and the schema."""
    return math.ceil((len(system_prompt) + len(json.dumps(FINDINGS_JSON_SCHEMA))) / 4)


def system_parameter(system_prompt: str, *, min_tokens: int) -> str | list[dict[str, Any]]:
    """The ``system`` parameter: the prompt as one text block marked for the prompt cache when
    it (with the schema) is long enough for the API to cache it, else the plain prompt."""
    if shared_prefix_tokens(system_prompt) < min_tokens:
        return system_prompt
    return [{"type": "text", "text": system_prompt, "cache_control": {"type": "ephemeral"}}]


def review_prompt(unit: Unit, *, context: Sequence[ContextSnippet] = ()) -> str:
    """The user message for ``unit``: a header line, the numbered source, then the context."""
    parts = [
        function_header(unit),
        "",
        "<function>",
        _numbered(unit.source, first_line=unit.lineno),
        "</function>",
    ]
    snippets = _capped(context)
    if snippets:
        parts += ["", "Context, to understand the function (do not review it):"]
        parts += [_snippet_block(snippet) for snippet in snippets]
    return "\n".join(parts)


def function_header(unit: Unit) -> str:
    """``Function: pkg.mod.Class.method (pkg/mod.py, lines 12-40)``: one line, machine-readable."""
    name = _dotted_name(path=unit.path, qualname=unit.qualname)
    return f"Function: {name} ({unit.path}, lines {unit.lineno}-{unit.end_lineno})"


def _numbered(source: str, *, first_line: int) -> str:
    lines = source.rstrip("\n").split("\n")
    width = len(str(first_line + len(lines) - 1))
    return "\n".join(
        f"{number:>{width}} | {line}" for number, line in enumerate(lines, start=first_line)
    )


def _capped(context: Sequence[ContextSnippet]) -> list[ContextSnippet]:
    """The first ``MAX_CONTEXT_PER_ROLE`` callees and callers, in their given order."""
    kept: list[ContextSnippet] = []
    per_role: dict[str, int] = {}
    for snippet in context:
        per_role[snippet.role] = per_role.get(snippet.role, 0) + 1
        if per_role[snippet.role] <= MAX_CONTEXT_PER_ROLE:
            kept.append(snippet)
    return kept


def _snippet_block(snippet: ContextSnippet) -> str:
    name = _dotted_name(path=snippet.path, qualname=snippet.qualname)
    opening = (
        f'<{snippet.role} name="{name}" path="{snippet.path}" '
        f'lines="{snippet.lineno}-{snippet.end_lineno}">'
    )
    return f"{opening}\n{snippet.source.rstrip()}\n</{snippet.role}>"


def _dotted_name(*, path: str, qualname: str) -> str:
    """``pkg/mod.py`` + ``Class.method`` -> ``pkg.mod.Class.method``."""
    return f"{module_name(path)}.{qualname}"


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of blocks."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or () if isinstance(block, Mapping))
