"""analyses.parsing: units, metrics, limits, bad input, file discovery and the call graph."""

from __future__ import annotations

import ast
import hashlib
import textwrap
from pathlib import Path

import django
import pytest

from analyses.parsing import (
    FUNCTION_KINDS,
    ParseLimits,
    ParseResult,
    Unit,
    build_call_graph,
    content_hash,
    context_for,
    context_hash,
    iter_python_files,
    parse_module,
    parse_tree,
)

DJANGO_ROOT = Path(django.__file__).parent


def units_of(source: str, *, path: str = "pkg/mod.py", **limits: int) -> dict[str, Unit]:
    units, errors = parse_module(textwrap.dedent(source), path=path, limits=ParseLimits(**limits))
    assert errors == []
    return {unit.qualname: unit for unit in units}


def only_function(source: str) -> Unit:
    functions = [unit for unit in units_of(source).values() if unit.kind in FUNCTION_KINDS]
    assert len(functions) == 1
    return functions[0]


def write(root: Path, relative: str, content: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


class TestUnits:
    def test_qualnames__follow_python_qualname_rules(self):
        units = units_of(
            """
            def outer():
                def inner():
                    class Local:
                        def method(self): ...
            class Shop:
                async def open(self): ...
                class Till:
                    def ring(self): ...
            async def fetch(): ...
            """
        )
        assert set(units) == {
            "pkg.mod",
            "outer",
            "outer.<locals>.inner",
            "outer.<locals>.inner.<locals>.Local",
            "outer.<locals>.inner.<locals>.Local.method",
            "Shop",
            "Shop.open",
            "Shop.Till",
            "Shop.Till.ring",
            "fetch",
        }

    def test_kinds__methods_async_and_nested(self):
        units = units_of(
            """
            def outer():
                async def helper(): ...
            class Shop:
                if True:
                    def conditional(self): ...
                async def open(self): ...
            async def fetch(): ...
            """
        )
        kinds = {qualname: (unit.kind, unit.is_async) for qualname, unit in units.items()}
        assert kinds == {
            "pkg.mod": ("module", False),
            "outer": ("function", False),
            "outer.<locals>.helper": ("async_function", True),
            "Shop": ("class", False),
            "Shop.conditional": ("method", False),
            "Shop.open": ("method", True),
            "fetch": ("async_function", True),
        }

    def test_parents__qualname_and_id_of_the_enclosing_unit(self):
        units = units_of(
            """
            class Shop:
                def open(self):
                    def log(): ...
            """
        )
        assert units["Shop"].parent == "pkg.mod"
        assert units["Shop"].parent_id == "pkg/mod.py"
        assert units["Shop.open"].parent_id == "pkg/mod.py::Shop"
        assert units["Shop.open.<locals>.log"].parent == "Shop.open"
        assert units["pkg.mod"].parent is None

    def test_module_qualname__derived_from_path(self):
        units, _ = parse_module("x = 1\n", path="pkg/sub/__init__.py")
        top, _ = parse_module("x = 1\n", path="setup.py")
        assert units[0].qualname == "pkg.sub"
        assert top[0].qualname == "setup"

    def test_ids__repeated_qualnames_are_numbered_in_source_order(self):
        units, _ = parse_module(
            textwrap.dedent(
                """
                class C:
                    @property
                    def name(self): ...
                    @name.setter
                    def name(self, value): ...
                """
            ),
            path="m.py",
        )
        assert [unit.id for unit in units] == ["m.py", "m.py::C", "m.py::C.name", "m.py::C.name#2"]

    def test_line_range_and_source__start_at_first_decorator(self):
        source = "import functools\n\n@functools.cache\n@other\ndef f(x):\n    return x\n\ny = 1\n"
        unit = units_of(source)["f"]
        assert (unit.lineno, unit.end_lineno, unit.line_count) == (3, 6, 4)
        assert unit.source == "@functools.cache\n@other\ndef f(x):\n    return x\n"
        assert unit.decorators == ("functools.cache", "other")

    def test_module_unit__whole_file_and_docstring(self):
        units = units_of('"""Tools."""\nx = 1\n')
        module = units["pkg.mod"]
        assert (module.kind, module.lineno, module.end_lineno) == ("module", 1, 2)
        assert module.source == '"""Tools."""\nx = 1\n'
        assert module.docstring == "Tools."

    def test_content_hash__sha256_of_source_ignoring_line_endings(self):
        unix = units_of("def f():\n    return 1\n")["f"]
        windows, _ = parse_module(b"def f():\r\n    return 1\r\n", path="pkg/mod.py")
        assert unix.content_hash == hashlib.sha256(unix.source.encode()).hexdigest()
        assert windows[1].content_hash == unix.content_hash
        assert content_hash("def f():\r\n    return 1\r\n") == unix.content_hash

    def test_arguments__kinds_and_defaults(self):
        unit = only_function("def f(a, /, b, c=1, *args, d, e=2, **kwargs): ...")
        described = [(arg.name, arg.kind, arg.has_default) for arg in unit.arguments]
        assert described == [
            ("a", "posonly", False),
            ("b", "regular", False),
            ("c", "regular", True),
            ("args", "vararg", False),
            ("d", "kwonly", False),
            ("e", "kwonly", True),
            ("kwargs", "kwarg", False),
        ]

    def test_arguments__mutable_defaults_recorded_with_their_line(self):
        unit = only_function(
            """
            def f(a=[], b={}, c=set(),
                  d=collections.defaultdict(list), e=(), f=None, *, g=dict(), h="x"):
                ...
            """
        )
        mutable = {arg.name: arg.mutable_default_line for arg in unit.arguments}
        assert mutable == {
            "a": 2, "b": 2, "c": 2, "d": 3, "e": None, "f": None, "g": 3, "h": None
        }  # fmt: skip

    def test_calls__dotted_names_as_written_in_order_without_repeats(self):
        unit = only_function(
            """
            def f(self):
                self.save()
                result = helper(os.path.join("a", "b"))
                helper()
                get_factory()().run()
                return [transform(x) for x in items if check(x)]
            """
        )
        assert unit.calls == (
            "self.save", "helper", "os.path.join", "get_factory", "transform", "check"
        )  # fmt: skip

    def test_calls__nested_function_calls_belong_to_the_nested_unit(self):
        units = units_of(
            """
            @register(name=make_name())
            def outer(x=default_factory()):
                def inner():
                    return deep()
                return shallow(inner)
            """
        )
        assert units["outer.<locals>.inner"].calls == ("deep",)
        assert units["outer"].calls == ("shallow",)
        assert units["pkg.mod"].calls == ("register", "make_name", "default_factory")

    def test_docstring__cleaned_or_none(self):
        units = units_of(
            '''
            def documented():
                """First line.

                Detail.
                """
            def bare():
                return "not a docstring"
            '''
        )
        assert units["documented"].docstring == "First line.\n\nDetail."
        assert units["bare"].docstring is None

    def test_is_public__underscores_dunders_and_locals(self):
        units = units_of(
            """
            def api(): ...
            def _helper(): ...
            class Model:
                def __init__(self): ...
                def __secret(self): ...
                def _private(self): ...
            class _Hidden:
                def method(self): ...
            def outer():
                def inner(): ...
            """
        )
        public = {qualname for qualname, unit in units.items() if unit.is_public}
        assert public == {"pkg.mod", "api", "Model", "Model.__init__", "outer"}
        private_module, _ = parse_module("x = 1\n", path="pkg/_internal.py")
        assert private_module[0].is_public is False

    def test_method_count__direct_methods_only(self):
        units = units_of(
            """
            class Big:
                def a(self): ...
                async def b(self): ...
                if True:
                    def c(self): ...
                class Nested:
                    def d(self): ...
                def e(self):
                    def not_a_method(): ...
            """
        )
        assert units["Big"].method_count == 4
        assert units["Big.Nested"].method_count == 1

    def test_bare_except_lines__recorded_on_the_owning_unit(self):
        units = units_of(
            """
            def f():
                try:
                    pass
                except:
                    pass
                try:
                    pass
                except ValueError:
                    pass
                except:
                    pass
            """
        )
        assert units["f"].bare_except_lines == (5, 11)
        assert units["pkg.mod"].bare_except_lines == ()

    def test_lambdas__are_not_units(self):
        units = units_of("square = lambda x: x * x\ndef f():\n    return lambda: g()\n")
        assert set(units) == {"pkg.mod", "f"}
        assert units["f"].calls == ("g",)

    def test_encoding__pep263_cookie_and_bom_are_honoured(self):
        latin1 = "# -*- coding: latin-1 -*-\ndef café():\n    return 'é'\n".encode("latin-1")
        with_bom = b"\xef\xbb\xbfdef f():\n    return 1\n"
        latin_units, latin_errors = parse_module(latin1, path="a.py")
        bom_units, bom_errors = parse_module(with_bom, path="b.py")
        assert latin_errors == bom_errors == []
        assert latin_units[1].qualname == "café"
        assert "'é'" in latin_units[1].source
        assert bom_units[1].source == "def f():\n    return 1\n"

    def test_decorators__non_ascii_source_text_is_sliced_by_characters(self):
        unit = units_of("@route('/café', name='ü')\ndef view(): ...\n")["view"]
        assert unit.decorators == ("route('/café', name='ü')",)


class TestComplexity:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param("return 1", 1, id="straight-line"),
            pytest.param("if a:\n    pass\nelif b:\n    pass\nelse:\n    pass", 3, id="if-elif"),
            pytest.param("for x in a:\n    pass\nwhile b:\n    break", 3, id="for-while"),
            pytest.param("async for x in a:\n    pass", 2, id="async-for"),
            pytest.param(
                "try:\n    pass\nexcept A:\n    pass\nexcept B:\n    pass\nfinally:\n    pass",
                3,
                id="two-excepts",
            ),
            pytest.param("return a and b and c", 3, id="boolop-three-values"),
            pytest.param("return a and b or c", 3, id="nested-boolops"),
            pytest.param(
                "return [x for x in y if x] or (a if b else c)", 2, id="no-ifexp-or-comp-if"
            ),
            pytest.param(
                "with a:\n    pass\nmatch x:\n    case 1:\n        pass", 1, id="with-match"
            ),
            pytest.param("f = lambda: a or b", 2, id="lambda-counts-for-enclosing"),
        ],
    )
    def test_complexity__original_eidolon_count(self, body, expected):
        source = "async def f():\n" + textwrap.indent(body, "    ") + "\n"
        assert only_function(source).complexity == expected

    def test_complexity__nested_functions_and_classes_count_separately(self):
        units = units_of(
            """
            def outer():
                if a:
                    pass
                def inner():
                    if b or c:
                        pass
                class Local:
                    if d:
                        pass
            """
        )
        assert units["outer"].complexity == 2
        assert units["outer.<locals>.inner"].complexity == 3
        assert units["outer.<locals>.Local"].complexity == 2

    def test_complexity__module_and_class_bodies_count_their_own_statements(self):
        units = units_of("if a:\n    pass\nclass C:\n    for x in y:\n        pass\n")
        assert units["pkg.mod"].complexity == 2
        assert units["C"].complexity == 2


