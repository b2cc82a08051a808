"""Exports of an analysis (issue 16): SARIF 2.1.0 valid against the official schema with stable
fingerprints, Markdown a parser reads as the text it escapes and short enough for a pull-request
comment, JSON with the cards as the API gives them, and the API's export route for each caller."""

from __future__ import annotations

import json
import re
import tomllib
from html import unescape as html_unescape
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from markdown_it import MarkdownIt

from analyses.exports import export_analysis, export_json, export_markdown, export_sarif
from analyses.exports.markdown import code_span, escape_text
from analyses.exports.sarif import FINGERPRINT_KEY
from analyses.exports.version import UNKNOWN_VERSION, eidolon_version
from analyses.models import Analysis, AnalysisStatus, Card, CardStatus, CodeUnit, UnitStatus
from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.analyses.export_support import (
    HOSTILE_EXPLANATION,
    HOSTILE_TITLE,
    MILD,
    TANGLED,
    analysis_with_findings,
    validate_sarif,
)
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)
from tests.api_support import ANONYMOUS, analysis_with_cards, caller

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent


async def static_analysis(root: Path) -> Analysis:
    analysis = await sync_to_async(analysis_create)(
        source=str(root), provider="static", allow_any_path=True
    )
    assert await run_analysis(analysis.pk) == AnalysisStatus.COMPLETED
    return await sync_to_async(Analysis.objects.get)(pk=analysis.pk)


def results_by_function(sarif: dict) -> dict[tuple[str, str], list[str]]:
    """Each function's fingerprints, sorted: (file, qualified name) -> fingerprints."""
    found: dict[tuple[str, str], list[str]] = {}
    for result in sarif["runs"][0]["results"]:
        location = result["locations"][0]
        key = (
            location["physicalLocation"]["artifactLocation"]["uri"],
            location["logicalLocations"][0]["fullyQualifiedName"],
        )
        found.setdefault(key, []).append(result["partialFingerprints"][FINGERPRINT_KEY])
    return {key: sorted(prints) for key, prints in found.items()}


class TestVersion:
    def test_the_version_is_the_one_pyproject_declares(self):
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert eidolon_version() == project["version"] != UNKNOWN_VERSION


