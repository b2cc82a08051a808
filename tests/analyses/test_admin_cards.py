"""Cards in the admin: most severe first, with their analysis and file, Markdown rendered safely,
the cited code highlighted; an analysis links to its cards."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from analyses.markdown import render_markdown
from analyses.models import Analysis, Card, CodeUnit

pytestmark = pytest.mark.django_db

CARDS = "/admin/analyses/card/"


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("ops", password="not-used-here-1"))
    return client


def make_card(analysis: Analysis, *, severity: str, title: str = "A finding", **fields) -> Card:
    unit, _ = CodeUnit.objects.get_or_create(
        analysis=analysis,
        unit_id="shop.py::total",
        defaults={
            "kind": "function",
            "qualname": "total",
            "path": "shop.py",
            "lineno": 10,
            "end_lineno": 14,
            "content_hash": "0" * 64,
        },
    )
    values = {
        "kind": "bug",
        "explanation": "Explained.",
        "path": "shop.py",
        "line_start": 12,
        "line_end": 12,
        "confidence": 0.8,
        "source": "anthropic",
        **fields,
    }
    return Card.objects.create(
        analysis=analysis, unit=unit, severity=severity, title=title, **values
    )


def new_analysis() -> Analysis:
    return Analysis.objects.create(source="/srv/shop", source_kind="local", provider="anthropic")


class TestSeverityOrder:
    def test_the_list_and_its_filter__high_medium_low__not_alphabetical(self, operator):
        analysis = new_analysis()
        for severity in ("low", "high", "medium", "low", "high"):
            make_card(analysis, severity=severity, title=f"{severity} finding")
        page = operator.get(CARDS).content.decode()
        shown = [page.index(f">{s}</span>") for s in ("high", "medium", "low")]
        assert shown == sorted(shown)
        rows = page[page.index('id="result_list"') :]
        order = [s for s in ("high", "medium", "low") for _ in range(rows.count(f">{s}</span>"))]
        assert order == ["high", "high", "medium", "low", "low"]
        filters = [page.index(f"?severity={s}") for s in ("high", "medium", "low")]
        assert filters == sorted(filters)
        filtered = operator.get(CARDS, {"severity": "medium"}).content.decode()
        assert "medium finding" in filtered and "high finding" not in filtered


class TestCardPages:
    def test_the_list_names_each_cards_analysis_and_file(self, operator):
        first, second = new_analysis(), new_analysis()
        make_card(first, severity="high", title="in the first")
        make_card(second, severity="low", title="in the second")
        page = operator.get(CARDS).content.decode()
        assert f'href="/admin/analyses/analysis/{first.pk}/change/">#{first.pk}</a>' in page
        assert f'href="/admin/analyses/analysis/{second.pk}/change/">#{second.pk}</a>' in page
        assert "shop.py:12" in page

    def test_an_analysis_links_to_its_cards__filtered(self, operator):
        analysis, other = new_analysis(), new_analysis()
        make_card(analysis, severity="high", title="mine")
        make_card(other, severity="high", title="not mine")
        page = operator.get(f"/admin/analyses/analysis/{analysis.pk}/change/").content.decode()
        link = f"{CARDS}?analysis__id__exact={analysis.pk}"
        assert f'href="{link}"' in page
        listed = operator.get(link).content.decode()
        assert "mine" in listed and "not mine" not in listed

    def test_the_card_page__markdown_rendered__code_highlighted_with_line_numbers(self, operator):
        card = make_card(
            new_analysis(),
            severity="high",
            title="`total` adds **twice**",
            explanation="See [the docs](https://docs.python.org/3/) and `sum()`.",
            excerpt="def total(items):\n    s = 0\n    s += sum(items)\n    return s + s\n",
            excerpt_start=10,
        )
        page = operator.get(f"{CARDS}{card.pk}/change/").content.decode()
        assert "<code>total</code> adds <strong>twice</strong>" in page
        assert (
            '<a href="https://docs.python.org/3/" rel="noopener noreferrer nofollow" '
            'target="_blank">the docs</a>' in page
        )
        assert '<span class="hll">' in page  # line 12, the cited one
        assert ">13</" in page and ">10</" in page  # numbered from the excerpt's first line
        assert re.search(r"/static/analyses/pygments\.(\w+\.)?css", page)


class TestSafeMarkdown:
    @pytest.mark.parametrize(
        ("text", "html"),
        [
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
            ("`<b>` stays code", "<code>&lt;b&gt;</code> stays code"),
            ("`**not bold**`", "<code>**not bold**</code>"),
            ("**bold** and *em*", "<strong>bold</strong> and <em>em</em>"),
            ("2 * 3 * 4", "2 * 3 * 4"),
            ("[js](javascript:alert(1))", "[js](javascript:alert(1))"),
            ("[data](data:text/html,x)", "[data](data:text/html,x)"),
            (
                '[q](https://e.com/"onmouseover="x)',
                '<a href="https://e.com/&quot;onmouseover=&quot;x" '
                'rel="noopener noreferrer nofollow" target="_blank">q</a>',
            ),
            ("[<b>x</b>](https://e.com)", None),  # link text stays escaped
        ],
    )
    def test_escaped_first__only_the_allow_list_becomes_markup(self, text, html):
        rendered = str(render_markdown(text))
        if html is not None:
            assert rendered == html
        assert "<script" not in rendered and "<img" not in rendered and "<b>" not in rendered

    def test_paragraphs_and_line_breaks(self):
        assert str(render_markdown("one\ntwo\n\nthree", block=True)) == (
            "<p>one<br>two</p><p>three</p>"
        )