class TestNestingDepth:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param("return 1", 0, id="flat"),
            pytest.param(
                "if a:\n    for x in y:\n        while b:\n            pass", 3, id="three"
            ),
            pytest.param(
                "if a:\n    pass\nelif b:\n    pass\nelif c:\n    if d:\n        pass",
                2,
                id="elif-chain-is-flat",
            ),
            pytest.param("try:\n    with a:\n        pass\nexcept E:\n    pass", 2, id="try-with"),
        ],
    )
    def test_nesting_depth__deepest_block_in_own_body(self, body, expected):
        source = "def f():\n" + textwrap.indent(body, "    ") + "\n"
        assert only_function(source).nesting_depth == expected


class TestLimits:
    def test_limits__defaults_are_the_original_numbers(self):
        assert ParseLimits() == ParseLimits(
            max_file_bytes=10 * 1024 * 1024,
            max_modules=1000,
            max_functions_per_module=500,
            max_function_lines=1000,
            max_nesting_depth=100,
        )

    def test_limits__must_be_positive(self):
        with pytest.raises(ValueError, match="max_modules"):
            ParseLimits(max_modules=0)

    def test_functions_per_module__first_ones_kept_and_error_recorded(self):
        source = "".join(f"def f{index}():\n    def inner(): ...\n" for index in range(3))
        units, errors = parse_module(
            source, path="many.py", limits=ParseLimits(max_functions_per_module=3)
        )
        assert [unit.qualname for unit in units] == [
            "many", "f0", "f0.<locals>.inner", "f1"
        ]  # fmt: skip
        assert [(error.code, error.path) for error in errors] == [("too_many_functions", "many.py")]
        assert "6 functions" in errors[0].message

    def test_function_lines__long_function_kept_and_marked_too_long(self):
        source = (
            "class C:\n    def long(self):\n" + "        x = 1\n" * 5 + "def short():\n    pass\n"
        )
        units = {
            unit.qualname: unit
            for unit in parse_module(source, path="m.py", limits=ParseLimits(max_function_lines=4))[
                0
            ]
        }
        assert units["C.long"].too_long is True
        assert units["short"].too_long is False
        assert units["C"].too_long is False

    def test_nesting__deeper_than_limit_is_an_error_for_the_file(self):
        source = "def f():\n    if a:\n        for x in y:\n            pass\n"
        units, errors = parse_module(
            source, path="deep.py", limits=ParseLimits(max_nesting_depth=2)
        )
        assert units == []
        assert [(error.code, error.line) for error in errors] == [("too_deep", 3)]

    def test_nesting__at_the_limit_is_fine(self):
        source = "def f():\n    if a:\n        pass\n"
        units, errors = parse_module(source, path="ok.py", limits=ParseLimits(max_nesting_depth=2))
        assert errors == []
        assert len(units) == 2

    def test_modules__beyond_limit_skipped_with_one_error(self, tmp_path):
        for index in range(5):
            write(tmp_path, f"m{index}.py", "x = 1\n")
        result = parse_tree(tmp_path, limits=ParseLimits(max_modules=2))
        assert [unit.path for unit in result.units] == ["m0.py", "m1.py"]
        assert [error.code for error in result.errors] == ["too_many_modules"]
        assert "last 3" in result.errors[0].message
        assert (result.files_seen, result.files_parsed) == (5, 2)