class TestSarif:
    async def test_a_static_analysis__validates_against_the_sarif_2_1_0_schema(self, tmp_path):
        (tmp_path / "pkg dir").mkdir()
        (tmp_path / "pkg dir" / "tangled.py").write_text(TANGLED)
        (tmp_path / "mild.py").write_text(MILD)
        analysis = await static_analysis(tmp_path)
        dismissed = await sync_to_async(Card.objects.filter(analysis=analysis).first)()
        dismissed.status = CardStatus.DISMISSED
        await dismissed.asave()

        sarif = json.loads(await sync_to_async(export_sarif)(analysis))
        validate_sarif(sarif)

        run = sarif["runs"][0]
        driver = run["tool"]["driver"]
        assert (driver["name"], driver["version"]) == ("Eidolon", eidolon_version())
        assert [rule["id"] for rule in driver["rules"]] == [
            "bug", "risk", "security", "performance", "smell", "docs", "test"
        ]  # fmt: skip
        assert all(rule["shortDescription"]["text"] for rule in driver["rules"])
        assert run["properties"]["analysisId"] == analysis.pk
        assert run["properties"]["models"] == ["rules"]
        results = run["results"]
        cards = await sync_to_async(list)(Card.objects.filter(analysis=analysis))
        assert len(results) == len(cards) == 3
        by_id = {card.pk: card for card in cards}
        levels = {"high": "error", "medium": "warning", "low": "note"}
        for result in results:
            card = by_id[result["properties"]["cardId"]]
            physical = result["locations"][0]["physicalLocation"]
            assert result["ruleId"] == card.kind
            assert driver["rules"][result["ruleIndex"]]["id"] == card.kind
            assert result["level"] == levels[card.severity]
            assert result["message"]["text"].startswith(card.title)
            assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
            assert physical["region"]["startLine"] == card.line_start
            assert physical["region"]["endLine"] == card.line_end
            assert result["partialFingerprints"] == {FINGERPRINT_KEY: card.fingerprint}
            assert result["properties"]["model"] == card.model  # "" for the static rules
            assert result["properties"]["confidence"] == card.confidence
            assert ("suppressions" in result) == (card.pk == dismissed.pk)
        uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
        assert uris == {"mild.py", "pkg%20dir/tangled.py"}
        suppressed = next(r for r in results if r["properties"]["cardId"] == dismissed.pk)
        assert suppressed["suppressions"][0] | {"justification": ""} == {
            "kind": "external",
            "status": "accepted",
            "justification": "",
        }
        high = next(r for r in results if r["level"] == "error")
        assert high["locations"][0]["physicalLocation"]["region"]["snippet"]["text"].startswith(
            "def tangled(a, b, c, d):"
        )

    async def test_an_invalid_document__the_schema_refuses_it(self, tmp_path):
        """The validator is not a rubber stamp: a level SARIF does not have fails it."""
        (tmp_path / "mild.py").write_text(MILD)
        sarif = json.loads(await sync_to_async(export_sarif)(await static_analysis(tmp_path)))
        sarif["runs"][0]["results"][0]["level"] = "high"
        with pytest.raises(Exception, match="is not one of"):
            validate_sarif(sarif)

    async def test_fingerprints__the_same_from_the_cache_and_after_a_change_above(self, tmp_path):
        await sync_to_async(generous_anthropic_limits)()
        root = write_project(tmp_path, functions=20)
        with FakeAnthropic(config=FakeConfig(seed=3), responder=review_responder).running() as fake:

            async def review() -> tuple[Analysis, dict]:
                analysis = await sync_to_async(analysis_create)(
                    source=str(root), provider="static", allow_any_path=True
                )
                await as_anthropic(analysis)
                status = await run_analysis(analysis.pk, provider=provider_for(fake))
                assert status == AnalysisStatus.COMPLETED
                analysis = await sync_to_async(Analysis.objects.get)(pk=analysis.pk)
                sarif = json.loads(await sync_to_async(export_sarif)(analysis))
                validate_sarif(sarif)
                return analysis, sarif

            _, first_sarif = await review()
            cached, cached_sarif = await review()
            module = root / "module_0.py"
            module.write_text(
                module.read_text().replace(
                    '"""Generated module."""\n',
                    '"""Generated module."""\n\n\ndef newcomer(value):\n'
                    "    if value:\n        return value\n    return -value\n",
                )
            )
            changed, changed_sarif = await review()

        first_prints = results_by_function(first_sarif)
        assert len(first_prints) >= 8  # most functions have a finding to compare
        assert cached.llm_requests == 0 and cached.functions_cached == cached.functions_total
        assert results_by_function(cached_sarif) == first_prints

        changed_prints = results_by_function(changed_sarif)
        newcomer = ("module_0.py", "newcomer")
        assert 0 < changed.llm_requests  # the new function was reviewed
        statuses = dict(
            await sync_to_async(list)(
                CodeUnit.objects.filter(analysis=changed, reviewable=True).values_list(
                    "qualname", "status"
                )
            )
        )
        assert statuses["newcomer"] == UnitStatus.ANALYZED
        assert statuses["function_0"] == UnitStatus.CACHED
        assert {k: v for k, v in changed_prints.items() if k != newcomer} == first_prints
        # ...though the functions below the newcomer moved: their lines are not the same.
        lines = {
            sarif_id: sorted(
                r["locations"][0]["physicalLocation"]["region"]["startLine"]
                for r in sarif["runs"][0]["results"]
                if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "module_0.py"
                and r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] != "newcomer"
            )
            for sarif_id, sarif in (("first", first_sarif), ("changed", changed_sarif))
        }
        moved = zip(lines["first"], lines["changed"], strict=True)
        assert lines["first"] and all(after == before + 6 for before, after in moved)


LISTED = re.compile(r"^- \*\*(high|medium|low)\*\* · ", re.MULTILINE)  # a finding's line


def parsed(markdown: str) -> list:
    return MarkdownIt("commonmark").enable("table").enable("strikethrough").parse(markdown)


def inline_children(tokens: list) -> list:
    return [child for token in tokens if token.type == "inline" for child in token.children]


