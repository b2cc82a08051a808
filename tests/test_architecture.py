"""The house rules, read from the source with ``ast``: dependencies only point down, no import
cycle, no oversized file or function.

    analyses -> reliability;  eidolon_site composes both (settings, URLs, routing)

Nothing in ``reliability`` imports ``analyses`` or ``eidolon_site``; nothing in ``analyses``
imports ``eidolon_site``; settings are read through ``django.conf.settings`` only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("eidolon_site", "reliability", "analyses")
# What each package must never import.
FORBIDDEN = {
    "reliability": ("analyses", "eidolon_site"),
    "analyses": ("eidolon_site",),
    "eidolon_site": (),
}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def product_files() -> Iterator[Path]:
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in product_files()}


def resolve(name: str) -> str | None:
    """The product module ``name`` names (a module, or a package's ``__init__``), if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that runs: ``if TYPE_CHECKING:`` blocks are skipped (they import nothing)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> Iterator[Import]:
    """Every import of a product module, at any depth (lazy imports in functions count too)."""
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import module`` imports the module (the package only as its parent,
            # like any ``import a.b``); ``from module import name`` imports the module.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if (imported := resolve(name)) and imported != importer:
                yield Import(importer, imported, node.lineno)


ALL_IMPORTS = [found for path in MODULES.values() for found in imports_of(path)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


class TestDependencies:
    def test_the_walk_sees_the_imports_it_must_judge(self):
        # A walker that found nothing would pass everything below.
        assert len(MODULES) > 40
        assert Import("analyses.orchestrator", "analyses.store", 0).imported in {
            found.imported for found in ALL_IMPORTS if found.importer == "analyses.orchestrator"
        }
        assert any(found.importer.startswith("analyses") for found in ALL_IMPORTS)
        assert any(found.imported.startswith("reliability") for found in ALL_IMPORTS)

    @pytest.mark.parametrize("package", PRODUCT_PACKAGES)
    def test_imports_only_point_down(self, package):
        upward = [
            f"{found.importer}:{found.line} imports {found.imported}"
            for found in ALL_IMPORTS
            if found.importer.split(".")[0] == package
            and found.imported.split(".")[0] in FORBIDDEN[package]
        ]
        assert upward == []

    def test_no_import_cycle_between_modules(self):
        edges: dict[str, set[str]] = {}
        for found in ALL_IMPORTS:
            edges.setdefault(found.importer, set()).add(found.imported)
        assert cycles(edges) == []

    def test_the_cycle_finder_finds_a_cycle(self):
        assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


class TestSizes:
    def test_no_product_file_over_600_lines(self):
        long_files = {
            name: lines
            for name, path in MODULES.items()
            if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
        }
        assert long_files == {}

    def test_no_product_function_over_80_lines(self):
        long_functions = {}
        for name, path in MODULES.items():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long_functions[f"{name}.{node.name}:{node.lineno}"] = lines
        assert long_functions == {}