class TestBadInput:
    """Every bad file becomes one error with a reason code; the good file beside it still parses."""

    @pytest.mark.parametrize(
        ("name", "content", "code", "line"),
        [
            pytest.param("syntax.py", "x = 1\ndef broken(:\n", "syntax_error", 2, id="syntax"),
            pytest.param("nul.py", b"x = 1\ny = '\x00'\n", "null_bytes", 2, id="null-bytes"),
            pytest.param(
                "image.py",
                b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
                "binary",
                None,
                id="binary",
            ),
            pytest.param("latin.py", b"x = 1\ny = '\xe9t\xe9'\n", "not_utf8", 2, id="not-utf8"),
            pytest.param("first.py", b"s = '\xff'\n", "not_utf8", None, id="not-utf8-first-line"),
            pytest.param(
                "cookie.py", b"# coding: klingon\nx = 1\n", "bad_encoding", None, id="bad-cookie"
            ),
            pytest.param(
                "parens.py", "x = " + "(" * 5000 + ")" * 5000 + "\n", "too_deep", 1, id="parens"
            ),
            pytest.param(
                "chain.py", "x = a" + ".a" * 100_000 + "\n", "too_deep", None, id="recursion"
            ),
            pytest.param("unary.py", "x = " + "-" * 100_000 + "1\n", "too_deep", None, id="memory"),
            pytest.param(
                "indent.py",
                "".join(" " * level + "if x:\n" for level in range(101)) + " " * 101 + "pass\n",
                "too_deep",
                None,
                id="indentation",
            ),
        ],
    )
    def test_bad_file__reported_and_others_still_parse(self, tmp_path, name, content, code, line):
        write(tmp_path, "good.py", "def ok():\n    return 1\n")
        write(tmp_path, name, content)
        result = parse_tree(tmp_path)
        assert [(error.path, error.code) for error in result.errors] == [(name, code)]
        assert result.errors[0].message
        if line is not None:
            assert result.errors[0].line == line
        assert [unit.qualname for unit in result.units] == ["good", "ok"]
        assert (result.files_seen, result.files_parsed) == (2, 1)

    def test_too_large__skipped_without_reading(self, tmp_path):
        write(tmp_path, "good.py", "x = 1\n")
        with (tmp_path / "huge.py").open("wb") as handle:
            handle.truncate(20 * 1024 * 1024)
        result = parse_tree(tmp_path)
        assert [(error.path, error.code) for error in result.errors] == [("huge.py", "too_large")]
        assert "20,971,520 bytes" in result.errors[0].message
        assert [unit.path for unit in result.units] == ["good.py"]

    def test_syntax_error__message_names_line_and_column(self):
        units, errors = parse_module("def f(:\n    pass\n", path="bad.py")
        assert units == []
        assert errors[0].code == "syntax_error"
        assert "line 1, column 7" in errors[0].message


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