class TestMarkdown:
    def test_1000_findings__parsed_as_ours_alone_and_under_65000_characters(self):
        owner = caller("alice").user
        analysis = analysis_with_findings(
            owner=owner, files=10, functions_per_file=10, findings_per_function=10
        )
        assert Card.objects.filter(analysis=analysis).count() == 1000

        markdown = export_markdown(analysis)

        assert len(markdown) < 65_000
        listed = len(LISTED.findall(markdown))
        trailer = re.search(r"… and (\d+) more findings \(see the full report\)\n$", markdown)
        assert trailer and listed + int(trailer[1]) == 1000 and listed > 100
        tokens = parsed(markdown)
        headings = [t.tag for t in tokens if t.type == "heading_open"]
        assert headings[0] == "h3" and set(headings[1:]) == {"h4"}
        assert len(headings) - 1 == len(re.findall(r"^#### ", markdown, re.MULTILINE))
        kinds = {child.type for child in inline_children(tokens)}
        assert not kinds & {"html_inline", "link_open", "image", "s_open", "em_open"}
        assert not {t.type for t in tokens} & {"html_block", "table_open", "blockquote_open"}
        # The most severe are listed first: the cap leaves out lows and mediums before highs.
        assert set(LISTED.findall(markdown)) == {"high"}
        assert "- **Findings:** 334 high, 333 medium, 333 low\n" in markdown

    def test_few_queries__however_many_cards(self, django_assert_max_num_queries):
        analysis = analysis_with_findings(
            owner=None, files=3, functions_per_file=10, findings_per_function=5
        )
        with django_assert_max_num_queries(2):  # the cards with their units; the models
            assert len(json.loads(export_sarif(analysis))["runs"][0]["results"]) == 150
        with django_assert_max_num_queries(3):  # and the cost, when the counters cannot tell
            export_markdown(analysis)
        with django_assert_max_num_queries(4):  # and each model's usage (two grouped queries)
            export_json(analysis)

    def test_an_unknown_format__refused(self):
        analysis = analysis_with_findings(
            owner=None, files=1, functions_per_file=1, findings_per_function=0
        )
        with pytest.raises(ValueError, match="unknown export format 'pdf'"):
            export_analysis(analysis, format="pdf")

    def test_hostile_text__renders_as_the_text_itself(self):
        owner = caller("alice").user
        analysis = analysis_with_findings(
            owner=owner, files=1, functions_per_file=1, findings_per_function=1
        )
        html = MarkdownIt("commonmark").enable("table").render(export_markdown(analysis))
        assert "<script>" not in html and "<img" not in html and "<table" not in html
        assert "<a " not in html and "<blockquote" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "| a | b | [x](https://evil.example) ![i](y) 0" in html
        assert "&lt;img src=x onerror=alert(1)&gt; **bold** _em_ ~~gone~~ $x^2$ 1. list" in html
        assert "A second paragraph" not in html  # only the first paragraph is shown

    @pytest.mark.parametrize(
        "text",
        [HOSTILE_TITLE, HOSTILE_EXPLANATION, "`code` and ``` fences", "\\*not\\* `a\\b`"],
    )
    def test_escape_text__renders_back_to_the_text_on_one_line(self, text):
        html = MarkdownIt("commonmark").render(escape_text(text)).strip()
        assert html.startswith("<p>") and html.count("<p>") == 1
        plain = re.sub(r"</?(p|code)>", "", html)
        one_line = re.sub(r"`([^`]+)`", r"\1", re.sub(r"\s+", " ", text).strip())
        assert html_unescape(plain) == one_line

    @pytest.mark.parametrize("path", ["a.py", "we`ird.py", "`start.py", "two``ticks.py"])
    def test_code_span__holds_any_path(self, path):
        html = MarkdownIt("commonmark").render(code_span(path))
        assert html.strip() == f"<p><code>{path}</code></p>"

    def test_a_cap_smaller_than_the_findings__says_how_many_more(self):
        analysis = analysis_with_findings(
            owner=None, files=2, functions_per_file=3, findings_per_function=2
        )
        full = export_markdown(analysis)
        assert "more finding" not in full and len(LISTED.findall(full)) == 12
        capped = export_markdown(analysis, max_chars=len(full) - 1)
        assert len(capped) <= len(full) - 1
        assert capped.endswith("… and 1 more finding (see the full report)\n")

    def test_summary__score_counts_functions_cost_models_and_dismissed(self):
        analysis = analysis_with_findings(
            owner=None, files=1, functions_per_file=3, findings_per_function=1
        )
        Analysis.objects.filter(pk=analysis.pk).update(health_score=71, cost_usd="0.01234567")
        Card.objects.filter(analysis=analysis, severity="low").update(status="dismissed")
        analysis.refresh_from_db()
        markdown = export_markdown(analysis)
        assert "- **Health score:** 71/100\n" in markdown
        assert "- **Findings:** 1 high, 1 medium, 0 low (1 dismissed, not listed)\n" in markdown
        assert "- **Functions:** 3 reviewed, 0 from the cache, 0 failed\n" in markdown
        assert "- **Cost:** $0.0123\n" in markdown
        assert "- **Models:** `claude-sonnet-5-5`\n" in markdown

    def test_no_findings__says_so(self):
        analysis = analysis_with_findings(
            owner=None, files=1, functions_per_file=1, findings_per_function=0
        )
        assert export_markdown(analysis).endswith("No open findings.\n")

    def test_a_cap_too_small__refused(self):
        analysis = analysis_with_findings(
            owner=None, files=1, functions_per_file=1, findings_per_function=0
        )
        with pytest.raises(ValueError, match="at least 2000"):
            export_markdown(analysis, max_chars=100)


