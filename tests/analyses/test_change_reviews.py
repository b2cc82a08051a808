"""Change reviews (``analyze --diff BASE``, ``diff_base``): only the functions a change touched are
reviewed, against test-made git repositories (a local work tree, and a clone over HTTPS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from analyses.changes import ChangeError, parse_base, parse_diff, select_units
from analyses.models import Analysis, AnalysisStatus, CodeUnit, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.parsing import build_call_graph, context_for, context_hash, parse_module
from analyses.review_responder import HEADER_PATTERN, review_responder
from analyses.services import InvalidAnalysisRequest, analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig, prompt_text
from tests.anthropic_support import generous_anthropic_limits
from tests.api_support import caller
from tests.gitserver import commit_all, git, new_work_tree, publish, serving
from tests.processes import run_manage, subprocess_environment

CART_BEFORE = '''"""The cart."""


def total(items):
    """The cart's total."""
    return sum(price(item) for item in items)


def price(item):
    """One line's price."""
    return item["price"] * item.get("quantity", 1)


def describe(item):
    """A line as text."""
    return f"{item['name']}: {item['price']}"
'''

# price changed (and calls the new tax); tax added; total and describe untouched.
CART_AFTER = '''"""The cart."""


def total(items):
    """The cart's total."""
    return sum(price(item) for item in items)


def price(item):
    """One line's price, taxed."""
    return item["price"] * item.get("quantity", 1) + tax(item)


def tax(item):
    """The tax on one line."""
    return round(item["price"] * 0.2, 2)


def describe(item):
    """A line as text."""
    return f"{item['name']}: {item['price']}"
'''

UTIL_BEFORE = '''"""Helpers."""


def slugify(text):
    """A slug."""
    return "-".join(text.lower().split())


def present_sorted(values):
    """The values that are not None, sorted."""
    cleaned = [value for value in values if value is not None]
    return sorted(cleaned)


class Basket:
    """Items."""

    def add(self, item):
        """Add one."""
        self.items.append(item)

    def clear(self):
        """Remove all."""
        self.items = []
'''

# present_sorted renamed to without_none_sorted, its body unchanged (nothing calls it, so
# its context is unchanged too); Basket.clear changed; slugify and Basket.add untouched.
UTIL_AFTER = UTIL_BEFORE.replace("def present_sorted(", "def without_none_sorted(").replace(
    "        self.items = []\n", "        self.items.clear()\n"
)

LEGACY = '''"""Moved without a change."""


def legacy(value):
    """Kept."""
    return value