@pytest.fixture(scope="module")
def django_parsed() -> ParseResult:
    return parse_tree(DJANGO_ROOT)


class TestDjangoTree:
    """The walker must find every def that ``ast.walk`` finds, over a real, large codebase."""

    def test_function_units__equal_an_independent_ast_walk_count(self, django_parsed):
        # Our own discovery (rglob), not iter_python_files, so the check stays independent.
        # Limits: Django has fewer than 1,000 modules and no module with 500 functions today;
        # should that change, the expected count is capped the same way parse_tree caps it.
        limits = ParseLimits()
        files = sorted(
            (path for path in DJANGO_ROOT.rglob("*.py") if "__pycache__" not in path.parts),
            key=lambda path: path.relative_to(DJANGO_ROOT).parts,
        )[: limits.max_modules]
        expected = 0
        for path in files:
            tree = ast.parse(path.read_bytes())
            defs = sum(
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree)
            )
            expected += min(defs, limits.max_functions_per_module)
        found = sum(unit.kind in FUNCTION_KINDS for unit in django_parsed.units)
        assert found == expected > 5000
        assert django_parsed.errors == []
        assert django_parsed.files_parsed == django_parsed.files_seen == len(files)

    def test_ids__unique_across_the_tree(self, django_parsed):
        ids = [unit.id for unit in django_parsed.units]
        assert len(ids) == len(set(ids))


