"""How much parse_tree costs over a bare ``ast.parse`` of the same files, and its peak memory.

    .venv/bin/python benchmarks/parse_django.py [ROOT]        # ROOT defaults to installed Django

Targets (from the parsing issue): parse_tree <= 2.0x the bare parse, peak memory < 500 MB.
Timings are the best of several interleaved rounds; memory is measured in separate, untimed
runs because tracemalloc slows everything it watches. Prints figures, asserts nothing.
"""

from __future__ import annotations

import ast
import gc
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analyses.parsing import iter_python_files, parse_tree

ROUNDS = 3

T = TypeVar("T")


def bare_parse(files: list[Path]) -> None:
    for path in files:
        ast.parse(path.read_bytes(), filename=str(path))


def timed(function: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def traced(function: Callable[[], T]) -> tuple[T, float]:
    """What ``function`` returns, and the peak memory (MB) tracemalloc saw it allocate."""
    gc.collect()
    tracemalloc.start()
    try:
        return function(), tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1]).resolve()
    else:
        import django

        root = Path(django.__file__).resolve().parent
    files = list(iter_python_files(root))
    size_mb = sum(path.stat().st_size for path in files) / 2**20

    bare_times: list[float] = []
    tree_times: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so background load hits both alike
        bare_times.append(timed(lambda: bare_parse(files)))
        tree_times.append(timed(lambda: parse_tree(root)))
    bare, tree = min(bare_times), min(tree_times)

    _, bare_peak = traced(lambda: bare_parse(files))
    result, tree_peak = traced(lambda: parse_tree(root))
    kinds = Counter(unit.kind for unit in result.units)
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print(f"root                 {root}")
    print(f"files                {len(files)} ({size_mb:.1f} MB of source)")
    print(f"files parsed         {result.files_parsed}, errors {len(result.errors)}")
    print(f"units                {len(result.units)} " + str(dict(sorted(kinds.items()))))
    print(
        f"bare ast.parse       {bare:.3f} s  (read + parse; best of {ROUNDS}: {_fmt(bare_times)})"
    )
    print(f"parse_tree           {tree:.3f} s  (best of {ROUNDS}: {_fmt(tree_times)})")
    print(f"ratio                {tree / bare:.2f}x  (target <= 2.0)")
    print(f"tracemalloc peak     parse_tree {tree_peak:.0f} MB, bare parse {bare_peak:.0f} MB")
    print(f"process max RSS      {max_rss_mb:.0f} MB  (target < 500 MB)")


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in times)


if __name__ == "__main__":
    main()
