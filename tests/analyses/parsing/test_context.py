"""analyses.parsing.context: the call graph and the callers/callees shown beside a unit."""

from __future__ import annotations

import textwrap
from pathlib import Path

from analyses.parsing import Unit, build_call_graph, context_for, context_hash
from tests.analyses.parsing.support import tree_units


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