def tree_units(tmp_path: Path, files: dict[str, str]) -> dict[str, Unit]:
    for relative, content in files.items():
        write(tmp_path, relative, content)
    return {unit.id: unit for unit in parse_tree(tmp_path).units}


class TestCallGraph:
    def test_self_call__resolves_to_the_callers_class_first(self, tmp_path):
        units = tree_units(
            tmp_path,
            {
                "a.py": "class A:\n    def save(self): ...\n",
                "b.py": (
                    "class B:\n    def run(self):\n        self.save()\n    def save(self): ...\n"
                ),
            },
        )
        graph = build_call_graph(units.values())
        assert graph["b.py::B.run"].callees == ("b.py::B.save",)
        assert graph["b.py::B.save"].callers == ("b.py::B.run",)
        assert graph["a.py::A.save"].callers == ()

    def test_bare_call__prefers_nested_helper_then_same_module_and_ignores_methods(self, tmp_path):
        units = tree_units(
            tmp_path,
            {
                "a.py": "def helper(): ...\ndef other(): ...\n",
                "b.py": textwrap.dedent(
                    """
                    class K:
                        def helper(self): ...
                        def other(self): ...
                    def other(): ...
                    def main():
                        def helper(): ...
                        helper()
                        other()
                    """
                ),
            },
        )
        graph = build_call_graph(units.values())
        assert graph["b.py::main"].callees == ("b.py::main.<locals>.helper", "b.py::other")

    def test_dotted_call__prefers_a_module_with_that_name(self, tmp_path):
        units = tree_units(
            tmp_path,
            {
                "app/utils.py": "def slugify(text): ...\n",
                "app/other.py": "def slugify(text): ...\n",
                "app/views.py": "from app import utils\ndef view():\n    utils.slugify('x')\n",
            },
        )
        graph = build_call_graph(units.values())
        assert graph["app/views.py::view"].callees == ("app/utils.py::slugify",)

    def test_unresolved_and_recursive_calls__are_dropped(self, tmp_path):
        units = tree_units(
            tmp_path, {"a.py": "def walk(n):\n    print(n)\n    return walk(n - 1)\n"}
        )
        graph = build_call_graph(units.values())
        assert graph["a.py::walk"].callees == ()
        assert graph["a.py::walk"].callers == ()

    def test_ambiguous_call__resolved_deterministically_to_lowest_path(self, tmp_path):
        units = tree_units(
            tmp_path,
            {
                "z.py": "def target(): ...\n",
                "y.py": "def target(): ...\n",
                "x.py": "def caller():\n    target()\n",
            },
        )
        graph = build_call_graph(reversed(list(units.values())))
        assert graph["x.py::caller"].callees == ("y.py::target",)


