"""analyses.parsing: what a unit holds (qualname, kind, id, lines, hash, arguments, calls...)."""

from __future__ import annotations

import hashlib
import textwrap

from analyses.parsing import content_hash, parse_module
from tests.analyses.parsing.support import only_function, units_of


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
