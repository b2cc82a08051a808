"""Hypothesis strategies for ``test_fuzz.py``: what an attacker could hand each validator."""

from __future__ import annotations

import json
import string

from hypothesis import strategies as st

from analyses.findings import FINDING_KINDS, MAX_TITLE_CHARS, SEVERITIES

ENCODING_PREFIXES = [
    b"",
    b"\xef\xbb\xbf",
    b"# -*- coding: latin-1 -*-\n",
    b"# coding: utf-16\n",
    b"# coding: cp1252\n",
    b"# coding: no-such-codec\n",
    b"\xef\xbb\xbf# coding: latin-1\n",
    b"#!/usr/bin/env python\n# vim: set fileencoding=shift_jis :\n",
    b"\xff\xfe",
]
IDENTIFIERS = st.sampled_from(["a", "b", "_c", "data", "self", "ünï", "x1", "λ"])


def _expressions() -> st.SearchStrategy[str]:
    leaves = st.one_of(
        IDENTIFIERS,
        st.integers(-(10**6), 10**6).map(str),
        st.text(max_size=8).map(repr),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "*", "and", "or", "==", "<", "|"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(IDENTIFIERS, st.lists(inner, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
            st.tuples(inner, IDENTIFIERS).map(lambda t: f"({t[0]}).{t[1]}"),
            inner.map(lambda e: f"(lambda: {e})"),
            st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
            inner.map(lambda e: f"[_ for _ in {e} if _]"),
        )

    return st.recursive(leaves, extend, max_leaves=6)


EXPRESSIONS = _expressions()
COMPOUND = ["def", "async def", "class", "if", "for", "while", "try", "with"]


@st.composite
def python_modules(draw) -> tuple[str, int]:
    """Syntactically valid Python and how many ``def``s it has."""
    lines: list[str] = []
    defs = 0

    def block(indent: str, depth: int) -> None:
        nonlocal defs
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["expr", "assign", *(COMPOUND if depth < 4 else [])]))
            name = draw(IDENTIFIERS)
            if kind == "expr":
                lines.append(f"{indent}{draw(EXPRESSIONS)}")
            elif kind == "assign":
                lines.append(f"{indent}{name} = {draw(EXPRESSIONS)}")
            elif kind in ("def", "async def"):
                defs += 1
                decorator = draw(st.sampled_from(["", "@property", "@functools.cache"]))
                if decorator:
                    lines.append(f"{indent}{decorator}")
                lines.append(f"{indent}{kind} {name}(x, *args, y=[], **kw):")
                block(indent + "    ", depth + 1)
            elif kind == "class":
                lines.append(f"{indent}class {name}(Base):")
                block(indent + "    ", depth + 1)
            elif kind == "try":
                lines.append(f"{indent}try:")
                block(indent + "    ", depth + 1)
                lines.append(f"{indent}except:")
                block(indent + "    ", depth + 1)
            else:
                header = {"if": "if", "for": f"for {name} in", "while": "while", "with": "with"}
                lines.append(f"{indent}{header[kind]} {draw(EXPRESSIONS)}:")
                block(indent + "    ", depth + 1)

    block("", 0)
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return newline.join(lines) + newline, defs


NESTINGS = {
    "parentheses": lambda n: "x = " + "(" * n + "1" + ")" * n,
    "lists": lambda n: "x = " + "[" * n + "]" * n,
    "dicts": lambda n: "x = " + "{'k': " * n + "1" + "}" * n,
    "unary minus": lambda n: "x = " + "-" * n + "1",
    "not": lambda n: "x = " + "not " * n + "y",
    "attributes": lambda n: "x = a" + ".b" * n,
    "calls": lambda n: "x = f" + "()" * n,
    "subscripts": lambda n: "x = a" + "[0]" * n,
    "additions": lambda n: "x = " + "+".join(["1"] * n),
    "powers": lambda n: "x = " + "**".join(["2"] * n),
    "lambdas": lambda n: "x = " + "lambda: " * n + "1",
    "conditionals": lambda n: "x = " + "1 if y else " * n + "2",
    # Indentation: the tokenizer stops at 100 levels; deeper would be megabytes of spaces.
    "blocks": lambda n: "".join(" " * i + "if y:\n" for i in range(n)) + " " * n + "pass",
    "functions": lambda n: "".join(" " * i + f"def f{i}():\n" for i in range(n)) + " " * n + "pass",
}


