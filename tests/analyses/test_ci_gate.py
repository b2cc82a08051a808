"""The CI gate and the command's exports (issue 16): ``manage.py analyze`` run as a real process
with the static rules; ``--fail-on`` exits 3 over a finding at or above the severity and 0
without; ``--format``/``--output`` write the export; every bad combination exits 2 before any
analysis starts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from analyses.exports import findings_at_or_above
from analyses.models import Analysis, AnalysisStatus, CardStatus
from tests.analyses.export_support import MILD, TANGLED, validate_sarif
from tests.api_support import analysis_with_cards
from tests.processes import ROOT, free_port, run_manage, subprocess_environment

pytestmark = pytest.mark.django_db(transaction=True)


def analyze(*args: str) -> subprocess.CompletedProcess:
    environment = subprocess_environment()
    environment.pop("ANTHROPIC_API_KEY", None)
    return run_manage("analyze", *args, "--provider", "static", env=environment, timeout=120)


def project(root: Path, **files: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / f"{name}.py").write_text(text)
    return str(root)


class TestFailOn:
    def test_a_high_finding__exit_3_and_the_sarif_is_written(self, tmp_path):
        output = tmp_path / "eidolon.sarif"
        result = analyze(
            project(tmp_path / "code", tangled=TANGLED, mild=MILD),
            "--format", "sarif", "--output", str(output), "--fail-on", "high",
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert "1 finding(s) at or above high severity: failing (exit 3)" in result.stderr
        sarif = json.loads(output.read_text())
        validate_sarif(sarif)
        levels = [r["level"] for r in sarif["runs"][0]["results"]]
        assert levels.count("error") == 1
        assert result.stdout.startswith("analysis #")  # the summary, as without --format

    def test_no_high_finding__exit_0(self, tmp_path):
        result = analyze(project(tmp_path / "code", mild=MILD), "--fail-on", "high")
        assert result.returncode == 0, result.stderr
        assert "at or above" not in result.stderr

    def test_medium__a_medium_finding_is_enough(self, tmp_path):
        result = analyze(project(tmp_path / "code", mild=MILD), "--fail-on", "medium")
        assert result.returncode == 3
        assert "2 finding(s) at or above medium severity" in result.stderr

    def test_the_analysis_failing__exit_1_and_no_export(self, tmp_path):
        """A failed analysis is 1, not 3, and writes no report (one without results would
        tell a code-scanning platform that every alert was fixed)."""
        output = tmp_path / "eidolon.sarif"
        nobody_listens = f"https://127.0.0.1:{free_port()}/repo.git"
        result = analyze(
            nobody_listens, "--allow-private-hosts",
            "--format", "sarif", "--output", str(output), "--fail-on", "high",
        )  # fmt: skip
        assert Analysis.objects.get().status == AnalysisStatus.FAILED
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert not output.exists()


class TestExportOptions:
    @pytest.mark.parametrize("output", [[], ["--output", "-"]])
    def test_format_to_stdout__the_export_alone_on_stdout(self, tmp_path, output):
        result = analyze(project(tmp_path / "code", mild=MILD), "--format", "sarif", *output)
        assert result.returncode == 0, result.stderr
        validate_sarif(json.loads(result.stdout))  # nothing else on stdout
        assert "analysis #" in result.stderr  # the summary went to stderr

    def test_json_and_format_to_a_file__both(self, tmp_path):
        output = tmp_path / "comment.md"
        result = analyze(
            project(tmp_path / "code", mild=MILD), "--json",
            "--format", "markdown", "--output", str(output),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["cards"] == 2
        assert output.read_text().startswith("### Eidolon review of ")

    def test_format_json__the_cards_as_the_api_gives_them(self, tmp_path):
        result = analyze(project(tmp_path / "code", mild=MILD), "--format", "json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["analysis"]["status"] == "completed" and len(document["cards"]) == 2
        assert {"id", "severity", "path", "line_start", "status"} <= set(document["cards"][0])

    @pytest.mark.parametrize(
        ("args", "reason"),
        [
            (["--format", "pdf"], "invalid choice: 'pdf'"),
            (["--fail-on", "critical"], "invalid choice: 'critical'"),
            (["--output", "{tmp}/x.sarif"], "--output needs --format"),
            (["--format", "sarif", "--json"], "--json and --format both write to stdout"),
            (["--format", "sarif", "--output", "{tmp}/no/such/x.sarif"], "does not exist"),
            (["--format", "sarif", "--output", "{tmp}"], "is a directory"),
        ],
    )
    def test_bad_input__exit_2_with_a_one_line_reason_and_nothing_run(self, tmp_path, args, reason):
        result = analyze(
            project(tmp_path / "code", mild=MILD), *(arg.format(tmp=tmp_path) for arg in args)
        )
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert reason in lines[-1], result.stderr
        assert result.stdout == ""
        assert not Analysis.objects.exists()


class TestFindingsAtOrAbove:
    def test_counts_by_threshold__and_leaves_dismissed_cards_out(self):
        # high bug, low smell, medium security, high security, low docs
        analysis = analysis_with_cards(owner=None)
        counts = {s: findings_at_or_above(analysis, severity=s) for s in ("high", "medium", "low")}
        assert counts == {"high": 2, "medium": 3, "low": 5}
        analysis.cards.filter(severity="high").update(status=CardStatus.DISMISSED)
        assert findings_at_or_above(analysis, severity="high") == 0
        assert findings_at_or_above(analysis, severity="low") == 3
        analysis.cards.filter(severity="medium").update(status=CardStatus.FIXED)
        assert findings_at_or_above(analysis, severity="medium") == 1  # fixed still counts

    def test_an_unknown_severity__refused(self):
        with pytest.raises(ValueError, match="choose one of high, medium, low"):
            findings_at_or_above(analysis_with_cards(owner=None), severity="critical")


class TestCiJobFile:
    def test_the_documented_job__reviews_uploads_always_and_gates_on_high(self):
        job = yaml.safe_load((ROOT / "docs" / "ci" / "eidolon-review.yml").read_text())
        steps = job["jobs"]["review"]["steps"]
        checkout = next(step for step in steps if step.get("uses", "").startswith("actions/che"))
        assert checkout["with"]["fetch-depth"] == 0
        python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-p"))
        assert python["with"]["python-version"] == "3.11"
        commands = " ".join(step.get("run", "") for step in steps)
        assert "pip install -r requirements.txt" in commands
        assert "python manage.py migrate" in commands
        review = next(step for step in steps if "--fail-on" in step.get("run", ""))
        assert review["run"].split() == [
            "python", "manage.py", "analyze", ".", "--diff", "origin/${{", "github.base_ref", "}}",
            "--format", "sarif", "--output", "eidolon.sarif", "--fail-on", "high",
        ]  # fmt: skip
        assert review["env"]["ANTHROPIC_API_KEY"] == "${{ secrets.ANTHROPIC_API_KEY }}"
        upload = next(step for step in steps if "upload-sarif" in step.get("uses", ""))
        assert upload["if"].startswith("always()")
        assert upload["with"]["sarif_file"] == "eidolon.sarif"
        assert job["permissions"]["security-events"] == "write"