'''

# What the second commit changed, counted by hand from the edits above.
CHANGED = {
    "shop/cart.py::price",
    "shop/cart.py::tax",
    "shop/util.py::without_none_sorted",
    "shop/util.py::Basket.clear",
}
RENAMED = {"shop.util.without_none_sorted"}
TOUCHED_FILES = ["shop/cart.py", "shop/old/legacy.py", "shop/util.py"]


def write(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def first_commit(work: Path) -> str:
    write(
        work,
        {"shop/cart.py": CART_BEFORE, "shop/util.py": UTIL_BEFORE, "shop/legacy.py": LEGACY},
    )
    return commit_all(work, "first")


def second_commit(work: Path) -> str:
    write(work, {"shop/cart.py": CART_AFTER, "shop/util.py": UTIL_AFTER})
    (work / "shop/old").mkdir()
    git("mv", "shop/legacy.py", "shop/old/legacy.py", cwd=work)
    return commit_all(work, "second")


def reviewed_functions(requests) -> list[str]:
    """The function each review request was about (its prompt's header line)."""
    names = []
    for request in requests:
        if request.path == "/v1/messages":
            names.append(HEADER_PATTERN.search(prompt_text(request.body))["name"])
    return names


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(config=FakeConfig(seed=5), responder=review_responder).running() as server:
        yield server


@pytest.mark.django_db(transaction=True)
class TestChangeReviewCommand:
    def analyze(self, fake: FakeAnthropic, *args: str):
        environment = subprocess_environment(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=fake.base_url,
            EIDOLON_LOG_LEVEL="WARNING",
        )
        result = run_manage(
            "analyze", *args, "--provider", "anthropic", "--json", env=environment, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def test_diff_head_1__only_the_changed_functions_are_requested__a_rename_is_cached(
        self, fake, tmp_path
    ):
        generous_anthropic_limits()
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        whole = self.analyze(fake, str(work))  # the whole tree: the cache is warm
        assert whole["functions_total"] == whole["llm_requests"] == 8
        assert whole["functions_selected"] is None and whole["diff_base"] == ""
        requests_before = len(fake.requests)

        second_commit(work)
        report = self.analyze(fake, str(work), "--diff", "HEAD~1")

        asked = reviewed_functions(fake.requests[requests_before:])
        expected_requests = {
            f"{unit_id.split('::')[0].removesuffix('.py').replace('/', '.')}."
            f"{unit_id.split('::')[1]}"
            for unit_id in CHANGED
        } - RENAMED
        assert sorted(asked) == sorted(expected_requests)  # one request each, nothing else
        assert report["llm_requests"] == len(expected_requests) == 3
        assert report["functions_selected"] == report["functions_total"] == len(CHANGED) == 4
        assert report["functions_analyzed"] == 3
        assert report["functions_cached"] == 1  # the renamed function, from the cache
        assert report["diff_base"] == "HEAD~1"
        assert report["diff_files"] == TOUCHED_FILES
        units = CodeUnit.objects.filter(analysis_id=report["id"], kind__in=["function", "method"])
        reviewed = set(units.filter(reviewable=True).values_list("unit_id", flat=True))
        assert reviewed == CHANGED
        unchanged = units.exclude(unit_id__in=CHANGED)
        assert unchanged.count() == 5  # total, describe, slugify, Basket.add, legacy (moved)
        assert set(unchanged.values_list("status", "failure_reason")) == {
            (UnitStatus.SKIPPED, "unchanged since HEAD~1")
        }
        assert (
            not Analysis.objects.get(pk=report["id"])
            .cards.exclude(unit__unit_id__in=CHANGED)
            .exists()
        )


@pytest.mark.django_db(transaction=True)
class TestChangeReviewInput:
    def analyze(self, source: Path, base: str):
        environment = subprocess_environment(EIDOLON_LOG_LEVEL="WARNING")
        return run_manage(
            "analyze", str(source), "--provider", "static", f"--diff={base}", env=environment
        )

    @pytest.mark.parametrize(
        ("base", "message"),
        [
            ("no-such-branch", "diff_base (--diff) 'no-such-branch' is not a commit"),
            ("--upload-pack=touch /tmp/x", "diff_base (--diff) cannot start with '-'"),
        ],
    )
    def test_a_bad_base__exit_2_naming_the_field_and_nothing_stored(self, tmp_path, base, message):
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        result = self.analyze(work, base)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert not Analysis.objects.exists()

    def test_a_directory_that_is_not_a_git_work_tree__exit_2(self, tmp_path):
        write(tmp_path / "plain", {"a.py": "def f():\n    return 1\n"})
        result = self.analyze(tmp_path / "plain", "HEAD~1")
        assert result.returncode == 2, result.stderr
        assert "diff_base (--diff) needs a git work tree" in result.stderr
        assert not Analysis.objects.exists()

    @pytest.mark.parametrize("base", ["-c", "main..other", "a b", "x" * 300, "HEAD~5000"])
    def test_malformed_bases__refused_for_diff_base(self, tmp_path, base):
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        with pytest.raises(InvalidAnalysisRequest, match=r"diff_base \(--diff\)") as error:
            analysis_create(
                source=str(work), provider="static", allow_any_path=True, diff_base=base
            )
        assert error.value.field == "diff_base"
        assert not Analysis.objects.exists()

    def test_a_repository_outside_the_source_roots__refused(self, tmp_path, settings):
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        settings.EIDOLON_SOURCE_ROOTS = [str(work / "shop")]  # the repository is its parent
        with pytest.raises(InvalidAnalysisRequest, match="lies outside") as error:
            analysis_create(source=str(work / "shop"), provider="static", diff_base="HEAD")
        assert error.value.field == "diff_base"
        settings.EIDOLON_SOURCE_ROOTS = [str(work)]
        assert analysis_create(source=str(work / "shop"), provider="static", diff_base="HEAD")

    async def test_api__400_with_a_detail_naming_diff_base(self, tmp_path, settings):
        settings.EIDOLON_SOURCE_ROOTS = [str(tmp_path)]
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        user = await sync_to_async(caller)("dev")
        response = await user.call(
            "POST",
            "/api/analyses",
            {"source": str(work), "diff_base": "nope", "provider": "static"},
        )
        assert response.status_code == 400
        assert "diff_base" in response.json()["detail"]
        response = await user.call(
            "POST",
            "/api/analyses",
            {"source": str(work), "diff_base": "HEAD", "provider": "static"},
        )
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["diff_base"] == "HEAD" and body["functions_selected"] is None
        assert await sync_to_async(Analysis.objects.count)() == 1


@pytest.mark.django_db(transaction=True)
class TestWorkingTree:
    async def test_uncommitted_and_untracked_changes_count(self, tmp_path):
        work = new_work_tree(tmp_path / "work")
        first_commit(work)
        write(work, {"shop/cart.py": CART_AFTER, "shop/new.py": LEGACY})  # not committed
        analysis = await sync_to_async(analysis_create)(
            source=str(work), provider="static", allow_any_path=True, diff_base="HEAD"
        )
        assert await run_analysis(analysis.pk) == AnalysisStatus.COMPLETED
        analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        assert analysis.diff_files == ["shop/cart.py", "shop/new.py"]
        selected = await sync_to_async(set)(
            CodeUnit.objects.filter(
                analysis=analysis, kind="function", reviewable=True
            ).values_list("unit_id", flat=True)
        )
        assert selected == {"shop/cart.py::price", "shop/cart.py::tax", "shop/new.py::legacy"}
        assert analysis.functions_selected == analysis.functions_total == 3


@pytest.mark.django_db(transaction=True)
class TestGitUrl:
    async def test_a_clone_fetches_the_base_and_reviews_the_change(self, tmp_path, settings):
        work = new_work_tree(tmp_path / "work")
        first = first_commit(work)
        second_commit(work)
        served = tmp_path / "served"
        served.mkdir()
        publish(work, served / "project.git")
        with serving(served, certificate_dir=tmp_path) as (base_url, ca_file):
            settings.EIDOLON_GIT_EXTRA_CONFIG = {"http.sslCAInfo": str(ca_file)}
            settings.EIDOLON_GIT_TRUSTED_NETWORKS = ["127.0.0.1/32"]
            settings.EIDOLON_WORKSPACE_ROOT = tmp_path / "workspaces"
            results = {}
            for base in ("HEAD~1", first, "main~1", "no-such-branch"):
                analysis = await sync_to_async(analysis_create)(
                    source=f"{base_url}/project.git", provider="static", diff_base=base
                )
                await run_analysis(analysis.pk)
                results[base] = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
        for base in ("HEAD~1", first, "main~1"):
            analysis = results[base]
            assert analysis.status == AnalysisStatus.COMPLETED, analysis.status_reason
            assert analysis.functions_selected == analysis.functions_total == len(CHANGED)
            assert analysis.diff_files == TOUCHED_FILES
        missing = results["no-such-branch"]
        assert missing.status == AnalysisStatus.FAILED
        assert "diff_base (--diff)" in missing.status_reason
        assert "no-such-branch" in missing.status_reason
        assert list((tmp_path / "workspaces").iterdir()) == []


class TestDiffParsing:
    def test_hunks__added_modified_and_deleted_lines(self):
        diff = "\n".join(
            [
                "diff --git a/a.py b/a.py",
                "--- a/a.py",
                "+++ b/a.py",
                "@@ -3 +3 @@",
                "-x",
                "+++ an added line that looks like a header",
                "@@ -10,2 +9,0 @@",
                "-gone",
                "-gone",
                "@@ -20,0 +19,3 @@",
                "+new",
                "diff --git a/old.py b/old.py",
                "deleted file mode 100644",
                "--- a/old.py",
                "+++ /dev/null",
                "@@ -1 +0,0 @@",
                "-x",
                'diff --git "a/sp\\tace.py" "b/sp\\tace.py"',
                '--- "a/sp\\tace.py"',
                '+++ "b/sp\\tace.py"',
                "@@ -1 +1 @@",
            ]
        )
        assert parse_diff(diff) == {
            "a.py": [(3, 3), (9, 10), (19, 21)],
            "sp\tace.py": [(1, 1)],
        }

    def test_selection__a_function_is_chosen_by_any_of_its_lines_decorators_included(self):
        source = "@decorator\ndef f():\n    return 1\n\n\ndef g():\n    return 2\n"
        units = parse_module(source, path="m.py")[0]
        assert select_units(units, {"m.py": [(1, 1)]}) == {"m.py::f"}
        assert select_units(units, {"m.py": [(4, 5)]}) == set()
        assert select_units(units, {"m.py": [(3, 6)]}) == {"m.py::f", "m.py::g"}

    @pytest.mark.parametrize(
        ("base", "depth"), [("main", 1), ("HEAD~1", 2), ("v1.0^^", 3), ("a" * 40 + "~3", 4)]
    )
    def test_bases__their_fetch_depth(self, base, depth):
        assert parse_base(base).depth == depth

    @pytest.mark.parametrize("base", ["-x", "a..b", "HEAD~2000", "a:b", "@{-1}"])
    def test_bad_bases__refused(self, base):
        with pytest.raises(ChangeError):
            parse_base(base)


class TestRenamedFunctionsHash:
    def test_the_cache_key_ignores_the_functions_own_name_only(self):
        before = "def old(values):\n    return sorted(values)\n"
        renamed = "def new(values):\n    return sorted(values)\n"
        changed = "def old(values):\n    return sorted(values, reverse=True)\n"

        def key(source: str) -> str:
            units = parse_module(source, path="m.py")[0]
            graph = build_call_graph(units)
            unit = next(u for u in units if u.is_function)
            by_id = {u.id: u for u in units}
            return context_hash(unit, context_for(unit, graph=graph, units_by_id=by_id))

        assert key(before) == key(renamed)
        assert key(before) != key(changed)