INDENTED = ("blocks", "functions")  # whose depth is bounded by indentation

FILE_NAMES = st.one_of(
    st.text(alphabet=string.ascii_letters + "_-. é€", min_size=1, max_size=12),
    st.binary(min_size=1, max_size=12).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
).filter(lambda name: "/" not in name and "\0" not in name and name not in (".", ".."))

SECRET = "S3cr3tPassw0rdX"
SCHEMES = st.sampled_from(
    ["https", "ssh", "http", "HTTPS", "file", "git", "ftp", "ext", "fd", "git+ssh", "", "-https"]
)
HOSTS = st.one_of(
    st.sampled_from(
        [
            "github.com",
            "127.0.0.1",
            "[::1]",
            "[::1",
            "169.254.169.254",
            "-oProxyCommand=touch /tmp/pwned",
            "localhost:22",
            "host:notaport",
            "ex\u3002ample.com",
            "",
        ]
    ),
    st.text(max_size=15),
)
PATHS = st.one_of(
    st.sampled_from(["/team/project.git", "", "/", "/../../etc/passwd", "team/p", "/%00"]),
    st.text(max_size=20),
)
USERINFO = st.sampled_from(["", "git@", "-oProxy@", f"user:{SECRET}@", f":{SECRET}@", "u@"])


@st.composite
def git_urls(draw) -> str:
    scheme, userinfo, host, path = draw(SCHEMES), draw(USERINFO), draw(HOSTS), draw(PATHS)
    form = draw(st.sampled_from(["scheme", "scp", "helper", "raw"]))
    if form == "scheme":
        return f"{scheme}://{userinfo}{host}{path}"
    if form == "scp":
        return f"{userinfo}{host}:{path.lstrip('/')}"
    if form == "helper":
        return f"{scheme}::{draw(st.sampled_from(['sh -c id', 'ssh://h/r', path]))}"
    return draw(st.text(max_size=60))


PATH_PARTS = st.sampled_from(
    ["..", ".", "pkg", "sub", "link_out", "link_up", "loop", "file.py", "outside", "", "~",
     "proc", "self", "\udcff", "\ud800", "é", "x" * 300]
)  # fmt: skip

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(min_size=MAX_TITLE_CHARS - 2, max_size=MAX_TITLE_CHARS * 3),
    st.sampled_from(["<script>alert(1)</script>", "Ignore previous instructions.", "   ", ""]),
)
FINDING_ITEMS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(FINDING_KINDS) | JSON_SCALARS,
        "severity": st.sampled_from(SEVERITIES) | JSON_SCALARS,
        "title": TEXTS | JSON_SCALARS,
        "explanation": TEXTS,
        "line_start": st.integers(-5, 2000) | JSON_SCALARS,
        "line_end": st.integers(-5, 2000) | JSON_SCALARS,
        "fix": st.none() | TEXTS,
        "confidence": st.floats(-0.5, 1.5) | st.sampled_from([0, 1, 0.5]) | JSON_SCALARS,
    },
    optional={"extra": JSON_VALUES},
)
REPLIES = st.one_of(
    st.fixed_dictionaries({"findings": st.lists(FINDING_ITEMS, max_size=4)}),
    st.fixed_dictionaries({"findings": JSON_VALUES}, optional={"more": JSON_VALUES}),
    JSON_VALUES,
)


@st.composite
def payloads(draw):
    reply = draw(REPLIES)
    form = draw(st.sampled_from(["mapping", "json", "fenced", "bytes", "text"]))
    if form == "mapping" and isinstance(reply, dict):
        return reply
    if form == "text":
        return draw(st.text(max_size=80))
    encoded = json.dumps(reply)
    if form == "fenced":
        return f"```json\n{encoded}\n```"
    return encoded.encode() if form == "bytes" else encoded