class TestContext:
    def make(self, tmp_path: Path) -> tuple[dict[str, Unit], dict]:
        callers = "".join(f"def caller{index}():\n    target()\n" for index in range(5))
        callees = "".join(f"def callee{index}():\n    return {index}\n" for index in range(5))
        body = "".join(f"    callee{index}()\n" for index in range(5))
        units = tree_units(
            tmp_path,
            {
                "main.py": f"def target():\n{body}{callees}",
                "other.py": callers,
            },
        )
        return units, build_call_graph(units.values())

    def test_context_for__at_most_three_callees_in_call_order_then_callers(self, tmp_path):
        units, graph = self.make(tmp_path)
        snippets = context_for(units["main.py::target"], graph=graph, units_by_id=units)
        assert [(snippet.role, snippet.qualname) for snippet in snippets] == [
            ("callee", "callee0"),
            ("callee", "callee1"),
            ("callee", "callee2"),
            ("caller", "caller0"),
            ("caller", "caller1"),
            ("caller", "caller2"),
        ]
        assert snippets[0].source == "def callee0():\n    return 0\n"

    def test_context_for__long_sources_trimmed_at_line_boundaries(self, tmp_path):
        units, graph = self.make(tmp_path)
        snippets = context_for(
            units["other.py::caller0"], graph=graph, units_by_id=units, max_chars=15
        )
        assert [snippet.truncated for snippet in snippets] == [True]
        assert snippets[0].source.startswith("def target():\n")
        assert snippets[0].source.endswith("# ... 5 more lines not shown\n")

    def test_context_hash__stable_and_sensitive_to_context(self, tmp_path):
        units, graph = self.make(tmp_path)
        target = units["main.py::target"]
        full = context_for(target, graph=graph, units_by_id=units)
        fewer = context_for(target, graph=graph, units_by_id=units, max_callers=1)
        assert context_hash(target, full) == context_hash(target, list(full))
        assert context_hash(target, full) != context_hash(target, fewer)
        assert context_hash(target, []) != target.content_hash
        assert len(context_hash(target, full)) == 64


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