class TestJson:
    async def test_the_cards_as_the_api_gives_them__and_the_analysis_as_its_detail(self):
        owner = await sync_to_async(caller)("alice")
        analysis = await sync_to_async(analysis_with_cards)(owner=owner.user)
        document = json.loads(await sync_to_async(export_json)(analysis))
        cards = await owner.call("GET", f"/api/analyses/{analysis.pk}/cards?limit=200")
        detail = await owner.call("GET", f"/api/analyses/{analysis.pk}")
        assert document["cards"] == cards.json()["items"] and len(document["cards"]) == 5
        assert document["analysis"] == detail.json()
        assert document["tool"] == {"name": "Eidolon", "version": eidolon_version()}


class TestApiExport:
    @pytest.fixture
    def world(self):
        owner, other, staff = caller("alice"), caller("bob"), caller("sam", staff=True)
        analysis = analysis_with_cards(owner=owner.user)
        running = analysis_with_cards(owner=owner.user, status=AnalysisStatus.RUNNING)
        return owner, other, staff, analysis, running

    @pytest.mark.parametrize(
        ("format", "content_type", "extension"),
        [
            ("sarif", "application/sarif+json", "sarif"),
            ("markdown", "text/markdown; charset=utf-8", "md"),
            ("json", "application/json", "json"),
        ],
    )
    async def test_owner_and_staff__the_export_as_an_attachment(
        self, world, format, content_type, extension
    ):
        owner, _, staff, analysis, _ = world
        url = f"/api/analyses/{analysis.pk}/export?format={format}"
        for who in (owner, staff):
            response = await who.call("GET", url)
            assert response.status_code == 200, response.content
            assert response["Content-Type"] == content_type
            assert response["Content-Disposition"] == (
                f'attachment; filename="eidolon-analysis-{analysis.pk}.{extension}"'
            )
            body = response.content.decode()
            if format == "sarif":
                validate_sarif(json.loads(body))
            elif format == "json":
                assert len(json.loads(body)["cards"]) == 5
            else:
                assert body.startswith("### Eidolon review of ")

    async def test_another_user__404_and_anonymous__401(self, world):
        _, other, _, analysis, _ = world
        url = f"/api/analyses/{analysis.pk}/export?format=sarif"
        response = await other.call("GET", url)
        assert response.status_code == 404 and response.json() == {"detail": "not found"}
        assert (await ANONYMOUS.call("GET", url)).status_code == 401

    @pytest.mark.parametrize("query", ["?format=pdf", "?format=", ""])
    async def test_a_bad_or_missing_format__422_naming_it(self, world, query):
        owner, _, _, analysis, _ = world
        response = await owner.call("GET", f"/api/analyses/{analysis.pk}/export{query}")
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert detail[0]["loc"][-1] == "format"
        if query:
            assert "'sarif', 'markdown' or 'json'" in detail[0]["msg"]

    async def test_a_running_analysis__409_still_running(self, world):
        owner, _, _, _, running = world
        response = await owner.call("GET", f"/api/analyses/{running.pk}/export?format=sarif")
        assert response.status_code == 409
        assert response.json() == {
            "detail": f"analysis {running.pk} is still running: export it when it has finished"
        }

    async def test_the_openapi_document_names_the_three_content_types(self, world):
        owner = world[0]
        document = (await owner.call("GET", "/api/openapi.json")).json()
        operation = document["paths"]["/api/analyses/{analysis_id}/export"]["get"]
        assert set(operation["responses"]["200"]["content"]) == {
            "application/sarif+json",
            "text/markdown",
            "application/json",
        }
        assert {"404", "409", "422"} <= set(operation["responses"])
