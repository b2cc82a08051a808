"""The alert rules, their unit tests, the example scrape configuration and the Grafana dashboard,
checked by promtool (Debian's ``prometheus`` package; ``.ci/run`` installs it); and a real scrape
after real work, linted by ``promtool check metrics``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

from analyses.orchestrator import run_analysis
from analyses.review_responder import review_responder
from analyses.services import analysis_create
from eidolon_site.metrics import shared_state
from reliability.fake_anthropic import FakeAnthropic, FakeConfig
from tests.anthropic_support import (
    as_anthropic,
    generous_anthropic_limits,
    provider_for,
    write_project,
)

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "eidolon.json"
README = ROOT / "README.md"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian's prometheus package; .ci/run installs it)",
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])
    ]


# Words of PromQL that are not metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "by",
    "without",
    "rate",
    "irate",
    "increase",
    "deriv",
    "delta",
    "histogram_quantile",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "abs",
    "clamp_min",
    "clamp_max",
    "time",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not its labels, functions or strings)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_matchers)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {word for word in words - PROMQL_WORDS if not word.isdigit()}


def declared_sample_names(*registries: CollectorRegistry) -> set[str]:
    """Every sample name the registries can expose, used yet or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "summary": ("_count", "_sum", "_created", ""),
    }
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
            names.update(sample.name for sample in family.samples)
    return names


class TestAlertRules:
    def test_each_alert_has_a_summary_a_runbook_and_a_runbook_line_in_the_readme(self):
        readme = README.read_text()
        rules = alert_rules()
        assert len(rules) >= 9
        for rule in rules:
            annotations = rule["annotations"]
            assert annotations["summary"], rule["alert"]
            anchor = f"runbook-{rule['alert'].lower()}"
            assert annotations["runbook"] == f"README.md#{anchor}"
            assert f'<a id="{anchor}"></a>' in readme, f"no runbook line for {rule['alert']}"

    def test_every_alert_has_a_unit_test_in_which_it_fires(self):
        tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        fired = {
            case["alertname"]
            for test in tests
            for case in test["alert_rule_test"]
            if case.get("exp_alerts")
        }
        assert fired == {rule["alert"] for rule in alert_rules()}

    @needs_promtool
    def test_promtool_check_rules(self):
        result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_promtool
    def test_promtool_test_rules(self):
        result = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    @needs_promtool
    def test_promtool_check_config__the_example_scrape_configuration(self):
        result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def real_scrape(transactional_db, client, tmp_path):
    """``/metrics`` after a real analysis through the real SDK against the fake API."""
    generous_anthropic_limits()
    root = write_project(tmp_path, functions=4)
    with FakeAnthropic(config=FakeConfig(seed=3), responder=review_responder).running() as fake:
        analysis = analysis_create(source=str(root), provider="static", allow_any_path=True)
        async_to_sync(as_anthropic)(analysis)
        status = async_to_sync(run_analysis)(analysis.pk, provider=provider_for(fake))
    assert status == "completed"
    client.get("/")  # a request through django-prometheus's middleware as well
    shared_state.clear()
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


class TestScrapeAndDashboard:
    @needs_promtool
    def test_promtool_check_metrics__a_real_scrape_after_real_work(self, real_scrape):
        assert "eidolon_ai_api_calls_total{" in real_scrape
        result = promtool("check", "metrics", stdin=real_scrape)
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_promtool
    def test_every_dashboard_query_parses(self, tmp_path):
        queries = dashboard_queries()
        rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"dashboard:query_{index}", "expr": expr}
                        for index, (_, expr) in enumerate(queries)
                    ],
                }
            ]
        }
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(yaml.safe_dump(rules))
        result = promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(queries)} rules found" in result.stdout

    def test_dashboard_and_alerts_name_only_metrics_that_exist(self, real_scrape):
        from prometheus_client.parser import text_string_to_metric_families

        scraped = {
            sample.name
            for family in text_string_to_metric_families(real_scrape)
            for sample in family.samples
        }
        known = scraped | declared_sample_names(REGISTRY, shared_state.registry)
        used = {name for _, expr in dashboard_queries() for name in metric_names(expr)}
        used |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
        assert used - known == set()
        assert {"eidolon_ai_api_calls_total", "eidolon_breaker_state"} <= used

    def test_dashboard_has_the_rows_the_issue_names(self):
        rows = [
            panel["title"]
            for panel in json.loads(DASHBOARD.read_text())["panels"]
            if panel["type"] == "row"
        ]
        assert rows == [
            "Analyses",
            "AI API",
            "Breakers and budgets",
            "Cache",
            "Database",
            "Health",
            "WebSockets",
        ]


class TestReadme:
    def test_the_operator_section_lists_every_metric_exposed(self, real_scrape):
        from prometheus_client.parser import text_string_to_metric_families

        readme = README.read_text()
        section = readme[readme.index("### Metrics") : readme.index("### Alerts and runbooks")]
        families = {
            (family.name, family.type)
            for family in text_string_to_metric_families(real_scrape)
            if family.name.startswith("eidolon_") and not family.name.endswith("_created")
        }
        families |= {
            (family.name, family.type)
            for registry in (REGISTRY, shared_state.registry)
            for family in registry.collect()
            if family.name.startswith("eidolon_")
        }
        exposed = {
            name + {"counter": "_total", "info": "_info"}.get(kind, "") for name, kind in families
        }
        assert len(exposed) > 40
        missing = {name for name in exposed if f"`{name}" not in section}
        assert missing == set()
